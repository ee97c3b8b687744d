"""The prepare step: turn a raw `Source` into the prepared format (validate, resize, split, statistics).

Decode workers are spawned processes that import this module to run `_prepare_in_worker`: scikit-learn,
Hydra and the config schema (a second or more per worker) are imported inside the functions that only
the main process runs.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np
import psutil

from cnnlab.config import ConfigError
from cnnlab.data.decode import pixel_limit, set_max_image_pixels
from cnnlab.data.prepared import IGNORE_INDEX, SPLITS, PreparedArrays, write_prepared
from cnnlab.data.preprocess import resize_sample
from cnnlab.data.sources.base import BadSampleError, Sample, Source, Unusable

log = logging.getLogger(__name__)


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
    """Use the source's own split where it has one; split the rest stratified by label, by seed.

    A split the source does not provide (MNIST has no val, VOC no public test) is carved from its
    train split, stratified, by seed.
    """
    from sklearn.model_selection import train_test_split  # imported here: worker processes never split

    index = np.arange(len(labels))
    splits = {name: index[[g == name for g in given]] for name in SPLITS}
    unassigned = index[[g is None for g in given]]

    def stratified_cut(pool: np.ndarray, fraction: float, rng_seed: int) -> tuple[np.ndarray, np.ndarray]:
        if fraction <= 0 or len(pool) < 2:
            return pool, pool[:0]
        _, counts = np.unique(labels[pool], return_counts=True)
        try:
            stratify = labels[pool] if counts.min() >= 2 else None
            keep, cut = train_test_split(pool, test_size=fraction, random_state=rng_seed, stratify=stratify)
        except ValueError:  # fewer samples to cut than classes: stratifying is impossible
            keep, cut = train_test_split(pool, test_size=fraction, random_state=rng_seed)
        return np.sort(keep), np.sort(cut)

    if len(unassigned):
        rest, test = stratified_cut(unassigned, test_fraction, seed)
        train, val = stratified_cut(rest, val_fraction / max(1e-9, 1 - test_fraction), seed + 1)
        splits = {
            "train": np.concatenate([splits["train"], train]),
            "val": np.concatenate([splits["val"], val]),
            "test": np.concatenate([splits["test"], test]),
        }
    else:
        carve_test = len(splits["test"]) == 0 and test_fraction > 0
        if carve_test:
            splits["train"], splits["test"] = stratified_cut(splits["train"], test_fraction, seed)
        if len(splits["val"]) == 0 and val_fraction > 0:
            fraction = val_fraction / max(1e-9, 1 - test_fraction) if carve_test else val_fraction
            splits["train"], splits["val"] = stratified_cut(splits["train"], fraction, seed + 1)
    return {name: np.sort(splits[name]).astype(np.int64) for name in SPLITS}


def load_checked(
    source: Source, item: Any, image_size: int, channels: int
) -> tuple[Optional[Sample], Optional[tuple[str, str]]]:
    """Load, validate and resize one item: (sample, None), or (None, (name, reason)) for a bad one."""
    try:
        if isinstance(item, Unusable):
            raise BadSampleError(f"{item.name}: {item.reason}")
        sample = source.load(item)
        _check_labels(sample, source)
        return resize_sample(sample, image_size, channels), None
    except BadSampleError as err:
        name = item.name if isinstance(item, Unusable) else source.item_name(item)
        return None, (name, str(err))


def scan_item(source: Source, item: Any, image_size: int, channels: int) -> tuple:
    """Load and validate one item: (label, split, pixel sums, sums of squares, pixel count); BadSampleError naming
    a bad one. The statistics are of the image at data.image_size, as the array format computes them."""
    sample, problem = load_checked(source, item, image_size, channels)
    if problem:
        raise BadSampleError(problem[1])
    pixels = sample.image.reshape(-1, sample.image.shape[-1]).astype(np.float64) / 255.0
    return sample.label, sample.split, pixels.sum(axis=0), (pixels * pixels).sum(axis=0), len(pixels)


_worker: dict[str, Any] = {}


def _init_worker(source: Source, work, args: tuple, max_image_pixels: int) -> None:
    cv2.setNumThreads(1)  # one decode per process; the pool is the parallelism
    set_max_image_pixels(max_image_pixels)
    _worker.update(source=source, work=work, args=args)


def _work_in_worker(item: Any) -> tuple[Any, Optional[tuple[str, str]]]:
    work = _worker["work"]
    if work is load_checked:
        return work(_worker["source"], item, *_worker["args"])
    try:
        return work(_worker["source"], item, *_worker["args"]), None
    except BadSampleError as err:
        return None, (_worker["source"].item_name(item), str(err))


def prepare_workers(source: Source, count: int) -> int:
    """Processes to decode with: $CNNLAB_PREPARE_WORKERS, else the usable cores; 1 for in-memory
    sources (nothing to decode in parallel) and small ones (a pool costs about a second to start)."""
    if not getattr(source, "parallel_load", False) or count < 500:
        return 1
    if env := os.environ.get("CNNLAB_PREPARE_WORKERS"):
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def check_memory(samples: int, image_size: int, channels: int, masks: bool = False) -> None:
    """ConfigError when the prepared arrays (samples x size x size x channels uint8, and the masks) and the
    decoded samples they are stacked from (as much again) do not fit in the memory available now: one
    line before anything is decoded, not the kernel's OOM killer halfway through."""
    per_sample = image_size * image_size * (channels + (1 if masks else 0))
    array, available = samples * per_sample, psutil.virtual_memory().available
    if 2 * array > available:
        gib = 2**30
        raise ConfigError(
            f"data.image_size={image_size}: the prepared images of {samples} samples are {samples} x {image_size} x "
            f"{image_size} x {channels}{' (+1 mask)' if masks else ''} bytes = {array / gib:,.1f} GiB, and preparing "
            f"them needs about {2 * array / gib:,.1f} GiB; this machine has {available / gib:,.1f} GiB available. "
            'Lower data.image_size, or keep the images encoded with data.storage=shards (README "Large datasets")'
        )


