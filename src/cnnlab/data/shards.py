"""Sharded storage (data.storage=shards): the source images as they were encoded, streamed with LitData.

A shard set is a directory (a DVC output), or the same layout under s3://bucket/prefix:
  train/ val/ test/   one LitData dataset per split: index.json and chunk-*.bin files of
                      `data.shards.samples_per_shard` samples each (image: the original JPEG/PNG bytes, or
                      re-encoded at data.shards.max_side; label; name; box normalised to [0, 1]; mask as PNG)
  skipped.csv         samples the reader rejected under on_bad_sample=skip
  meta.json           the prepared format's facts (classes, counts, splits, mean/std, content hash) plus
                      "storage": "shards", each file's sha256 and size
Preparing reads the source twice, streaming both times (memory stays flat as the dataset grows): once to
validate every sample and collect labels and statistics, once to write each split's shards in item order.
A fixed number of samples per shard (not bytes) keeps a changed image's change to its own shard.

Training decodes in the DataLoader workers (OpenCV's libjpeg-turbo, at a reduced scale where the
original is much larger than needed), crops at the original resolution (data.shards.random_resized_crop),
resizes to data.image_size, then runs the same batch augmentation and normalisation as the array format.
LitData gives each rank a disjoint part of each epoch, in an order that is a function of (seed, epoch),
keeps the local cache under data.shards.cache_limit, and its loader's state rides in Lightning's
checkpoints, so a mid-epoch resume continues with the samples not yet seen. Under DDP the ranks'
parts differ by at most a few batches; `ShardLoader` fills the shorter ranks with zero-weight padding
batches, so every rank takes the same number of steps and every sample counts exactly once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence
from urllib.parse import urlparse

import numpy as np

from cnnlab.data.prepared import IGNORE_INDEX, SPLITS, file_hash, staged_directory
from cnnlab.data.preprocess import BATCH_NUMBER, PADDING, finish_batch
from cnnlab.data.shard_records import RecordDecoder
from cnnlab.data.sources.base import BadSampleError
from cnnlab.tables import write_csv

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # LitData asks PyPI for a newer version otherwise

from litdata import StreamingDataLoader, StreamingDataset  # noqa: E402 (after the setting above)
from litdata.streaming.writer import BinaryWriter  # noqa: E402
from litdata.utilities.env import _DistributedEnv  # noqa: E402

log = logging.getLogger(__name__)
# its advice to cache 25 GB (it assumes 64 MB chunks and many workers), and a line per dataset opened
logging.getLogger("litdata.streaming.dataset").setLevel(logging.ERROR)

# what a shard's fields may be stored as: LitData would also unpickle ("pickle") or open files ("file"), and a
# shard set is data from a shared store, which must never choose code to run
SAFE_FORMATS = ("no_header_numpy", "numpy", "int")

STORAGE = "shards"


# ---- writing ---------------------------------------------------------------------------------------------------
def write_shard_set(
    directory: Path, records: dict[str, Iterable[dict]], *, meta: dict, skipped: list, samples_per_shard: int
) -> dict:
    """Write each split's records (consumed as they come) into `directory` atomically, with meta.json: the given
    facts plus the files' hashes and sizes, the shard list and the content hash. Returns the meta."""
    with staged_directory(Path(directory)) as staging:
        for split in SPLITS:
            writer = None
            for index, record in enumerate(records[split]):
                if writer is None:
                    writer = _single_writer(staging / split, samples_per_shard)
                writer.add_item(index, record)
            if writer is not None:
                writer.done()
                writer.merge()
                _stamp_index(staging / split)
            else:  # LitData writes nothing for an empty split: an empty index keeps the layout whole
                (staging / split).mkdir()
                (staging / split / "index.json").write_text(json.dumps({"chunks": [], "config": None}))
        write_csv(staging / "skipped.csv", ["name", "reason"], skipped)
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        file_hashes = {name: file_hash(staging / name) for name in files}
        meta = {
            **meta,
            "storage": STORAGE,
            "format_version": 1,
            "ignore_index": IGNORE_INDEX,
            "skipped": [n for n, _ in skipped],
            "num_skipped": len(skipped),
            "shards": {s: [f for f in files if f.startswith(f"{s}/chunk-")] for s in SPLITS},
            "file_hashes": file_hashes,
            "file_sizes": {name: (staging / name).stat().st_size for name in files},
            "content_hash": hashlib.sha256(json.dumps(file_hashes, sort_keys=True).encode()).hexdigest(),
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _single_writer(directory: Path, samples_per_shard: int) -> BinaryWriter:
    """LitData's chunk writer as the only writer there is: it would otherwise take a DDP rank's or DataLoader
    worker's number from the environment (prepare can run inside a rank) and wait for the others' indexes."""
    writer = BinaryWriter(str(directory), chunk_size=samples_per_shard)
    writer._distributed_env, writer._rank = _DistributedEnv(1, 0, 1), 0
    return writer


def _stamp_index(split_dir: Path) -> None:
    """Replace the wall-clock "updated_at" LitData writes into index.json by one drawn from the chunks' contents:
    the same data gives the same bytes (content hash, DVC), and LitData still clears a stale cache when the data
    changes (it keys its cache on this value)."""
    index_path = split_dir / "index.json"
    if not index_path.is_file():
        return
    index = json.loads(index_path.read_text())
    digest = hashlib.sha256()
    for chunk in index.get("chunks", []):
        digest.update(file_hash(split_dir / chunk["filename"]).encode())
    index["updated_at"] = str(int(digest.hexdigest()[:12], 16))
    index_path.write_text(json.dumps(index, sort_keys=True))


# ---- where a shard set lives -----------------------------------------------------------------------------------
def is_remote(location: str) -> bool:
    return urlparse(str(location)).scheme == "s3"


def storage_options() -> dict:
    """boto3 client options for s3:// shards: the endpoint and credentials the team's server set-up uses
    ($AWS_ENDPOINT_URL or $MLFLOW_S3_ENDPOINT_URL, $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY)."""
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        if os.environ.get(key.upper()):
            options[key] = os.environ[key.upper()]
    return options


class ShardStoreError(ValueError):
    """A shard set that cannot be read as recorded: the message names the place and what is wrong."""


def _s3_client():
    import boto3

    options = storage_options()
    return boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), **options)


