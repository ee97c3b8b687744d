"""Oxford-IIIT Pet: breeds or species from list.txt, trimaps as masks, head boxes, split files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from data_writers import read_skipped, write_image, write_pet, write_pet_lists
from PIL import Image

from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.oxford_pets import BREEDS, OxfordPetsSource

PETS = [  # name, CLASS-ID, SPECIES, BREED ID, (width, height), head box (VOC, 1-based) or None
    ("Abyssinian_1", 1, 1, 1, (40, 30), (5, 4, 20, 16)),
    ("beagle_7", 5, 2, 3, (30, 40), (10, 2, 25, 14)),
    ("Persian_3", 24, 1, 9, (32, 32), (1, 1, 16, 16)),
    ("yorkshire_terrier_9", 37, 2, 25, (36, 28), None),
    ("Bengal_2", 6, 1, 2, (28, 28), None),
]
TRAINVAL, TEST = ["Abyssinian_1", "beagle_7", "Persian_3"], ["yorkshire_terrier_9", "Bengal_2"]


@pytest.fixture
def pets_root(tmp_path):
    root = tmp_path / "oxford-iiit-pet"
    for seed, (name, class_id, species, _, (width, height), head) in enumerate(PETS):
        write_pet(root, name, class_id, species, width, height, head, seed=seed)
    write_pet_lists(root, [p[:4] for p in PETS], TRAINVAL, TEST)
    return root


def trimap(root, name: str) -> np.ndarray:
    return np.asarray(Image.open(root / "annotations" / "trimaps" / f"{name}.png"))


def expected_mask(trimap: np.ndarray, pet_id: int, size: int) -> np.ndarray:
    mapped = np.select([trimap == 1, trimap == 2, trimap == 3], [pet_id, 0, 255]).astype(np.uint8)
    return cv2.resize(mapped, (size, size), interpolation=cv2.INTER_NEAREST)


def test_breeds_trimaps_and_split_files(tmp_path, prepare, pets_root):
    prepared, meta = prepare(OxfordPetsSource(str(pets_root)), image_size=16, val_fraction=0.0)
    assert meta["classes"] == BREEDS and len(BREEDS) == 37
    assert meta["mask_classes"] == ["background", "pet"]
    assert [meta["classes"][i] for i in prepared.labels] == [
        "Abyssinian",
        "beagle",
        "Persian",
        "yorkshire_terrier",
        "Bengal",
    ]
    assert prepared.splits["test"].tolist() == [3, 4] and prepared.splits["train"].tolist() == [0, 1, 2]
    for position, (name, *_rest) in enumerate(PETS):
        np.testing.assert_array_equal(prepared.masks[position], expected_mask(trimap(pets_root, name), 1, 16))
    assert set(np.unique(prepared.masks).tolist()) == {0, 1, 255}


def test_species_labels_and_label_mask_ids(tmp_path, prepare, pets_root):
    prepared, meta = prepare(OxfordPetsSource(str(pets_root), labels="species", mask_labels="label"), image_size=16)
    assert meta["classes"] == ["cat", "dog"] and meta["mask_classes"] == ["background", "cat", "dog"]
    assert prepared.labels.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(prepared.masks[1], expected_mask(trimap(pets_root, "beagle_7"), 2, 16))  # dog = 2


def test_head_boxes_subset_reads_only_images_with_an_xml(tmp_path, prepare, pets_root):
    prepared, meta = prepare(OxfordPetsSource(str(pets_root), subset="head_boxes"), image_size=16)
    assert meta["has_boxes"] and meta["num_samples"] == 3 and meta["num_skipped"] == 0
    # Abyssinian_1: VOC head box 5..20 x 4..16 in a 40x30 image -> edges 4..20, 3..16
    np.testing.assert_allclose(prepared.boxes[0], [4 / 40, 3 / 30, 20 / 40, 16 / 30], atol=1e-6)
    np.testing.assert_allclose(prepared.boxes[2], [0, 0, 0.5, 0.5], atol=1e-6)


def test_trimap_with_unknown_values(tmp_path, prepare, pets_root):
    path = write_image(pets_root / "annotations" / "trimaps" / "beagle_7.png", np.full((40, 30), 7, np.uint8))
    with pytest.raises(BadSampleError, match=r"trimaps/beagle_7\.png: trimap has values \[7\]; expected 1 = pet"):
        prepare(OxfordPetsSource(str(pets_root)))
    _, meta = prepare(OxfordPetsSource(str(pets_root)), on_bad_sample="skip")
    assert meta["num_samples"] == 4 and meta["num_skipped"] == 1
    assert str(path) in read_skipped(tmp_path / "prepared")[0][1]


def test_trimap_of_another_size(tmp_path, prepare, pets_root):
    write_image(pets_root / "annotations" / "trimaps" / "Persian_3.png", np.full((10, 12), 2, np.uint8))
    with pytest.raises(BadSampleError, match=r"Persian_3\.png: trimap is 12x10 but its image is 32x32"):
        prepare(OxfordPetsSource(str(pets_root)))


def test_class_id_outside_the_breeds(tmp_path, prepare, pets_root):
    rows = [p[:4] for p in PETS]
    rows[0] = ("Abyssinian_1", 40, 1, 1)
    write_pet_lists(pets_root, rows, TRAINVAL, TEST)
    with pytest.raises(
        BadSampleError, match=r"list\.txt: Abyssinian_1 has breed id 40, not in the 37 declared classes"
    ):
        prepare(OxfordPetsSource(str(pets_root)))


def test_missing_split_file_splits_those_images_by_seed(tmp_path, prepare, pets_root):
    (pets_root / "annotations" / "test.txt").unlink()
    with pytest.raises(BadSampleError, match=r"annotations/test\.txt: missing split file"):
        prepare(OxfordPetsSource(str(pets_root)))
    _, meta = prepare(OxfordPetsSource(str(pets_root)), on_bad_sample="skip", val_fraction=0.0, test_fraction=0.5)
    assert meta["num_samples"] == 5 and meta["skipped"] == [str(pets_root / "annotations" / "test.txt")]
    assert meta["split_sizes"]["train"] == 4 and meta["split_sizes"]["test"] == 1


def test_missing_list_file(tmp_path, pets_root):
    (pets_root / "annotations" / "list.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotations/list\.txt: missing"):
        OxfordPetsSource(str(pets_root)).items()
