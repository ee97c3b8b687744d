"""CSV manifest: paths relative to the CSV, labels, pixel boxes, mask files, optional split column."""

from __future__ import annotations

import numpy as np
import pytest
from data_writers import image_array, read_skipped, write_image

from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.manifest import ManifestSource


def write_manifest(root, rows, header="path,label,x_min,y_min,x_max,y_max,mask_path,split"):
    """rows: (name, label, box, mask ids, split); images 40 wide x 20 high, masks paint the box."""
    lines = [header] if header else []
    for seed, (name, label, box, mask_id, split) in enumerate(rows):
        write_image(root / "images" / f"{name}.png", image_array(20, 40, seed))
        mask = np.zeros((20, 40), np.uint8)
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = mask_id
        write_image(root / "masks" / f"{name}.png", mask)
        lines.append(f"images/{name}.png,{label},{x0},{y0},{x1},{y1},masks/{name}.png,{split}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


ROWS = [
    ("a", "ship", (4, 2, 20, 18), 2, "train"),
    ("b", "car", (0, 0, 40, 20), 1, "train"),
    ("c", "ship", (30, 5, 38, 15), 2, "test"),
    ("d", "car", (10, 10, 12, 12), 1, "val"),
]


def test_columns_read_as_written(tmp_path, prepare):
    csv_path = write_manifest(tmp_path / "set", ROWS)
    prepared, meta = prepare(ManifestSource(str(csv_path)), image_size=16)
    assert meta["classes"] == ["car", "ship"] and meta["mask_classes"] == ["background", "car", "ship"]
    assert prepared.labels.tolist() == [1, 0, 1, 0]
    assert meta["split_sizes"] == {"train": 2, "val": 1, "test": 1} and prepared.splits["test"].tolist() == [2]
    np.testing.assert_allclose(prepared.boxes[0], [4 / 40, 2 / 20, 20 / 40, 18 / 20], atol=1e-6)
    np.testing.assert_allclose(prepared.boxes[2] * 16, [12, 4, 15.2, 12], atol=1e-5)  # after the resize to 16
    assert set(np.unique(prepared.masks[0]).tolist()) == {0, 2} and (prepared.masks[1] == 1).all()


def test_the_columns_decide_the_label_kinds_once_read(tmp_path):
    source = ManifestSource(str(write_manifest(tmp_path / "set", ROWS)))
    assert source.label_kinds() is None  # unknown before the CSV is read: training checks the prepared data
    source.items()
    assert source.label_kinds() == ["label", "box", "mask"]
    (tmp_path / "plain.csv").write_text("set/images/a.png,ship\n")
    plain = ManifestSource(str(tmp_path / "plain.csv"))
    plain.items()
    assert plain.label_kinds() == ["label"]


def test_root_may_be_the_folder_and_no_header_means_positional(tmp_path, prepare):
    root = tmp_path / "set"
    write_image(root / "x.png", image_array(10, 10))
    write_image(root / "y.png", image_array(10, 10, 1))
    (root / "manifest.csv").write_text("x.png,7\ny.png,12\n")
    prepared, meta = prepare(ManifestSource(str(root)))
    assert meta["classes"] == ["7", "12"] and not meta["has_boxes"] and not meta["has_masks"]  # numeric order
    assert prepared.labels.tolist() == [0, 1]


def bad_label(root):
    return (
        ManifestSource(str(write_manifest(root, ROWS)), classes=["car"]),
        "line 2",
        "label 'ship' is not in the class list",
    )


def box_outside(root):
    rows = [*ROWS[:1], ("e", "car", (4, 2, 44, 18), 1, "train"), *ROWS[1:]]
    return ManifestSource(str(write_manifest(root, rows))), "line 3", "is outside the 40x20 image"


def box_inverted(root):
    csv_path = write_manifest(root, ROWS)
    text = csv_path.read_text().replace("images/b.png,car,0,0,40,20", "images/b.png,car,30,0,10,20")
    csv_path.write_text(text)
    return ManifestSource(str(csv_path)), "line 3", "is empty or inverted"


def box_not_numbers(root):
    csv_path = write_manifest(root, ROWS)
    csv_path.write_text(csv_path.read_text().replace("images/b.png,car,0,0,40,20", "images/b.png,car,0,0,forty,20"))
    return ManifestSource(str(csv_path)), "line 3", "is not four numbers"


def mask_size(root):
    csv_path = write_manifest(root, ROWS)
    write_image(root / "masks" / "b.png", np.zeros((5, 5), np.uint8))
    return ManifestSource(str(csv_path)), "masks/b.png", "mask is 5x5 but its image"


def mask_ids(root):
    csv_path = write_manifest(root, ROWS)
    write_image(root / "masks" / "b.png", np.full((20, 40), 9, np.uint8))
    return ManifestSource(str(csv_path)), "masks/b.png", "mask has class ids [9] outside the declared 0..2"


def short_row(root):
    csv_path = write_manifest(root, ROWS)
    csv_path.write_text(csv_path.read_text() + "images/z.png,car\n")
    return ManifestSource(str(csv_path)), "line 6", "2 columns where the manifest has 8"


def missing_image(root):
    csv_path = write_manifest(root, ROWS)
    (root / "images" / "b.png").unlink()
    return ManifestSource(str(csv_path)), "images/b.png", "file not found"


@pytest.mark.parametrize(
    "make_bad",
    [bad_label, box_outside, box_inverted, box_not_numbers, mask_size, mask_ids, short_row, missing_image],
    ids=lambda f: f.__name__,
)
def test_bad_rows_are_named_and_follow_the_policy(tmp_path, prepare, make_bad):
    source, where, problem = make_bad(tmp_path / "set")
    with pytest.raises(BadSampleError) as err:
        prepare(source)
    assert where in str(err.value) and problem in str(err.value)
    source, _, _ = make_bad(tmp_path / "again")
    prepared, meta = prepare(source, on_bad_sample="skip")
    skipped = read_skipped(tmp_path / "prepared")
    assert meta["num_skipped"] == len(skipped) >= 1
    assert all(problem in reason for _, reason in skipped)
    assert meta["num_samples"] == 4 - (2 if make_bad is bad_label else 1) + (
        1 if make_bad in (box_outside, short_row) else 0
    )