def _s3_error(err: Exception, url: str) -> ShardStoreError:
    code = getattr(err, "response", {}).get("Error", {}).get("Code", type(err).__name__)
    if code in ("NoSuchBucket", "404", "NoSuchKey"):
        return ShardStoreError(f"{url}: no such bucket or no shard set there (meta.json not found)")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
        return ShardStoreError(
            f"{url}: the S3 server refused the credentials ({code}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return ShardStoreError(f"{url}: cannot read the shard set ({code}: {err})")


def read_shard_meta(location: str) -> dict:
    """meta.json of the shard set at a local folder or s3:// URL, its files checked against it."""
    if not is_remote(location):
        from cnnlab.data.prepared import verify_prepared

        meta_path = Path(location) / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no shard set at {location} (missing meta.json); run cnnlab-prepare first")
        meta = json.loads(meta_path.read_text())
        _check_storage(meta, location)
        verify_prepared(Path(location), meta)
        for split in SPLITS:
            index_path = Path(location) / split / "index.json"
            check_index(json.loads(index_path.read_text()), str(index_path))
        return meta
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(location)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    client = _s3_client()
    try:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/meta.json")["Body"].read()
        listed = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for entry in page.get("Contents", []):
                listed[entry["Key"][len(prefix) + 1 :]] = entry["Size"]
        meta = json.loads(body)
        _check_storage(meta, location)
        for split in SPLITS:  # the indexes say which chunks there are: they must be the ones meta.json records
            name = f"{split}/index.json"
            data = client.get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
            if hashlib.sha256(data).hexdigest() != meta["file_hashes"].get(name):
                raise ShardStoreError(
                    f"{location}/{name} does not match meta.json's record: the shard set was changed after it was "
                    "prepared; upload it again (python -m cnnlab.data.shards upload)"
                )
            check_index(json.loads(data), f"{location}/{name}")
    except (ClientError, BotoCoreError) as err:
        raise _s3_error(err, location) from None
    for name, size in meta["file_sizes"].items():  # a truncated shard would make LitData wait for its missing bytes
        if listed.get(name) != size:
            found = "missing" if name not in listed else f"{listed[name]} bytes"
            raise ShardStoreError(
                f"{location}/{name} is {found} where meta.json records {size} bytes: the upload is incomplete or "
                "the shard was truncated; upload the shard set again"
            )
    return meta


def check_index(index: dict, where: str) -> None:
    """ShardStoreError unless every field of a split's index.json is stored in one of SAFE_FORMATS."""
    formats = (index.get("config") or {}).get("data_format") or []
    unsafe = [f for f in formats if str(f).split(":")[0] not in SAFE_FORMATS]
    if unsafe:
        raise ShardStoreError(
            f"{where}: fields stored as {unsafe}; cnnlab reads shard fields stored as {list(SAFE_FORMATS)} only "
            "(never pickles or file references): prepare the shard set with cnnlab-prepare"
        )


def _check_storage(meta: dict, location: str) -> None:
    if meta.get("storage") != STORAGE:
        stored = meta.get("storage", "arrays")
        raise ShardStoreError(f"{location} holds a prepared dataset of storage={stored}, not shards")


def upload(directory: Path, url: str) -> int:
    """Copy a local shard set to s3://bucket/prefix, meta.json last (a reader never sees half an upload as whole)."""
    from botocore.exceptions import BotoCoreError, ClientError

    directory = Path(directory)
    meta = read_shard_meta(str(directory))
    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    client = _s3_client()
    try:
        for name in [*meta["file_sizes"], "meta.json"]:
            client.upload_file(str(directory / name), bucket, f"{prefix}/{name}")
    except (ClientError, BotoCoreError) as err:
        raise _s3_error(err, url) from None
    return len(meta["file_sizes"]) + 1


# ---- reading ---------------------------------------------------------------------------------------------------
class ShardSet:
    """A shard set's place and its meta.json (checked against its files): what a run records as its data."""

    def __init__(self, location: str):
        self.directory = str(location)
        self.meta = read_shard_meta(self.directory)


class ShardSplit(StreamingDataset):
    """One split of a shard set: LitData's streaming dataset, each record decoded and cropped on read."""

    def __init__(self, location: str, split: str, decoder: "RecordDecoder", *, shuffle: bool, seed: int, cache: dict):
        remote = is_remote(location)
        super().__init__(
            input_dir=f"{location.rstrip('/')}/{split}" if remote else str(Path(location) / split),
            cache_dir=str(Path(cache["dir"]) / split) if remote else None,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
            max_cache_size=cache["limit"],
            storage_options=storage_options() if remote else None,
        )
        self.decoder = decoder
        # evaluation splits are dealt to ranks sample by sample (not in whole batches, LitData's way for training):
        # every rank gets a part, and together they evaluate each sample once
        self.by_sample = not shuffle

    def set_batch_size(self, batch_size: int) -> None:
        super().set_batch_size(1 if self.by_sample else batch_size)

    def __getitem__(self, index):
        record = super().__getitem__(index)
        position = getattr(index, "index", index)
        return self.decoder(record, seed=(self.seed, self.current_epoch, int(position)))


def shard_split(location: str, split: str, decoder: "RecordDecoder", *, shuffle: bool, seed: int, cache: dict):
    return ShardSplit(location, split, decoder, shuffle=shuffle, seed=seed, cache=cache)


class ShardItems:
    """A split as a map-style dataset of normalised items, like the array format's (previews, model examples)."""

    def __init__(self, split: ShardSplit, batches: "ShardBatches"):
        self.split, self.batches = split, batches

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int) -> dict:
        return {key: value[0] for key, value in self.__getitems__([position]).items()}

    def __getitems__(self, positions: Sequence[int]) -> dict:
        """The collated batch of these positions (split order), as the array format's `PreparedSplit` gives it."""
        return self.batches([self.split[int(p)] for p in positions])


