"""ImageFolder: classes from folders, optional split folders, and every bad input named and policed."""

from __future__ import annotations

import numpy as np
import pytest
from data_writers import encoded, image_array, read_skipped, write_image
from PIL import Image

from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.image_folder import ImageFolderSource

COLOURS = {"cat": (200, 30, 30), "dog": (30, 30, 200)}


def solid(colour, height=20, width=24) -> np.ndarray:
    return np.full((height, width, 3), colour, np.uint8)


def write_folder(root, per_class=3, splits=(None,)):
    for split in splits:
        base = root / split if split else root
        for name, colour in COLOURS.items():
            for i in range(per_class):
                write_image(base / name / f"{name}.{i}.png", solid(colour))
    return root


def test_classes_are_sorted_folder_names_and_pixels_survive(tmp_path, prepare):
    prepared, meta = prepare(ImageFolderSource(write_folder(tmp_path / "pets")))
    assert meta["classes"] == ["cat", "dog"]
    assert meta["num_samples"] == 6 and meta["num_skipped"] == 0
    assert prepared.images.shape == (6, 16, 16, 3)
    for image, label in zip(prepared.images, prepared.labels):
        np.testing.assert_array_equal(image[8, 8], COLOURS[meta["classes"][label]])


def test_split_folders_give_the_split(tmp_path, prepare):
    root = write_folder(tmp_path / "pets", per_class=2, splits=("train", "val", "test"))
    prepared, meta = prepare(ImageFolderSource(root), val_fraction=0.5, test_fraction=0.5)
    assert meta["split_sizes"] == {"train": 4, "val": 4, "test": 4}  # the folders', not the fractions'


def test_declared_classes_fix_the_order(tmp_path, prepare):
    _, meta = prepare(ImageFolderSource(write_folder(tmp_path / "pets"), classes=["dog", "cat"]))
    assert meta["classes"] == ["dog", "cat"]


def test_gray_rgba_16bit_and_cmyk_files_are_converted(tmp_path, prepare):
    root = write_folder(tmp_path / "pets", per_class=1)
    write_image(root / "cat" / "gray.png", image_array(20, 20, channels=1))
    write_image(root / "cat" / "rgba.png", solid(COLOURS["cat"]), mode="RGBA")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(root / "dog" / "deep.png")
    write_image(root / "dog" / "cmyk.jpg", solid(COLOURS["dog"]), mode="CMYK")
    prepared, meta = prepare(ImageFolderSource(root))
    assert meta["num_samples"] == 6 and meta["num_skipped"] == 0
    grays, _ = prepare(ImageFolderSource(root), directory=tmp_path / "gray", channels=1)
    assert grays.images.shape == (6, 16, 16, 1)


# Each bad input: how to make it, which file the message names, and the problem it states.
def corrupt(root):
    path = root / "cat" / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9")
    return [path], "cannot be decoded"


def truncated(root):
    path = root / "dog" / "cut.jpg"
    path.write_bytes(encoded(image_array(60, 60), "JPEG")[:400])
    return [path], "truncated JPEG"


def not_an_image(root):
    path = root / "cat" / "notes.txt"
    path.write_text("these are my cat pictures\n")
    return [path], "not an image file"


def empty_class(root):
    (root / "bird").mkdir()
    return [root / "bird"], "empty class folder"


def duplicate_across_classes(root):
    data = encoded(solid((90, 90, 90)), "PNG")
    paths = [root / "cat" / "same.png", root / "dog" / "same.png"]
    for path in paths:
        path.write_bytes(data)
    return paths, "duplicate file name with identical content in another class"


BAD_INPUTS = [corrupt, truncated, not_an_image, empty_class, duplicate_across_classes]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_stops_prepare_with_its_file_and_problem(tmp_path, prepare, make_bad):
    root = write_folder(tmp_path / "pets")
    paths, problem = make_bad(root)
    with pytest.raises(BadSampleError) as err:
        prepare(ImageFolderSource(root), on_bad_sample="error")
    message = str(err.value)
    assert any(str(p) in message for p in paths) and problem in message
    assert "data.on_bad_sample=error" in message
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_is_skipped_listed_and_counted(tmp_path, prepare, make_bad, caplog):
    root = write_folder(tmp_path / "pets")
    paths, problem = make_bad(root)
    prepared, meta = prepare(ImageFolderSource(root), on_bad_sample="skip")
    skipped = read_skipped(tmp_path / "prepared")
    assert sorted(name for name, _ in skipped) == sorted(str(p) for p in paths)
    assert all(problem in reason for _, reason in skipped)
    assert meta["num_skipped"] == len(paths) and meta["skipped"] == [name for name, _ in skipped]
    # every good image is kept (the duplicate pair is not "good": its label is ambiguous)
    assert meta["num_samples"] == 6 and len(prepared.labels) == 6
    assert any("skipping" in r.message and problem in r.message for r in caplog.records)


def test_a_folder_not_in_the_declared_classes_is_a_bad_label(tmp_path, prepare):
    root = write_folder(tmp_path / "pets")
    write_image(root / "fox" / "fox.0.png", solid((200, 120, 0)))
    with pytest.raises(BadSampleError, match=r"fox\.0\.png: class folder 'fox' is not in the declared classes"):
        prepare(ImageFolderSource(root, classes=["cat", "dog"]))
    _, meta = prepare(ImageFolderSource(root, classes=["cat", "dog"]), on_bad_sample="skip")
    assert meta["num_samples"] == 6 and meta["skipped"] == [str(root / "fox" / "fox.0.png")]


def test_same_name_different_content_in_two_classes_is_fine(tmp_path, prepare):
    root = write_folder(tmp_path / "pets")  # cat.0.png exists under cat/; give dog/ a different cat.0.png
    write_image(root / "dog" / "cat.0.png", solid((10, 10, 90)))
    _, meta = prepare(ImageFolderSource(root))
    assert meta["num_samples"] == 7 and meta["num_skipped"] == 0


def test_hidden_and_system_files_are_not_samples(tmp_path, prepare):
    root = write_folder(tmp_path / "pets")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "dog" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    _, meta = prepare(ImageFolderSource(root))
    assert meta["num_samples"] == 6 and meta["num_skipped"] == 0


def test_missing_root_names_data_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.root=.*nowhere does not exist"):
        ImageFolderSource(str(tmp_path / "nowhere")).items()
    with pytest.raises(FileNotFoundError, match="data.root is not set"):
        ImageFolderSource(None).items()
