"""Every reader that takes a path from a file (a VOC annotation's <filename>, a VOC image list, the
Oxford-IIIT Pet list) holds it to the manifest's rule: a path resolving outside data.root is a bad
sample, never opened."""

from __future__ import annotations

import numpy as np

from cnnlab.data.sources.oxford_pets import OxfordPetsSource
from cnnlab.data.sources.voc import VOCSource
from tests.data.data_writers import (
    image_array,
    voc_xml,
    write_image,
    write_palette_png,
    write_pet,
    write_pet_lists,
    write_voc,
)
from tests.hardening.preparing import prepare_skipping

SECRET = 7  # the outside image's pixel value: it must not reach images.npy


def _secret(path):
    write_image(path, np.full((30, 40, 3), SECRET, np.uint8))
    return path


def test_voc_filenames_outside_the_root_are_refused(tmp_path):
    root = tmp_path / "boxes"
    outside = _secret(tmp_path / "X.jpg")
    for seed, name in enumerate(["a", "b"]):
        write_image(root / f"{name}.jpg", image_array(30, 40, seed + 1), quality=95)
        (root / f"{name}.xml").write_text(voc_xml(name, 40, 30, [("apple", (2, 2, 20, 20))]))
    box = [("apple", (2, 2, 20, 20))]
    (root / "deep").mkdir()
    (root / "deep" / "up.xml").write_text(voc_xml("../../X", 40, 30, box))  # <filename>../../X.jpg</filename>
    (root / "absolute.xml").write_text(voc_xml(str(outside.with_suffix("")), 40, 30, box))  # /tmp/.../X.jpg
    (root / "link.jpg").symlink_to(outside)
    (root / "link.xml").write_text(voc_xml("link", 40, 30, box))

    meta, images, skipped = prepare_skipping(VOCSource(str(root), subset="folder", classes="auto"), tmp_path)

    assert meta["num_samples"] == 2 and meta["num_skipped"] == 3, skipped
    assert skipped.count("resolves outside data.root") == 3
    assert not (images == SECRET).all(axis=(1, 2, 3)).any()


def test_voc_image_list_ids_outside_the_root_are_refused(tmp_path):
    root = tmp_path / "VOC2012"
    objects = [("cat", (2, 2, 20, 20))]
    write_voc(root, {"a": (40, 30, objects), "b": (40, 30, objects)}, {"c": (40, 30, objects)})
    _secret(tmp_path / "outside" / "evil.jpg")  # VOC2012/JPEGImages/../../outside/evil.jpg, its XML and mask beside
    (tmp_path / "outside" / "evil.xml").write_text(voc_xml("evil", 40, 30, objects))
    write_palette_png(tmp_path / "outside" / "evil.png", np.zeros((30, 40), np.uint8))
    lists = root / "ImageSets" / "Segmentation" / "train.txt"
    lists.write_text(lists.read_text() + "../../outside/evil\n")

    meta, images, skipped = prepare_skipping(VOCSource(str(root), subset="segmentation"), tmp_path)

    assert meta["num_samples"] == 3 and "resolves outside data.root" in skipped, skipped
    assert not (images == SECRET).all(axis=(1, 2, 3)).any()


def test_pet_list_names_outside_the_root_are_refused(tmp_path):
    root = tmp_path / "pets"
    names = ["Abyssinian_1", "Abyssinian_2", "beagle_1"]
    for seed, name in enumerate(names):
        write_pet(root, name, 1 if name.startswith("Aby") else 2, 1 if name.startswith("Aby") else 2, 40, 30, seed=seed)
    # the name ../../outside/evil: images/../../outside/evil.jpg is outside, its trimap pets/outside/evil.png inside
    trimap = write_pet(tmp_path / "elsewhere", "evil", 1, 1, 40, 30)
    write_image(root / "outside" / "evil.png", trimap)
    _secret(tmp_path / "outside" / "evil.jpg")
    rows = [(n, 1 if n.startswith("Aby") else 2, 1 if n.startswith("Aby") else 2, 1) for n in names]
    rows.append(("../../outside/evil", 1, 1, 1))
    write_pet_lists(root, rows, [r[0] for r in rows], [])

    meta, images, skipped = prepare_skipping(OxfordPetsSource(str(root), labels="species"), tmp_path)

    assert meta["num_samples"] == 3 and "resolves outside data.root" in skipped, skipped
    assert not (images == SECRET).all(axis=(1, 2, 3)).any()
