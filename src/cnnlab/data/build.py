"""Turn a raw `Source` into the prepared format: validate, resize, split, compute statistics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from sklearn.model_selection import train_test_split

from cnnlab.data.prepared import IGNORE_INDEX, SPLITS, PreparedArrays, write_prepared
from cnnlab.data.sources.base import BadSampleError, Sample, Source

log = logging.getLogger(__name__)


def _to_channels(image: np.ndarray, channels: int, name: str) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8:
        raise BadSampleError(f"{name}: pixel type {image.dtype}, expected uint8 after decoding")
    have = image.shape[2]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    raise BadSampleError(f"{name}: {have} channels, cannot convert to data.channels={channels}")


def resize_sample(sample: Sample, size: int, channels: int) -> Sample:
    """Resize image (area when shrinking, linear when growing), mask (nearest) and box to size x size."""
    image = _to_channels(sample.image, channels, sample.name)
    height, width = image.shape[:2]
    interpolation = cv2.INTER_AREA if size < min(height, width) else cv2.INTER_LINEAR
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    box = None
    if sample.box is not None:
        x_min, y_min, x_max, y_max = sample.box
        if not (0 <= x_min < x_max <= width and 0 <= y_min < y_max <= height):
            raise BadSampleError(
                f"{sample.name}: box {sample.box} is not inside the {width}x{height} image with "
                f"x_min < x_max and y_min < y_max"
            )
        box = (x_min / width, y_min / height, x_max / width, y_max / height)
    mask = None
    if sample.mask is not None:
        if sample.mask.shape[:2] != (height, width):
            raise BadSampleError(
                f"{sample.name}: mask is {sample.mask.shape[1]}x{sample.mask.shape[0]} but its image is {width}x{height}"
            )
        mask = cv2.resize(sample.mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return Sample(image=resized, label=sample.label, name=sample.name, box=box, mask=mask, split=sample.split)


def _check_labels(sample: Sample, source: Source) -> None:
    if not 0 <= sample.label < len(source.classes):
        raise BadSampleError(
            f"{sample.name}: label {sample.label} is not in the {len(source.classes)} declared classes"
        )
    if sample.mask is not None and source.mask_classes is not None:
        ids = np.unique(sample.mask)
        bad = ids[(ids >= len(source.mask_classes)) & (ids != IGNORE_INDEX)]
        if len(bad):
            raise BadSampleError(
                f"{sample.name}: mask has class ids {bad.tolist()} outside the declared "
                f"0..{len(source.mask_classes) - 1} (and {IGNORE_INDEX} = ignore)"
            )


def split_indices(
    labels: np.ndarray, given: list[Optional[str]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Use the source's own split where it has one; otherwise split stratified by label, by seed."""
    index = np.arange(len(labels))
    splits = {name: index[[g == name for g in given]] for name in SPLITS}
    unassigned = index[[g is None for g in given]]

    def stratified_cut(pool: np.ndarray, fraction: float, rng_seed: int) -> tuple[np.ndarray, np.ndarray]:
        if fraction <= 0 or len(pool) == 0:
            return pool, pool[:0]
        _, counts = np.unique(labels[pool], return_counts=True)
        stratify = labels[pool] if counts.min() >= 2 else None
        keep, cut = train_test_split(pool, test_size=fraction, random_state=rng_seed, stratify=stratify)
        return np.sort(keep), np.sort(cut)

    if len(unassigned):
        rest, test = stratified_cut(unassigned, test_fraction, seed)
        train, val = stratified_cut(rest, val_fraction / max(1e-9, 1 - test_fraction), seed + 1)
        splits = {"train": np.concatenate([splits["train"], train]), "val": np.concatenate([splits["val"], val]),
                  "test": np.concatenate([splits["test"], test])}  # fmt: skip
    elif len(splits["val"]) == 0 and val_fraction > 0:
        # a source with only train/test: carve validation from train, stratified
        splits["train"], splits["val"] = stratified_cut(splits["train"], val_fraction, seed + 1)
    return {name: np.sort(splits[name]).astype(np.int64) for name in SPLITS}


def build_prepared_dataset(
    source: Source,
    directory: Path,
    *,
    name: str,
    image_size: int,
    channels: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    on_bad_sample: str = "error",
    extra_meta: Optional[dict] = None,
) -> dict:
    """Read every sample of `source` once and write the prepared dataset; returns its meta."""
    kept: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for item in source.items():
        try:
            sample = source.load(item)
            _check_labels(sample, source)
            kept.append(resize_sample(sample, image_size, channels))
        except BadSampleError as err:
            if on_bad_sample != "skip":
                raise BadSampleError(f"{err} (data.on_bad_sample=error; set it to skip to leave such samples out)") from err
            log.warning("skipping %s", err)
            skipped.append((source.item_name(item), str(err)))
    if not kept:
        raise ValueError(f"{source.describe()}: no usable samples ({len(skipped)} skipped)")
    if skipped:
        log.warning("skipped %d bad samples (listed in %s/skipped.csv)", len(skipped), directory)
    labels = np.array([s.label for s in kept], np.int64)
    arrays = PreparedArrays(
        images=np.stack([s.image for s in kept]),
        labels=labels,
        splits=split_indices(labels, [s.split for s in kept], val_fraction, test_fraction, seed),
        boxes=np.array([s.box for s in kept], np.float32) if source.has_boxes else None,
        masks=np.stack([s.mask for s in kept]) if source.has_masks else None,
    )
    meta = {
        "name": name,
        "source": source.describe(),
        "classes": list(source.classes),
        "mask_classes": list(source.mask_classes) if source.has_masks and source.mask_classes else None,
        "image_size": image_size,
        "channels": channels,
        "split_seed": seed,
        "skipped": [n for n, _ in skipped],
        **(extra_meta or {}),
    }
    return write_prepared(Path(directory), arrays, meta, skipped)


def prepare_settings(data_cfg) -> dict:
    """The data config keys that decide the prepared dataset's contents (its fingerprint)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(data_cfg, resolve=True)
    keys = ("name", "source", "root", "image_size", "channels", "val_fraction", "test_fraction", "split_seed", "on_bad_sample")
    return {key: plain.get(key) for key in keys}


def prepare_from_config(data_cfg) -> dict:
    """Build `data.prepared_dir` from the data config; returns the prepared meta."""
    from hydra.utils import instantiate

    source = instantiate(data_cfg.source)
    settings = prepare_settings(data_cfg)
    log.info("preparing %s -> %s", source.describe(), data_cfg.prepared_dir)
    return build_prepared_dataset(
        source,
        Path(data_cfg.prepared_dir),
        name=data_cfg.name,
        image_size=data_cfg.image_size,
        channels=data_cfg.channels,
        val_fraction=data_cfg.val_fraction,
        test_fraction=data_cfg.test_fraction,
        seed=data_cfg.split_seed,
        on_bad_sample=data_cfg.on_bad_sample,
        extra_meta={"prepare_settings": settings},
    )


def ensure_prepared(data_cfg) -> dict:
    """The prepared meta for this data config, preparing first if it is missing or was built differently."""
    import json

    meta_path = Path(data_cfg.prepared_dir) / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("prepare_settings") == prepare_settings(data_cfg):
            return meta
        log.info("prepared data at %s was built with other settings; preparing again", data_cfg.prepared_dir)
    return prepare_from_config(data_cfg)
