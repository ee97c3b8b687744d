"""The batch versions of HorizontalFlip, ColorJitter, GaussianBlur and CoarseDropout (augment=strong):
albumentations' output for the same parameters, drawn per sample and seeded."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
from albumentations.augmentations.pixel import functional as fpixel
from tests.data.test_batch_affine import scene

from cnnlab.data.augment import BatchCoarseDropout, BatchColorJitter, BatchGaussianBlur, BatchHorizontalFlip


def test_horizontal_flip_mirrors_images_masks_and_boxes_like_albumentations():
    images, masks, boxes = scene(channels=3)
    out_images, out_masks, out_boxes = BatchHorizontalFlip(p=1.0)(images, masks, boxes)
    reference = A.Compose(
        [A.HorizontalFlip(p=1.0)], bbox_params=A.BboxParams(format="albumentations", label_fields=["labels"])
    )
    for i in range(len(images)):
        ref = reference(image=images[i], mask=masks[i], bboxes=boxes[i : i + 1], labels=[0])
        np.testing.assert_array_equal(ref["image"], out_images[i])
        np.testing.assert_array_equal(ref["mask"], out_masks[i])
        np.testing.assert_allclose(np.asarray(ref["bboxes"][0]), out_boxes[i], atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation", "hue"])
def test_each_colour_step_gives_albumentations_output_within_one_grey_level(op, channels):
    images, _, _ = scene(n=6, channels=channels)
    factor = 0.1 if op == "hue" else 1.35
    still = {"brightness": (1.0, 1.0), "contrast": (1.0, 1.0), "saturation": (1.0, 1.0), "hue": (0.0, 0.0)}
    jitter = BatchColorJitter(**{**still, op: (factor, factor)}, p=1.0)
    out, _, _ = jitter(images)
    function = getattr(fpixel, f"adjust_{op}_torchvision")
    for i in range(len(images)):
        expected = function(images[i], factor).reshape(images[i].shape)
        assert np.abs(expected.astype(int) - out[i].astype(int)).max() <= 1, op
    if channels == 1 and op in ("saturation", "hue"):
        np.testing.assert_array_equal(out, images)  # no colour to change, as in albumentations
    else:
        assert not np.array_equal(out, images)


def test_colour_factors_and_orders_are_drawn_per_sample_and_seeded():
    images, _, _ = scene(n=64, channels=3)
    jitter = BatchColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p=0.8)
    jitter.set_random_seed(5)
    first, _, _ = jitter(images)
    jitter.set_random_seed(5)
    np.testing.assert_array_equal(first, jitter(images)[0])
    unchanged = sum(np.array_equal(a, b) for a, b in zip(first, images))
    assert 4 <= unchanged <= 24  # p=0.8 of 64
    means = first.reshape(64, -1).mean(1) / images.reshape(64, -1).mean(1)
    assert means.std() > 0.05  # each its own brightness


def test_gaussian_blur_is_cv2s_for_the_drawn_sigma_and_size():
    images, _, _ = scene(n=8, channels=3)
    blur = BatchGaussianBlur(blur_limit=(5, 5), sigma_limit=(1.2, 1.2), p=1.0)
    out, _, _ = blur(images)
    for i in range(len(images)):
        np.testing.assert_array_equal(out[i], cv2.GaussianBlur(images[i], (5, 5), 1.2))
    reference = A.GaussianBlur(blur_limit=(5, 5), sigma_limit=(1.2, 1.2), p=1.0)(image=images[0])["image"]
    assert np.abs(reference.astype(int) - out[0].astype(int)).max() <= 1


def test_coarse_dropout_cuts_the_drawn_number_and_size_of_holes():
    images = np.full((200, 40, 40, 1), 200, np.uint8)
    masks = np.ones((200, 40, 40), np.uint8)
    drop = BatchCoarseDropout(
        num_holes_range=(1, 3),
        hole_height_range=(0.1, 0.25),
        hole_width_range=(0.1, 0.25),
        fill=0,
        fill_mask=255,
        p=0.5,
    )
    drop.set_random_seed(0)
    out, out_masks, _ = drop(images, masks)
    holes = out[..., 0] == 0
    np.testing.assert_array_equal(holes, out_masks == 255)  # masks lose the same pixels
    dropped = holes.any((1, 2))
    assert 70 <= dropped.sum() <= 130  # p=0.5 of 200
    area = holes.reshape(200, -1).mean(1)[dropped]
    # one hole of 4x4 px (1%) up to three of 10x10 px (19%)
    assert area.min() >= 16 / 1600 - 1e-9 and area.max() <= 3 * 100 / 1600 + 1e-9
    assert (out[~holes] == 200).all()
    pixels = BatchCoarseDropout(num_holes_range=(2, 2), hole_height_range=(3, 3), hole_width_range=(5, 5), p=1.0)(
        images[:1]
    )[0]
    assert 15 < (pixels == 0).sum() <= 30  # two 3x5 holes, possibly overlapping


@pytest.mark.parametrize(
    "make",
    [
        lambda: BatchColorJitter(brightness=-1),
        lambda: BatchCoarseDropout(num_holes_range=(0, 2)),
        lambda: BatchGaussianBlur(sigma_limit="big"),
        lambda: BatchHorizontalFlip(p=2),
    ],
)
def test_bad_parameters_say_which(make):
    with pytest.raises(ValueError, match=r"Batch\w+: (brightness|num_holes_range|sigma_limit|p)="):
        make()


def test_one_number_means_what_it_means_for_each_parameter():
    assert BatchCoarseDropout(num_holes_range=2, hole_height_range=0.2, hole_width_range=3).holes == (
        2,
        2,
    )  # a count: exactly 2
    assert BatchGaussianBlur(blur_limit=5).sizes == [1, 3, 5]  # a kernel size: up to 5
    assert BatchColorJitter(hue=0.1).ranges[3] == (-0.1, 0.1)  # a shift: either way
    images, _, _ = scene(n=8, channels=3)
    out, _, _ = BatchGaussianBlur(blur_limit=5, sigma_limit=1.0, p=1.0)(images)
    assert out.shape == images.shape