def map_items(
    source: Source, items: Sequence[Any], work, args: tuple, on_bad_sample: str, workers: Optional[int] = None
) -> Iterator[tuple[Any, Optional[tuple[str, str]]]]:
    """`work(source, item, *args)` for every item, in item order, as (result, problem) pairs: a generator, so the
    caller can stream the results (nothing is held but what the pool has run ahead).

    Runs in a process pool when the source reads files (`parallel_load`). `work` reports a bad item by raising
    BadSampleError (load_checked returns it): under on_bad_sample=error the first bad item, in item order, stops
    everything; under skip it is logged and yielded as (None, (name, reason)).
    """
    workers = prepare_workers(source, len(items)) if workers is None else workers
    if workers > 1:
        # spawn, not fork: the caller may hold torch or OpenCV thread pools that a fork would copy half-alive
        executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(source, work, args, pixel_limit()),
        )
        chunksize = max(1, min(64, len(items) // (workers * 8)))
        # submitted a window at a time: Executor.map makes a future per item up front (half a KB each)
        window = workers * chunksize * 16
        results = (
            result
            for start in range(0, len(items), window)
            for result in executor.map(_work_in_worker, items[start : start + window], chunksize=chunksize)
        )
    else:
        executor = None
        _worker.update(source=source, work=work, args=args)
        results = (_work_in_worker(item) for item in items)
    try:
        for result, problem in results:
            if problem is not None:
                if on_bad_sample != "skip":
                    raise BadSampleError(
                        f"{problem[1]} (data.on_bad_sample=error; set it to skip to leave such samples out)"
                    )
                log.warning("skipping %s", problem[1])
            yield result, problem
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def load_samples(source: Source, image_size: int, channels: int, on_bad_sample: str, workers: Optional[int] = None):
    """Every item of `source`, loaded and resized, in item order: (kept samples, skipped (name, reason))."""
    if hasattr(source, "set_target_size"):  # readers without pixel annotations may decode JPEGs smaller
        source.set_target_size(image_size)
    items = source.items()
    check_memory(len(items), image_size, channels, bool(getattr(source, "has_masks", False)))
    kept: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for sample, problem in map_items(source, items, load_checked, (image_size, channels), on_bad_sample, workers):
        if problem is None:
            kept.append(sample)
        else:
            skipped.append(problem)
    return kept, skipped


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
    workers: Optional[int] = None,
) -> dict:
    """Read every sample of `source` once and write the prepared dataset; returns its meta.

    Bad samples stop the run (on_bad_sample=error) or are left out, logged and listed in
    skipped.csv (skip). Nothing is written unless the whole dataset was read: a failed run
    leaves the previous prepared dataset as it was.
    """
    started = time.perf_counter()
    kept, skipped = load_samples(source, image_size, channels, on_bad_sample, workers)
    if not kept:
        reasons = "; ".join(reason for _, reason in skipped[:3])
        raise BadSampleError(f"{source.describe()}: no usable samples ({len(skipped)} skipped: {reasons})")
    if skipped:
        log.warning("skipped %d bad samples (listed in %s/skipped.csv)", len(skipped), directory)
    labels = np.array([s.label for s in kept], np.int64)
    arrays = PreparedArrays(
        images=np.stack([s.image for s in kept]),
        labels=labels,
        splits=split_indices(labels, [s.split for s in kept], val_fraction, test_fraction, seed),
        boxes=np.array([s.box for s in kept], np.float32).reshape(-1, 4) if source.has_boxes else None,
        masks=np.stack([s.mask for s in kept]) if source.has_masks else None,
    )
    del kept
    meta = {
        "name": name,
        "source": source.describe(),
        "classes": list(source.classes),
        "mask_classes": list(source.mask_classes) if source.has_masks and source.mask_classes else None,
        "image_size": image_size,
        "channels": channels,
        "split_seed": seed,
        "skipped": [n for n, _ in skipped],
        "input": source.input_spec(),
        **(extra_meta or {}),
    }
    meta = write_prepared(Path(directory), arrays, meta, skipped)
    log.info("prepared %d samples in %.1f s", meta["num_samples"], time.perf_counter() - started)
    return meta


def build_shard_dataset(
    source: Source,
    directory: Path,
    *,
    meta: dict,
    image_size: int,
    channels: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    on_bad_sample: str,
    samples_per_shard: int,
    max_side: Optional[int],
    workers: Optional[int] = None,
) -> dict:
    """data.storage=shards: read `source` twice, streaming, and write its shard set (cnnlab.data.shards).

    Pass one validates every item (the on_bad_sample policy) and keeps, per item, its label, given split and
    pixel sums at `image_size`, in arrays: the splits and the train split's mean/std, as the array format
    computes them. Pass two writes each split's records in item order. Returns the meta."""
    from cnnlab.data.shard_records import record_item
    from cnnlab.data.shards import write_shard_set

    started = time.perf_counter()
    items = source.items()
    if hasattr(source, "set_target_size"):  # the checking pass may decode large JPEGs at a reduced scale
        source.set_target_size(image_size)
    count = len(items)
    kept, labels = np.zeros(count, bool), np.zeros(count, np.int64)
    given: list = [None] * count
    sums = np.zeros((count, 2 * channels + 1))  # pixel sums, sums of squares, pixel count
    skipped = []
    scanned = map_items(source, items, scan_item, (image_size, channels), on_bad_sample, workers)
    for position, (fact, problem) in enumerate(scanned):
        if problem:
            skipped.append(problem)
            continue
        kept[position], labels[position], given[position] = True, fact[0], fact[1]
        sums[position] = [*fact[2], *fact[3], fact[4]]
    positions = np.flatnonzero(kept)
    if not len(positions):
        reasons = "; ".join(reason for _, reason in skipped[:3])
        raise BadSampleError(f"{source.describe()}: no usable samples ({len(skipped)} skipped: {reasons})")
    if skipped:
        log.warning("skipped %d bad samples (listed in %s/skipped.csv)", len(skipped), directory)
    splits = split_indices(labels[positions], [given[p] for p in positions], val_fraction, test_fraction, seed)
    train = sums[positions[splits["train"]]].sum(axis=0)
    mean, std = np.full(channels, np.nan), np.full(channels, np.nan)
    if len(splits["train"]):
        mean = train[:channels] / train[-1]
        std = np.sqrt(np.maximum(train[channels:-1] / train[-1] - mean**2, 0.0))
    del sums, given
    if hasattr(source, "set_target_size"):  # the writing pass keeps (or re-encodes) the original resolution
        source.set_target_size(None)

    def records(split: str):
        split_items = [items[p] for p in positions[splits[split]]]
        for record, _ in map_items(source, split_items, record_item, (channels, max_side), "error", workers):
            yield record

    meta = write_shard_set(
        directory,
        {split: records(split) for split in SPLITS},
        meta={
            **meta,
            "classes": list(source.classes),  # known once the reader listed its items
            "mask_classes": list(source.mask_classes) if source.has_masks and source.mask_classes else None,
            "num_samples": int(len(positions)),
            "split_sizes": {s: int(len(splits[s])) for s in SPLITS},
            "mean": mean.tolist(),
            "std": np.maximum(std, 1e-6).tolist(),
        },
        skipped=skipped,
        samples_per_shard=samples_per_shard,
    )
    log.info(
        "prepared %d samples as %s shards in %.1f s",
        meta["num_samples"],
        len(sum(meta["shards"].values(), [])),
        time.perf_counter() - started,
    )
    return meta


def check_root(data_cfg) -> None:
    """A reader of files on disk needs data.root set to an existing path: ConfigError naming it."""
    from cnnlab.config import ConfigError

    if "root" not in (data_cfg.source or {}):
        return
    root = data_cfg.root
    if root is None or str(root).strip() == "":
        raise ConfigError(
            f"data.root is not set: data={data_cfg.name} reads a dataset from disk, in the layout it was "
            f"downloaded in; pass data.root=/path/to/it (see docs/data.md)"
        )
    if not Path(str(root)).expanduser().exists():
        how_to_get = data_cfg.source.get("how_to_get")  # where a reader knows where its files come from
        raise ConfigError(
            f"data.root={root} does not exist (data={data_cfg.name})" + (f": {how_to_get}" if how_to_get else "")
        )


def prepare_settings(data_cfg) -> dict:
    """The data config keys that decide the prepared dataset's contents (its fingerprint)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(data_cfg, resolve=True)
    keys = (
        "name",
        "source",
        "root",
        "image_size",
        "channels",
        "val_fraction",
        "test_fraction",
        "split_seed",
        "on_bad_sample",
        "max_image_pixels",
    )
    settings = {key: plain.get(key) for key in keys}
    shards = plain.get("shards") or {}  # what decides the shards' bytes (not where they are read from)
    settings.update(
        {
            "storage": plain.get("storage", "arrays"),
            "shards.samples_per_shard": shards.get("samples_per_shard"),
            "shards.max_side": shards.get("max_side"),
        }
    )
    return settings


def build_source(data_cfg) -> Source:
    """The configured reader; ConfigError (naming the key) for a missing data.root or a bad reader option."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from cnnlab.config import ConfigError

    check_root(data_cfg)
    try:
        return instantiate(data_cfg.source)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"data={data_cfg.name}: {cause}") from err
        raise


