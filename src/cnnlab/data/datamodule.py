"""The LightningDataModule over a prepared dataset."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from cnnlab.data.augment import build_augmentation
from cnnlab.data.prepared import PreparedDataset
from cnnlab.data.preprocess import BATCH_NUMBER, BatchNormalizer, finish_batch
from cnnlab.seeding import epoch_seed


class PreparedSplit(Dataset):
    """One split of a prepared dataset, through an augmentation pipeline.

    Items are dicts: image (C x H x W float, normalised), label (int64), and where the data has
    them box (4 float32, normalised x_min, y_min, x_max, y_max) and mask (H x W int64).
    The DataLoader fetches whole batches through `__getitems__`: one read of the memory-mapped
    arrays, the augmentation of the batch, then normalisation and tensor conversion per batch.
    Each batch's augmentations are drawn from (epoch seed, the batch's first sample), which
    `EpochShuffleSampler` hands over with the positions: the same batches whether they are loaded
    in the training process or in any number of (persistent) worker processes.
    """

    def __init__(
        self,
        prepared: PreparedDataset,
        split: str,
        augment,
        *,
        boxes: bool,
        masks: bool,
        normalization: Optional[tuple[Sequence[float], Sequence[float]]] = None,
        train_fraction: float = 1.0,
        subset_seed: int = 0,
    ):
        self.prepared, self.augment = prepared, augment
        self.indices = (
            prepared.splits[split]
            if train_fraction >= 1
            else labelled_subset(prepared, split, train_fraction, subset_seed)
        )
        self.boxes, self.masks = boxes and prepared.boxes is not None, masks and prepared.masks is not None
        mean, std = normalization or (
            prepared.meta["mean"],
            prepared.meta["std"],
        )  # the network's (pretrained weights'), else the data's
        self.normalize = BatchNormalizer(mean, std)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position) -> dict[str, Any]:
        return {key: value[0] for key, value in self.__getitems__([position]).items()}

    def _seed(self, positions: Sequence) -> list[int]:
        """Seed the augmentation for this batch; returns the plain positions.

        Positions come as (epoch seed, position) pairs from EpochShuffleSampler, or as plain ints
        (Lightning's DistributedSampler under DDP): then from torch's per-process seed, which
        seed_everything sets per rank and worker."""
        if positions and isinstance(positions[0], tuple):
            epoch, positions = positions[0][0], [p for _, p in positions]
        else:
            worker = torch.utils.data.get_worker_info()
            epoch = torch.initial_seed() + (worker.id if worker else 0)
        if self.augment is not None and positions:
            self.augment.set_random_seed(
                int(np.random.SeedSequence([epoch % 2**63, int(positions[0])]).generate_state(1)[0])
            )
        return list(positions)

    def __getitems__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        """A collated batch for these positions of the split."""
        positions = self._seed(positions)
        index = self.indices[np.asarray(positions, dtype=np.int64)]
        images = self.prepared.images[index]  # fancy indexing copies out of the memory map
        masks = self.prepared.masks[index] if self.masks else None
        boxes = self.prepared.boxes[index].astype(np.float32) if self.boxes else None
        return finish_batch(images, self.prepared.labels[index], boxes, masks, self.augment, self.normalize)


def labelled_subset(prepared: PreparedDataset, split: str, fraction: float, seed: int) -> np.ndarray:
    """A stratified `fraction` of a split (at least one sample per class present), in the split's order.

    Drawn from `seed` (data.split_seed), so every training seed sees the same small labelled set.
    """
    indices = prepared.splits[split]
    labels = prepared.labels[indices]
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.extend(rng.permutation(members)[: max(1, int(round(fraction * len(members))))])
    return indices[np.sort(np.asarray(keep, dtype=np.int64))]


class EpochShuffleSampler(Sampler):
    """A shuffle whose order, and the dataset's augmentations, are functions of (seed, epoch).

    Lightning calls `set_epoch` before each training epoch, so epoch k draws the same order and
    augmentations whether the run got there directly or resumed from a checkpoint. It yields
    (epoch seed, position) pairs: the epoch travels with the positions to wherever the batch is
    loaded. Under DDP Lightning swaps in its DistributedSampler, seeded per epoch the same way.
    """

    def __init__(self, dataset: PreparedSplit, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        seed = epoch_seed(self.seed, self.epoch)
        generator = torch.Generator().manual_seed(seed)
        return iter([(seed, position) for position in torch.randperm(len(self.dataset), generator=generator).tolist()])


def collate_batches(batch):
    """DataLoader collate: batches from `PreparedSplit.__getitems__` are collated already."""
    return batch if isinstance(batch, dict) else default_collate(batch)


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
        normalization: Optional[tuple[Sequence[float], Sequence[float]]] = None,  # (mean, std) the network expects
        train_fraction: float = 1.0,  # keep this stratified share of the train split (a small labelled set)
        split_seed: int = 0,
        shards: Optional[dict] = None,  # data.storage=shards: what `shard_spec` gives
    ):
        super().__init__()
        self.shards = shards
        self.normalization, self.train_fraction, self.split_seed = normalization, train_fraction, split_seed
        self.prepared_dir, self.train_transforms = prepared_dir, list(train_transforms)
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.boxes, self.masks, self.seed = boxes, masks, seed
        self.prepared: Optional[PreparedDataset] = None
        self._shard_loader_state: Optional[dict] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.prepared is None:
            if self.shards is not None:
                from cnnlab.data.shards import ShardSet

                self.prepared = ShardSet(self.shards["location"])
            else:
                self.prepared = PreparedDataset(self.prepared_dir)

    @property
    def meta(self) -> dict:
        self.setup()
        return self.prepared.meta

    def dataset(self, split: str, augment: bool) -> PreparedSplit:
        """One split as a map-style dataset of normalised items (for previews and examples; loaders stream)."""
        self.setup()
        pipeline = None
        if augment:  # imported here: evaluation and prediction never augment, and albumentations takes 0.2 s to import
            pipeline = build_augmentation(self.train_transforms, with_boxes=self.boxes)
        if self.shards is not None:
            from cnnlab.data.shards import ShardItems

            return ShardItems(self._shard_split(split, train=augment), self._shard_batches(pipeline))
        fraction = self.train_fraction if split == "train" else 1.0
        return PreparedSplit(
            self.prepared,
            split,
            pipeline,
            boxes=self.boxes,
            masks=self.masks,
            normalization=self.normalization,
            train_fraction=fraction,
            subset_seed=self.split_seed,
        )

    def _normalizer(self) -> BatchNormalizer:
        mean, std = self.normalization or (self.meta["mean"], self.meta["std"])
        return BatchNormalizer(mean, std)

    def _shard_split(self, split: str, train: bool):
        from cnnlab.data.shards import RecordDecoder, shard_split

        spec = self.shards
        decoder = RecordDecoder(
            spec["image_size"], spec["channels"], spec["crop"] if train else None, spec["on_bad_sample"]
        )
        return shard_split(spec["location"], split, decoder, shuffle=train, seed=self.seed, cache=spec["cache"])

    def _shard_batches(self, pipeline):
        from cnnlab.data.shards import ShardBatches

        return ShardBatches(pipeline, self._normalizer(), self.boxes, self.masks)

    def _shard_loader(self, split: str, train: bool):
        from cnnlab.data.shards import shard_loader

        if train and self.train_fraction < 1:
            from cnnlab.config import ConfigError

            raise ConfigError("data.train_fraction applies to data.storage=arrays; shards stream every sample")
        pipeline = build_augmentation(self.train_transforms, with_boxes=self.boxes) if train else None
        return shard_loader(
            self._shard_split(split, train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=self._shard_batches(pipeline),
            train=train,
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        if self.shards is not None:
            return self._shard_loader(split, train)
        dataset = self.dataset(split, augment=train)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochShuffleSampler(dataset, self.seed) if train else None,
            num_workers=self.num_workers,
            # the epoch's seed travels with the sampled positions: workers live through the fit
            persistent_workers=self.num_workers > 0,
            drop_last=False,
            collate_fn=collate_batches,
        )

    def train_dataloader(self) -> DataLoader:
        self._train_loader = self._loader("train", train=True)
        if self._shard_loader_state is not None:
            self._train_loader.load_state_dict(self._shard_loader_state)
            self._shard_loader_state = None
        return self._train_loader

    # A shard loader's position travels in the DataModule's checkpoint state: Lightning restores its own record of
    # stateful loaders only when the loader is created after the checkpoint's loops are restored, and a schedule
    # that asks for trainer.estimated_stepping_batches (one-cycle) creates it before.
    def state_dict(self) -> dict:
        loader = getattr(self, "_train_loader", None)
        return {"shard_loader": loader.state_dict()} if self.shards is not None and loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._shard_loader_state = state.get("shard_loader")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Tell a shard loader which training batch training takes now: its checkpointed state is taken there,
        not at the batches Lightning fetched ahead (cnnlab.data.shards.ShardLoader)."""
        if isinstance(batch, dict) and BATCH_NUMBER in batch:
            self._train_loader.batches_trained = int(batch[BATCH_NUMBER])
            batch = {key: value for key, value in batch.items() if key != BATCH_NUMBER}
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


def datamodule_from_config(cfg, labels: Sequence[str], normalization=None) -> CNNDataModule:
    """The DataModule of a composed config, loading the label kinds a task needs (`CNNTask.labels`).

    `normalization`: the (mean, std) the network expects (its hparams: pretrained weights may declare
    their own); None: the prepared data's statistics."""
    return CNNDataModule(
        prepared_dir=cfg.data.prepared_dir,
        train_transforms=OmegaConf.to_container(cfg.augment.train, resolve=True),
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        boxes="box" in labels,
        masks="mask" in labels,
        seed=cfg.seed,
        normalization=normalization,
        train_fraction=cfg.data.get("train_fraction", 1.0),
        split_seed=cfg.data.split_seed,
        shards=shard_spec(cfg) if cfg.data.get("storage", "arrays") == "shards" else None,
    )


def shard_spec(cfg) -> dict:
    """What the DataModule needs to stream data.storage=shards."""
    from cnnlab.data.shards import cache_settings

    data = cfg.data
    return {
        "location": str(data.shards.url or data.prepared_dir),
        "cache": cache_settings(data, cfg.paths.data_dir),
        "crop": list(data.shards.random_resized_crop) if data.shards.random_resized_crop else None,
        "image_size": data.image_size,
        "channels": data.channels,
        "on_bad_sample": data.on_bad_sample,
    }


def network_normalization(task) -> Optional[tuple[list[float], list[float]]]:
    """The (mean, std) a trained task normalises with (its hparams), or None for the data's own."""
    mean, std = task.hparams.get("mean"), task.hparams.get("std")
    return (list(mean), list(std)) if mean is not None and std is not None else None
