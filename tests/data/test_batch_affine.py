"""BatchAffine is albumentations' Affine for a batch: the same warp for the same parameters."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from cnnlab.data.augment import BatchAffine, build_augmentation, build_transform

FIXED = dict(scale=(1.1, 1.1), translate_percent=(0.0625, 0.0625), rotate=(12.0, 12.0), shear=(5.0, 5.0))


def scene(n: int = 4, size: int = 32, channels: int = 1):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, 8:20, 10:24] = 1
    boxes = np.tile(np.array([[10, 8, 24, 20]], np.float32) / size, (n, 1))
    return images, masks, boxes


@pytest.mark.parametrize("channels", [1, 3])
def test_same_parameters_give_albumentations_affine_output(channels):
    images, masks, boxes = scene(channels=channels)
    reference = A.Compose(
        [A.Affine(**FIXED, p=1.0)], bbox_params=A.BboxParams(format="albumentations", label_fields=["labels"])
    )
    ours_images, ours_masks, ours_boxes = BatchAffine(**FIXED, p=1.0)(images, masks, boxes)
    for i in range(len(images)):
        ref = reference(image=images[i], mask=masks[i], bboxes=boxes[i : i + 1], labels=[0])
        image = ref["image"].reshape(ours_images[i].shape)
        assert np.abs(image.astype(int) - ours_images[i].astype(int)).max() <= 1
        assert (ref["mask"] != ours_masks[i]).mean() < 0.01
        np.testing.assert_allclose(np.asarray(ref["bboxes"][0]), ours_boxes[i], atol=1e-4)
    assert not np.array_equal(ours_images, images)  # it did transform


def test_draws_are_per_sample_and_seeded():
    images, masks, boxes = scene(n=64)
    affine = BatchAffine(scale=(0.9, 1.1), translate_percent=(-0.08, 0.08), rotate=(-10, 10), shear=(-8, 8), p=0.9)
    affine.set_random_seed(3)
    first = affine(images, masks, boxes)
    affine.set_random_seed(3)
    again = affine(images, masks, boxes)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    unchanged = [np.array_equal(a, b) for a, b in zip(first[0], images)]
    assert 1 <= sum(unchanged) <= 16  # p=0.9 of 64: about 6 left as they were, not all, not none
    assert len({tuple(np.round(box, 4)) for box in first[2]}) > 40  # each sample its own geometry


def test_a_box_pushed_out_of_view_keeps_its_sample_unaugmented():
    images, masks, boxes = scene(n=8)
    far = BatchAffine(translate_percent=(2.0, 2.0), p=1.0)  # moves everything out of the image
    out_images, out_masks, out_boxes = far(images, masks, boxes)
    np.testing.assert_array_equal(out_boxes, boxes)
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_masks, masks)


def test_mixed_pipeline_runs_in_config_order_and_like_a_compose():
    images, masks, boxes = scene(n=2, channels=3)
    pipeline = build_augmentation(
        [A.HorizontalFlip(p=1.0), BatchAffine(**FIXED, p=1.0), A.InvertImg(p=1.0)], with_boxes=True
    )
    out = pipeline(image=images[0], mask=masks[0], bboxes=boxes[:1], box_labels=[0])
    flipped = A.HorizontalFlip(p=1.0)(image=images[0])["image"]
    expected, _, _ = BatchAffine(**FIXED, p=1.0)(flipped[None])
    np.testing.assert_array_equal(out["image"], 255 - expected[0])
    tensor = build_transform([BatchAffine(**FIXED, p=1.0)], mean=[0.5] * 3, std=[0.25] * 3)(image=images[0])["image"]
    assert tuple(tensor.shape) == (3, 32, 32)


@pytest.mark.parametrize("bad", [{"rotate": "ten"}, {"scale": [1, 2, 3]}, {"p": 1.5}, {"border_mode": 4}])
def test_bad_parameters_name_the_key(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        BatchAffine(**bad)