def declared_label_kinds(data_cfg) -> Optional[list[str]]:
    """The label kinds the configured reader carries, where it knows them before reading (None otherwise).

    A reader that cannot be built yet (a missing data.root, a bad option) also gives None: the
    check falls to the prepared data, and prepare reports the problem itself, naming the key.
    """
    from cnnlab.config import ConfigError

    try:
        return build_source(data_cfg).label_kinds()
    except (ConfigError, OSError):
        return None


def prepare_from_config(data_cfg, workers: Optional[int] = None) -> dict:
    """Build `data.prepared_dir` from the data config; returns the prepared meta."""
    from cnnlab.config import validate_data_config

    validate_data_config(data_cfg)
    set_max_image_pixels(data_cfg.max_image_pixels)
    source = build_source(data_cfg)
    settings = prepare_settings(data_cfg)
    log.info("preparing %s -> %s", source.describe(), data_cfg.prepared_dir)
    common = dict(
        image_size=data_cfg.image_size,
        channels=data_cfg.channels,
        val_fraction=data_cfg.val_fraction,
        test_fraction=data_cfg.test_fraction,
        seed=data_cfg.split_seed,
        on_bad_sample=data_cfg.on_bad_sample,
        workers=workers,
    )
    if data_cfg.get("storage", "arrays") == "shards":
        return build_shard_dataset(
            source,
            Path(data_cfg.prepared_dir),
            meta=_meta_facts(source, data_cfg, settings),
            samples_per_shard=data_cfg.shards.samples_per_shard,
            max_side=data_cfg.shards.max_side,
            **common,
        )
    return build_prepared_dataset(
        source, Path(data_cfg.prepared_dir), name=data_cfg.name, extra_meta={"prepare_settings": settings}, **common
    )


