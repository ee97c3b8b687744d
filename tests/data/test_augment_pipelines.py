"""Augmentation configs: every one builds, boxes and masks stay on the image, none/invert do what they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cnnlab.data.augment import build_augmentation, build_transform
from cnnlab.data.datamodule import CNNDataModule, collate_batches
from cnnlab.data.sources.base import Sample, Source

ROOT = Path(__file__).resolve().parents[2]
AUGMENTS = sorted(p.stem for p in (ROOT / "conf" / "augment").glob("*.yaml"))
SIZE = 64


class RectangleSource(Source):
    """One axis-aligned rectangle per image (mask id 1, its box), away from the border, on a gradient."""

    classes = ["rect"]
    mask_classes = ["background", "rect"]
    has_boxes = has_masks = True

    def __init__(self, count: int = 24, channels: int = 3):
        self.count, self.channels = count, channels

    def items(self):
        return range(self.count)

    def load(self, item):
        rng = np.random.default_rng(item)
        x0, y0 = rng.integers(16, 26, 2)
        x1, y1 = x0 + rng.integers(10, 22), y0 + rng.integers(10, 22)
        ramp = np.linspace(20, 120, SIZE, dtype=np.float32)
        image = np.stack([ramp[None, :].repeat(SIZE, 0)] * self.channels, -1).astype(np.uint8)
        image[y0:y1, x0:x1] = 230
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[y0:y1, x0:x1] = 1
        return Sample(
            image=image, label=0, name=f"rect/{item}", box=(float(x0), float(y0), float(x1), float(y1)), mask=mask
        )


@pytest.fixture(scope="module")
def rectangles(tmp_path_factory):
    from cnnlab.data.prepare import build_prepared_dataset

    directory = tmp_path_factory.mktemp("rect") / "prepared"
    build_prepared_dataset(
        RectangleSource(),
        directory,
        name="rect",
        image_size=SIZE,
        channels=3,
        val_fraction=0.0,
        test_fraction=0.0,
        seed=0,
        workers=1,
    )
    return directory


def augment_train(compose_config, name: str) -> list:
    cfg = compose_config(f"augment={name}", "data=shapes", f"data.image_size={SIZE}")
    return OmegaConf.to_container(cfg.augment.train, resolve=True)


def denormalized(dataset, batch) -> np.ndarray:
    mean = torch.tensor(dataset.prepared.meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(dataset.prepared.meta["std"]).view(1, -1, 1, 1)
    return ((batch["image"] * std + mean) * 255).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", AUGMENTS)
def test_every_augment_config_builds_and_runs_on_gray_and_rgb(compose_config, name):
    train = augment_train(compose_config, name)
    pipeline = build_augmentation(train, with_boxes=True)
    assert (pipeline is None) == (name == "none")
    for channels in (1, 3):
        sample = RectangleSource(channels=channels).load(0)
        if pipeline is None:
            continue
        out = pipeline(image=sample.image, mask=sample.mask, bboxes=np.array([sample.box]) / SIZE, box_labels=[0])
        assert out["image"].shape[:2] == (SIZE, SIZE) and out["image"].dtype == np.uint8
        assert out["mask"].shape == (SIZE, SIZE)


@pytest.mark.parametrize("name", ["basic", "keras", "strong", "affine"])
def test_box_and_mask_stay_aligned_with_the_image(compose_config, rectangles, name):
    module = CNNDataModule(str(rectangles), augment_train(compose_config, name), boxes=True, masks=True)
    dataset = module.dataset("train", augment=True)
    torch.manual_seed(0)
    changed = 0
    for _ in range(4):  # 4 augmented draws of every rectangle
        batch = dataset.__getitems__(list(range(len(dataset))))
        for box, mask in zip(batch["box"].numpy() * SIZE, batch["mask"].numpy()):
            ys, xs = np.nonzero(mask == 1)
            assert len(xs), "the object left the image"
            mask_box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert np.abs(mask_box - box).max() <= 1.0 + 1e-4, (name, mask_box, box)
        original = np.stack([dataset.prepared.boxes[i] for i in dataset.indices]) * SIZE
        changed += int((np.abs(batch["box"].numpy() * SIZE - original).max(axis=1) > 1).sum())
    assert changed > 0  # the pipeline did move things


def test_none_is_the_identity_after_undoing_normalize(compose_config, rectangles):
    module = CNNDataModule(str(rectangles), augment_train(compose_config, "none"), boxes=True, masks=True)
    dataset = module.dataset("train", augment=True)
    batch = dataset.__getitems__(list(range(len(dataset))))
    np.testing.assert_allclose(denormalized(dataset, batch), dataset.prepared.images[dataset.indices], atol=1e-3)
    np.testing.assert_allclose(batch["box"].numpy(), dataset.prepared.boxes[dataset.indices], atol=1e-7)
    np.testing.assert_array_equal(batch["mask"].numpy(), dataset.prepared.masks[dataset.indices])


def test_invert_gives_255_minus_pixel(compose_config, rectangles):
    module = CNNDataModule(str(rectangles), augment_train(compose_config, "invert"), boxes=True, masks=True)
    dataset = module.dataset("train", augment=True)
    batch = dataset.__getitems__(list(range(len(dataset))))
    np.testing.assert_allclose(
        denormalized(dataset, batch), 255.0 - dataset.prepared.images[dataset.indices], atol=1e-3
    )
    np.testing.assert_allclose(batch["box"].numpy(), dataset.prepared.boxes[dataset.indices], atol=1e-6)


def test_batch_format_and_values_match_the_per_sample_pipeline(rectangles):
    module = CNNDataModule(str(rectangles), [], eval_batch_size=8, boxes=True, masks=True)
    batch = next(iter(module._loader("train", train=False)))
    assert (
        batch["image"].dtype == torch.float32
        and batch["image"].shape == (8, 3, SIZE, SIZE)
        and batch["image"].is_contiguous()
    )
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (8,)
    assert batch["box"].dtype == torch.float32 and batch["box"].shape == (8, 4)
    assert batch["mask"].dtype == torch.int64 and batch["mask"].shape == (8, SIZE, SIZE)
    # the same numbers as albumentations' Normalize + ToTensorV2 applied to one sample at a time
    dataset = module.dataset("train", augment=False)
    single = build_transform([], dataset.prepared.meta["mean"], dataset.prepared.meta["std"], with_boxes=True)
    index = dataset.indices[3]
    reference = single(
        image=np.asarray(dataset.prepared.images[index]), bboxes=dataset.prepared.boxes[index][None], box_labels=[0]
    )
    torch.testing.assert_close(batch["image"][3], reference["image"].float(), atol=1e-5, rtol=1e-5)
    item = dataset[3]  # single items (augmentation previews) are the batch's rows
    torch.testing.assert_close(item["image"], batch["image"][3])
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0


def test_augmentation_is_reproducible_from_the_torch_seed(compose_config, rectangles):
    train = augment_train(compose_config, "keras")
    draws = []
    for _ in range(2):
        torch.manual_seed(123)
        dataset = CNNDataModule(str(rectangles), train).dataset("train", augment=True)
        draws.append(dataset.__getitems__([0, 1, 2])["image"])
    torch.testing.assert_close(draws[0], draws[1])


def test_collate_passes_prepared_batches_through():
    batch = {"image": torch.zeros(2, 1, 4, 4), "label": torch.zeros(2, dtype=torch.long)}
    assert collate_batches(batch) is batch
    assert collate_batches([{"label": torch.tensor(1)}, {"label": torch.tensor(2)}])["label"].tolist() == [1, 2]


@pytest.mark.parametrize("name", ["affine", "strong"])
def test_worker_processes_load_the_batches_the_training_process_would(compose_config, rectangles, name):
    """Persistent workers live through the fit: each batch's draws come with its positions, not from the process."""
    train = augment_train(compose_config, name)
    epochs = {}
    for workers in (0, 2):
        loader = CNNDataModule(str(rectangles), train, batch_size=3, num_workers=workers, seed=5).train_dataloader()
        assert loader.persistent_workers == (workers > 0)
        seen = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            seen.append(torch.cat([batch["image"] for batch in loader]))
        epochs[workers] = seen
    for in_process, in_workers in zip(epochs[0], epochs[2]):
        torch.testing.assert_close(in_process, in_workers)
    assert not torch.equal(epochs[0][0], epochs[0][1])  # a new epoch draws anew
