"""VOC-style XML with your own class names: LabelImg folders and CVAT exports, classes declared or discovered."""

from __future__ import annotations

import numpy as np
import pytest
from data_writers import image_array, read_skipped, voc_xml, write_image

from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.voc import VOCSource

SAMPLES = {  # image id -> (width, height, objects); the label is the largest box's class
    "img1": (40, 30, [("apple", (5, 4, 12, 20)), ("pear", (15, 6, 38, 28))]),
    "img2": (32, 32, [("apple", (1, 1, 32, 32))]),
    "img3": (48, 24, [("banana", (10, 5, 30, 20))]),
    "img4": (36, 36, [("pear", (6, 6, 20, 30))]),
}


def write_labelimg(folder, samples=SAMPLES):
    """LabelImg's layout: photo.jpg beside photo.xml, <filename> naming the image."""
    for seed, (image_id, (width, height, objects)) in enumerate(samples.items()):
        write_image(folder / f"{image_id}.jpg", image_array(height, width, seed), quality=95)
        (folder / f"{image_id}.xml").write_text(voc_xml(image_id, width, height, objects))
    return folder


def write_cvat(root, samples=SAMPLES):
    """CVAT's Pascal VOC export: Annotations/*.xml and JPEGImages/*.jpg."""
    for seed, (image_id, (width, height, objects)) in enumerate(samples.items()):
        write_image(root / "JPEGImages" / f"{image_id}.jpg", image_array(height, width, seed), quality=95)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, width, height, objects))
    return root


@pytest.mark.parametrize("layout", [write_labelimg, write_cvat], ids=["labelimg", "cvat"])
def test_classes_discovered_from_the_annotations(tmp_path, prepare, layout):
    root = layout(tmp_path / "boxes")
    prepared, meta = prepare(VOCSource(str(root), subset="folder", classes="auto"))
    assert meta["classes"] == ["apple", "banana", "pear"]
    assert [meta["classes"][i] for i in prepared.labels] == ["pear", "apple", "banana", "pear"]
    assert meta["has_boxes"] and not meta["has_masks"]
    np.testing.assert_allclose(prepared.boxes[0], [14 / 40, 5 / 30, 38 / 40, 28 / 30], atol=1e-6)


def test_declared_classes_set_the_label_order(tmp_path, prepare):
    root = write_labelimg(tmp_path / "boxes")
    prepared, meta = prepare(VOCSource(str(root), subset="folder", classes=["pear", "apple", "banana"]))
    assert meta["classes"] == ["pear", "apple", "banana"]
    assert prepared.labels.tolist() == [0, 1, 2, 0]


def test_undeclared_class_is_a_bad_sample_under_the_policy(tmp_path, prepare):
    root = write_labelimg(tmp_path / "boxes")
    source = lambda: VOCSource(str(root), subset="folder", classes=["apple", "pear"])  # noqa: E731  no banana
    with pytest.raises(BadSampleError, match=r"img3.xml: object 1 has class 'banana', not in the declared classes"):
        prepare(source())
    prepared, meta = prepare(source(), on_bad_sample="skip")
    assert meta["num_samples"] == 3 and meta["num_skipped"] == 1
    ((name, reason),) = read_skipped(tmp_path / "prepared")
    assert name.endswith("img3.xml") and "banana" in reason


def test_missing_image_is_a_bad_sample_naming_the_xml(tmp_path, prepare):
    root = write_labelimg(tmp_path / "boxes")
    (root / "img2.jpg").unlink()
    with pytest.raises(BadSampleError, match=r"img2.xml: its image img2.jpg is in none of"):
        prepare(VOCSource(str(root), subset="folder", classes="auto"))


def test_pascal_classes_stay_the_default(tmp_path):
    assert VOCSource(str(tmp_path)).classes[:3] == ["aeroplane", "bicycle", "bird"]
    with pytest.raises(ValueError, match="data.source.classes='some'"):
        VOCSource(str(tmp_path), classes="some")


def test_voc_custom_config_composes_with_declared_classes(tmp_path, compose_config):
    cfg = compose_config("data=voc_custom", f"data.root={tmp_path}", "data.source.classes=[apple,pear,banana]")
    assert cfg.data.source.subset == "folder" and list(cfg.data.source.classes) == ["apple", "pear", "banana"]