def _meta_facts(source: Source, data_cfg, settings: dict) -> dict:
    """What a shard set's meta.json records of its reader and settings (the array format's keys)."""
    return {
        "name": data_cfg.name,
        "source": source.describe(),
        "image_size": data_cfg.image_size,
        "channels": data_cfg.channels,
        "split_seed": data_cfg.split_seed,
        "input": source.input_spec(),
        "has_boxes": bool(source.has_boxes),
        "has_masks": bool(source.has_masks),
        "prepare_settings": settings,
    }


def data_location(data_cfg) -> str:
    """Where a run's data is: data.shards.url for streamed shards, else data.prepared_dir."""
    if data_cfg.get("storage", "arrays") == "shards" and data_cfg.shards.url:
        return str(data_cfg.shards.url)
    return str(data_cfg.prepared_dir)


def ensure_prepared(data_cfg) -> dict:
    """The prepared meta for this data config, preparing first if it is missing or was built differently.

    Shards streamed from data.shards.url are read as they are (meta.json checked against their files)."""
    if data_cfg.get("storage", "arrays") == "shards" and data_cfg.shards.url:
        from cnnlab.data.shards import read_shard_meta

        return read_shard_meta(str(data_cfg.shards.url))
    meta_path = Path(data_cfg.prepared_dir) / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("prepare_settings") == prepare_settings(data_cfg):
            return meta
        log.info("prepared data at %s was built with other settings; preparing again", data_cfg.prepared_dir)
    return prepare_from_config(data_cfg)