class ShardBatches:
    """DataLoader collate for shard records: stack, then the batch augmentation and normalisation the
    array format uses (`cnnlab.data.datamodule.finish_batch`)."""

    def __init__(self, augment, normalize, boxes: bool, masks: bool):
        self.augment, self.normalize, self.boxes, self.masks = augment, normalize, boxes, masks

    def __call__(self, records: list[Optional[dict]]) -> dict:
        kept = [r for r in records if r is not None]
        if not kept:
            raise BadSampleError("every sample of a batch was bad (data.on_bad_sample=skip): the shards are damaged")
        images = np.stack([r["image"] for r in kept])
        labels = np.array([r["label"] for r in kept], np.int64)
        has_boxes, has_masks = self.boxes and kept[0]["box"] is not None, self.masks and kept[0]["mask"] is not None
        boxes = np.array([r["box"] for r in kept], np.float32).reshape(-1, 4) if has_boxes else None
        masks = np.stack([r["mask"] for r in kept]) if has_masks else None
        if self.augment is not None:  # drawn from (seed, epoch, the batch's first sample), as the array format's
            self.augment.set_random_seed(kept[0]["seed"])
        return finish_batch(images, labels, boxes, masks, self.augment, self.normalize)


class ShardLoader(StreamingDataLoader):
    """LitData's StreamingDataLoader, with a training loader's state taken at the batches training consumed.

    Lightning fetches batches ahead of the one it trains on, and LitData's state counts what the loader
    yielded: a checkpoint would then skip the fetched-ahead batches on resume. Each training batch carries its
    number (BATCH_NUMBER), the DataModule reports the one training took (`batches_trained`), and `state_dict`
    gives LitData's counters as they were after that batch. Training epochs also have the same number of
    batches on every DDP rank (see the module doc).
    """

    def __init__(self, *args, train: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.train, self.batches_trained, self._batches_in_epoch = train, 0, 0
        self._resumed_epoch_started = False
        self._counters: list[tuple[int, int]] = []  # LitData's (samples yielded, latest worker) after k batches

    def _steps_per_rank(self) -> list[int]:
        env = _DistributedEnv.detect()
        if env.world_size == 1:
            return [super().__len__()]
        self.dataset.get_len(self.num_workers, self.batch_size)  # creates LitData's shuffler
        steps = []
        for rank in range(env.world_size):
            other = _DistributedEnv(env.world_size, rank, env.num_nodes)
            length = self.dataset.shuffler.get_len(
                other, max(1, self.num_workers), self.batch_size, self.dataset.current_epoch
            )
            steps.append(math.ceil(length / self.batch_size))
        return steps

    def __len__(self) -> int:
        return max(self._steps_per_rank()) if self.train else self._evaluation_batches()

    def _evaluation_batches(self) -> int:
        """The batches this rank's workers yield for its part of an evaluation split (each worker's last may be
        partial): what Lightning must run, not fewer."""
        env = _DistributedEnv.detect()
        self.dataset.get_len(self.num_workers, self.batch_size)  # creates LitData's shuffler
        workers = max(1, self.num_workers)
        _, intervals = self.dataset.shuffler.get_chunks_and_intervals_per_workers(
            env, workers, 1, self.dataset.current_epoch
        )
        mine = intervals[env.global_rank * workers : (env.global_rank + 1) * workers]
        return sum(math.ceil(sum(end - start for _, start, end, *_ in worker) / self.batch_size) for worker in mine)

    def _counter(self) -> tuple[int, int]:
        return self._num_samples_yielded_streaming, self._latest_worker_idx

    def __iter__(self) -> Iterator[Any]:
        if not self.train:
            yield from super().__iter__()
            return
        if self._resumed_epoch_started:  # Lightning stops at the epoch's length: LitData never saw that epoch end
            self.restore, self._resumed_epoch_started = False, False
        target = self._batches_in_epoch = len(self)
        restoring = self.restore
        done = self.batches_trained if restoring else 0
        # LitData's counters after `done` batches: restored by load_state_dict, else zero (reset on first fetch)
        self._counters = [None] * done + [self._counter() if restoring else (0, 0)]
        last = None
        batches = super().__iter__()
        for batch in batches:
            done += 1
            self._counters.append(self._counter())
            self._resumed_epoch_started = restoring
            last = batch
            yield {**batch, BATCH_NUMBER: done}
        while done < target:  # this rank's part is shorter: zero-weight steps keep DDP's collectives in step
            done += 1
            self._counters.append(self._counter())
            filler = last if last is not None else self.collate_fn([self.dataset[0]])
            yield {**filler, PADDING: True, BATCH_NUMBER: done}

    def state_dict(self) -> dict:
        ours = {"cnnlab_batches_trained": self.batches_trained, "cnnlab_batches_in_epoch": self._batches_in_epoch}
        trained = self._counters[min(self.batches_trained, len(self._counters) - 1)] if self._counters else None
        if not self.train or trained is None:
            return {**super().state_dict(), **ours}
        now = self._counter()
        self._num_samples_yielded_streaming, self._latest_worker_idx = trained
        try:
            state = super().state_dict()
        finally:
            self._num_samples_yielded_streaming, self._latest_worker_idx = now
        return {**state, **ours}

    def load_state_dict(self, state: dict) -> None:
        trained, in_epoch = int(state.get("cnnlab_batches_trained", 0)), int(state.get("cnnlab_batches_in_epoch", 0))
        if trained >= in_epoch:  # taken at the end of an epoch: the next one starts afresh
            self.current_epoch, self.batches_trained = int(state["current_epoch"]), 0
            return
        self.batches_trained = trained
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith("cnnlab_")})


