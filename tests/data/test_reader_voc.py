"""Pascal VOC 2012: XML boxes (1-based) of the largest object, palette masks as class ids, image lists."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from data_writers import read_skipped, voc_xml, write_palette_png, write_voc, write_voc_sample
from PIL import Image

from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.voc import VOC_CLASSES, VOCSource

TRAIN = {
    "2008_000001": (40, 30, [("person", (5, 4, 12, 20)), ("dog", (15, 6, 38, 28))]),  # dog is larger
    "2008_000002": (32, 32, [("cat", (1, 1, 32, 32))]),  # the whole image
    "2008_000003": (48, 24, [("car", (10, 5, 30, 20))]),
}
VAL = {"2008_000004": (36, 36, [("bird", (6, 6, 20, 30))])}


def voc_root(tmp_path, subset_folder="Segmentation"):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    write_voc(root, TRAIN, VAL, subset_folder)
    return root


def test_segmentation_subset_reads_largest_box_and_mask_ids(tmp_path, prepare):
    root = voc_root(tmp_path)
    prepared, meta = prepare(VOCSource(str(tmp_path / "VOCdevkit")), image_size=16, val_fraction=0.0, test_fraction=0.0)
    assert meta["has_boxes"] and meta["has_masks"]
    assert meta["mask_classes"] == ["background", *VOC_CLASSES]
    assert [meta["classes"][i] for i in prepared.labels] == ["dog", "cat", "car", "bird"]
    # the dog's VOC box xmin=15..xmax=38 (1-based, inclusive) is pixels 14..37: edges 14 and 38 of 40
    np.testing.assert_allclose(prepared.boxes[0], [14 / 40, 5 / 30, 38 / 40, 28 / 30], atol=1e-6)
    np.testing.assert_allclose(prepared.boxes[1], [0, 0, 1, 1], atol=1e-6)
    np.testing.assert_allclose(prepared.boxes[0] * 16, [5.6, 2.6667, 15.2, 14.9333], atol=1e-3)  # after resize
    for position, image_id in enumerate([*TRAIN, *VAL]):
        written = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
        expected = cv2.resize(written, (16, 16), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(prepared.masks[position], expected)
    ids = set(np.unique(prepared.masks).tolist())
    assert {VOC_CLASSES.index("dog") + 1, 255} <= ids and ids <= {
        0,
        255,
        *(VOC_CLASSES.index(c) + 1 for c in ("person", "dog", "cat", "car", "bird")),
    }


def test_official_val_is_val_and_test_is_carved_from_train(tmp_path, prepare):
    voc_root(tmp_path)
    prepared, meta = prepare(VOCSource(str(tmp_path / "VOCdevkit" / "VOC2012")), val_fraction=0.1, test_fraction=0.3)
    assert prepared.splits["val"].tolist() == [3]
    assert meta["split_sizes"] == {"train": 2, "val": 1, "test": 1}


def test_detection_subset_reads_main_lists_without_masks(tmp_path, prepare):
    voc_root(tmp_path, subset_folder="Main")
    prepared, meta = prepare(VOCSource(str(tmp_path / "VOCdevkit"), subset="detection"))
    assert meta["has_boxes"] and not meta["has_masks"] and prepared.masks is None
    assert meta["num_samples"] == 4


def test_unknown_subset_is_refused():
    with pytest.raises(ValueError, match="data.source.subset='instances' is not valid"):
        VOCSource("/x", subset="instances")


def break_mask_size(root):
    write_palette_png(root / "SegmentationClass" / "2008_000002.png", np.zeros((10, 10), np.uint8))
    return root / "SegmentationClass" / "2008_000002.png", "mask is 10x10 but its image is 32x32"


def break_mask_ids(root):
    mask = np.zeros((32, 32), np.uint8)
    mask[3:9, 3:9] = 30
    write_palette_png(root / "SegmentationClass" / "2008_000002.png", mask)
    return root / "SegmentationClass" / "2008_000002.png", "mask has class ids [30] outside the declared 0..20"


def break_box_outside(root):
    (root / "Annotations" / "2008_000002.xml").write_text(voc_xml("2008_000002", 32, 32, [("cat", (1, 1, 40, 32))]))
    return root / "Annotations" / "2008_000002.xml", "is outside the 32x32 image"


def break_box_inverted(root):
    (root / "Annotations" / "2008_000002.xml").write_text(voc_xml("2008_000002", 32, 32, [("cat", (20, 1, 10, 32))]))
    return root / "Annotations" / "2008_000002.xml", "is empty or inverted"


def break_label(root):
    (root / "Annotations" / "2008_000002.xml").write_text(voc_xml("2008_000002", 32, 32, [("unicorn", (1, 1, 10, 10))]))
    return root / "Annotations" / "2008_000002.xml", "has class 'unicorn', not in the declared classes"


def break_xml(root):
    (root / "Annotations" / "2008_000002.xml").write_text("<annotation><object>")
    return root / "Annotations" / "2008_000002.xml", "not a valid annotation XML"


def break_image(root):
    (root / "JPEGImages" / "2008_000002.jpg").write_bytes(b"GIF87a-broken")
    return root / "JPEGImages" / "2008_000002.jpg", "cannot be decoded"


@pytest.mark.parametrize(
    "make_bad",
    [break_mask_size, break_mask_ids, break_box_outside, break_box_inverted, break_label, break_xml, break_image],
    ids=lambda f: f.__name__,
)
def test_bad_sample_names_its_file_and_follows_the_policy(tmp_path, prepare, make_bad):
    root = voc_root(tmp_path)
    path, problem = make_bad(root)
    with pytest.raises(BadSampleError) as err:
        prepare(VOCSource(str(root)))
    assert str(path) in str(err.value) and problem in str(err.value)
    prepared, meta = prepare(VOCSource(str(root)), on_bad_sample="skip")
    assert meta["num_samples"] == 3 and meta["num_skipped"] == 1
    ((name, reason),) = read_skipped(tmp_path / "prepared")
    assert name == str(root / "JPEGImages" / "2008_000002.jpg") and str(path) in reason and problem in reason


def test_missing_split_file(tmp_path, prepare):
    root = voc_root(tmp_path)
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(BadSampleError, match=r"Segmentation/val\.txt: missing split file"):
        prepare(VOCSource(str(root)))
    _, meta = prepare(VOCSource(str(root)), on_bad_sample="skip")
    assert meta["num_samples"] == 3 and meta["skipped"] == [str(root / "ImageSets" / "Segmentation" / "val.txt")]


def test_zero_based_border_coordinates_are_snapped_not_failed(tmp_path, prepare):
    root = voc_root(tmp_path)
    (root / "Annotations" / "2008_000002.xml").write_text(voc_xml("2008_000002", 32, 32, [("cat", (0, 0, 33, 16))]))
    prepared, meta = prepare(VOCSource(str(root)))
    assert meta["num_skipped"] == 0
    np.testing.assert_allclose(prepared.boxes[1], [0, 0, 1, 0.5], atol=1e-6)


def test_root_without_jpegimages_says_where_to_point(tmp_path):
    (tmp_path / "VOC").mkdir()
    with pytest.raises(FileNotFoundError, match="point data.root at the VOC2012 folder"):
        VOCSource(str(tmp_path / "VOC")).items()


def test_sample_without_the_mask_file(tmp_path, prepare):
    root = voc_root(tmp_path)
    write_voc_sample(root, "2008_000009", 20, 20, [("cow", (2, 2, 10, 10))])
    (root / "SegmentationClass" / "2008_000009.png").unlink()
    with open(root / "ImageSets" / "Segmentation" / "train.txt", "a") as handle:
        handle.write("2008_000009\n")
    with pytest.raises(BadSampleError, match=r"SegmentationClass/2008_000009\.png: file not found"):
        prepare(VOCSource(str(root)))
