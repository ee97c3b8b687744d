"""The LightningDataModule over a prepared dataset."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cnnlab.data.augment import build_transform
from cnnlab.data.prepared import PreparedDataset


class PreparedSplit(Dataset):
    """One split of a prepared dataset, through an albumentations pipeline.

    Items are dicts: image (C x H x W float), label (int64), and where the data has them box
    (4 float32, normalised x_min, y_min, x_max, y_max) and mask (H x W int64).
    """

    def __init__(self, prepared: PreparedDataset, split: str, transform, *, boxes: bool, masks: bool, fallback=None):
        self.prepared, self.transform, self.fallback = prepared, transform, fallback or transform
        self.indices = prepared.splits[split]
        self.boxes, self.masks = boxes and prepared.boxes is not None, masks and prepared.masks is not None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.indices[position]
        inputs: dict[str, Any] = {"image": np.asarray(self.prepared.images[index])}
        if self.masks:
            inputs["mask"] = np.asarray(self.prepared.masks[index])
        if self.boxes:
            inputs["bboxes"] = self.prepared.boxes[index][None]
            inputs["box_labels"] = [0]
        out = self.transform(**inputs)
        for _ in range(3):  # an augmentation that moved the object out of view: draw again
            if not self.boxes or len(out["bboxes"]):
                break
            out = self.transform(**inputs)
        else:
            out = self.fallback(**inputs)  # normalise only: the sample is kept, never dropped
        item = {"image": out["image"].float(), "label": torch.as_tensor(self.prepared.labels[index], dtype=torch.long)}
        if self.boxes:
            item["box"] = torch.as_tensor(np.asarray(out["bboxes"][0], np.float32))
        if self.masks:
            item["mask"] = torch.as_tensor(np.asarray(out["mask"]), dtype=torch.long)
        return item


class CNNDataModule(pl.LightningDataModule):
    """Loads the prepared dataset once; train split augmented, val/test only normalised."""

    def __init__(
        self,
        prepared_dir: str,
        train_transforms: Sequence[Any] = (),
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        boxes: bool = False,
        masks: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        self.prepared_dir, self.train_transforms = prepared_dir, list(train_transforms)
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.boxes, self.masks, self.seed = boxes, masks, seed
        self.prepared: Optional[PreparedDataset] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.prepared is None:
            self.prepared = PreparedDataset(self.prepared_dir)

    @property
    def meta(self) -> dict:
        self.setup()
        return self.prepared.meta

    def dataset(self, split: str, augment: bool) -> PreparedSplit:
        self.setup()
        meta = self.prepared.meta
        plain = build_transform([], meta["mean"], meta["std"], with_boxes=self.boxes)
        transform = build_transform(self.train_transforms, meta["mean"], meta["std"], with_boxes=self.boxes) if augment else plain
        return PreparedSplit(self.prepared, split, transform, boxes=self.boxes, masks=self.masks, fallback=plain)

    def _loader(self, split: str, train: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(
            self.dataset(split, augment=train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