def shard_loader(dataset: ShardSplit, *, batch_size: int, num_workers: int, collate_fn, train: bool) -> ShardLoader:
    return ShardLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn, train=train)


def cache_settings(data_cfg, data_dir: str) -> dict:
    """Where streamed shards are cached, and its bound (data.shards.cache_dir, cache_limit)."""
    shards = data_cfg.shards
    directory = shards.cache_dir or str(Path(data_dir) / "shard-cache" / data_cfg.name)
    return {"dir": str(Path(directory).expanduser()), "limit": shards.cache_limit}


def main(argv: Optional[list[str]] = None) -> int:
    """python -m cnnlab.data.shards upload <shard dir> s3://bucket/prefix"""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m cnnlab.data.shards",
        description="Copy a prepared shard set (data.storage=shards) to S3-compatible storage, for "
        "data.shards.url=s3://bucket/prefix. The endpoint and credentials come from AWS_ENDPOINT_URL "
        "(or MLFLOW_S3_ENDPOINT_URL), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="upload a local shard set (meta.json last)")
    up.add_argument("directory", type=Path)
    up.add_argument("url", help="s3://bucket/prefix")
    args = parser.parse_args(argv)
    if not is_remote(args.url):
        parser.error(f"{args.url} is not an s3:// URL")
    try:
        count = upload(args.directory, args.url)
    except (ShardStoreError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 2
    print(f"uploaded {count} files to {args.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
