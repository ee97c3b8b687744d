"""Box-aware augmentation: after flips and shifts the box still encloses the object's mask."""

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from omegaconf import OmegaConf

from cnnlab.data.augment import build_transform
from cnnlab.data.sources.shapes import ShapesSource

SIZE = 64
CONF = Path(__file__).resolve().parents[2] / "conf"


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Pixel-edge box (x_min, y_min, x_max + 1, y_max + 1) of a mask's object pixels."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


def push(transform: A.Compose, sample) -> tuple[np.ndarray, np.ndarray]:
    box = np.array(sample.box, dtype=np.float32) / SIZE  # normalised, as the prepared data stores it
    out = transform(image=sample.image, mask=sample.mask, bboxes=box[None], box_labels=[0])
    assert len(out["bboxes"]) == 1
    return np.asarray(out["bboxes"][0]) * SIZE, np.asarray(out["mask"])


def flip_and_shift(seed: int) -> A.Compose:
    pipeline = [
        A.HorizontalFlip(p=1.0),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.1, 0.1), p=1.0),
    ]
    transform = build_transform(pipeline, mean=[0.5] * 3, std=[0.25] * 3, with_boxes=True)
    transform.set_random_seed(seed)
    return transform


@pytest.mark.parametrize("index", range(12))
def test_flipped_and_shifted_box_is_the_box_of_the_flipped_mask(index):
    sample = ShapesSource(num_samples=12, size=SIZE, seed=3).load(index)
    box, mask = push(flip_and_shift(seed=index), sample)
    assert mask.shape == (SIZE, SIZE) and (mask > 0).sum() > 0
    assert np.abs(box - mask_box(mask)).max() <= 1.0, (box, mask_box(mask))


def test_horizontal_flip_mirrors_the_box_exactly():
    sample = ShapesSource(num_samples=1, size=SIZE, seed=5).load(0)
    transform = build_transform([A.HorizontalFlip(p=1.0)], mean=[0.5] * 3, std=[0.25] * 3, with_boxes=True)
    box, mask = push(transform, sample)
    x_min, y_min, x_max, y_max = sample.box
    np.testing.assert_allclose(box, [SIZE - x_max, y_min, SIZE - x_min, y_max], atol=1e-4)
    np.testing.assert_array_equal(mask, sample.mask[:, ::-1])
    np.testing.assert_allclose(box, mask_box(mask), atol=1e-4)


@pytest.mark.parametrize("index", range(6))
def test_the_shapes_augment_config_keeps_boxes_on_their_masks(index):
    transforms = OmegaConf.to_container(OmegaConf.load(CONF / "augment" / "shapes.yaml").train)
    transform = build_transform(transforms, mean=[0.5] * 3, std=[0.25] * 3, with_boxes=True)
    transform.set_random_seed(100 + index)
    sample = ShapesSource(num_samples=6, size=SIZE, seed=7).load(index)
    box, mask = push(transform, sample)
    assert np.abs(box - mask_box(mask)).max() <= 1.0
