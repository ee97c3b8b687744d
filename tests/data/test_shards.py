"""data.storage=shards: prepare to LitData shards and back, streaming order across ranks, mid-epoch resume,
training from them, and the bad inputs (a changed, truncated or unsafe shard set)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import QUICK, call_in_process, copy_project
from tests.data.data_writers import image_array, write_image

from cnnlab.data.prepared import PreparedDataChanged
from cnnlab.data.preprocess import PADDING
from cnnlab.data.shards import (
    SPLITS,
    RecordDecoder,
    ShardBatches,
    ShardStoreError,
    read_shard_meta,
    shard_loader,
    shard_split,
)
from cnnlab.data.sources.image_folder import ImageFolderSource

CLASSES = ("cat", "dog", "fox")


def write_folder(root: Path, per_class: int = 12, seed: int = 0) -> dict[str, bytes]:
    """An ImageFolder of JPEGs at varied sizes (photo-like: larger than the training size); name -> file bytes."""
    rng = np.random.default_rng(seed)
    files = {}
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            height, width = (int(v) for v in rng.integers(40, 90, 2))
            image = image_array(height, width, seed=seed * 1000 + c * 100 + i)
            image[..., c] = image[..., c] // 3  # a class signal the network can learn
            path = write_image(root / name / f"{i:03d}.jpg", image, quality=90)
            files[str(path)] = path.read_bytes()
    return files


def prepare_shards(root: Path, out: Path, **settings):
    from cnnlab.data.prepare import build_shard_dataset

    options = dict(
        image_size=16,
        channels=3,
        val_fraction=0.1,
        test_fraction=0.2,
        seed=0,
        on_bad_sample="error",
        samples_per_shard=5,
        max_side=None,
        workers=1,
    )
    options.update(settings)
    return build_shard_dataset(ImageFolderSource(str(root)), out, meta={"name": "folder"}, **options)


def raw_records(location: Path, split: str) -> list[dict]:
    from litdata import StreamingDataset

    dataset = StreamingDataset(str(location / split))
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    files = write_folder(root)
    return root, files


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "set"
    return out, prepare_shards(folder[0], out)


def test_every_sample_is_stored_as_its_source_bytes_with_the_array_formats_facts(folder, shards):
    root, files = folder
    out, meta = shards
    stored = {}
    for split in SPLITS:
        for record in raw_records(out, split):
            name = np.asarray(record["name"]).tobytes().decode()
            assert name not in stored, f"{name} stored twice"
            stored[name] = (split, np.asarray(record["image"]).tobytes(), int(record["label"]))
    assert set(stored) == set(files)  # every image once, none dropped
    for name, (_split, data, label) in stored.items():
        assert data == files[name]  # the original JPEG bytes, not a re-encoding
        assert CLASSES[label] == Path(name).parent.name
    assert meta["classes"] == list(CLASSES) and meta["storage"] == "shards"
    assert meta["split_sizes"] == {s: sum(1 for v in stored.values() if v[0] == s) for s in SPLITS}
    assert sum(meta["split_sizes"].values()) == meta["num_samples"] == len(files)
    # 5 samples a shard: ceil(n / 5) chunk files per split, each listed with its hash and size
    for split in SPLITS:
        assert len(meta["shards"][split]) == -(-meta["split_sizes"][split] // 5)
        for name in meta["shards"][split]:
            assert meta["file_hashes"][name] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert json.loads((out / "meta.json").read_text()) == meta


def test_statistics_and_splits_match_the_array_format(folder, shards, tmp_path):
    from cnnlab.data.prepare import build_prepared_dataset

    arrays = build_prepared_dataset(
        ImageFolderSource(str(folder[0])),
        tmp_path / "arrays",
        name="folder",
        image_size=16,
        channels=3,
        val_fraction=0.1,
        test_fraction=0.2,
        seed=0,
        workers=1,
    )
    meta = shards[1]
    assert meta["split_sizes"] == arrays["split_sizes"]
    assert meta["mean"] == pytest.approx(arrays["mean"], abs=1e-9)
    assert meta["std"] == pytest.approx(arrays["std"], abs=1e-9)


def test_preparing_again_gives_the_same_shards_and_one_changed_image_changes_one_shard(folder, tmp_path):
    root = tmp_path / "folder"
    files = write_folder(root)
    first = prepare_shards(root, tmp_path / "a")
    again = prepare_shards(root, tmp_path / "b")
    assert again["content_hash"] == first["content_hash"]  # deterministic: the same data, the same identity

    changed = sorted(files)[7]
    write_image(Path(changed), image_array(50, 60, seed=999), quality=90)
    after = prepare_shards(root, tmp_path / "c")
    differing = sorted(n for n in first["file_hashes"] if first["file_hashes"][n] != after["file_hashes"].get(n))
    chunks = [n for n in differing if "/chunk-" in n]
    assert len(chunks) == 1, differing  # the changed image's shard, and the index that records its size
    assert set(differing) <= {chunks[0], f"{chunks[0].split('/')[0]}/index.json"}
    assert after["content_hash"] != first["content_hash"]


def test_max_side_re_encodes_only_larger_images(folder, tmp_path):
    prepare_shards(folder[0], tmp_path / "small", max_side=48)
    for split in SPLITS:
        for record in raw_records(tmp_path / "small", split):
            import cv2

            image = cv2.imdecode(np.asarray(record["image"]), cv2.IMREAD_COLOR)
            name = np.asarray(record["name"]).tobytes().decode()
            original = cv2.imread(name)
            assert max(image.shape[:2]) <= 48
            if max(original.shape[:2]) <= 48:  # small enough: its own bytes
                assert np.asarray(record["image"]).tobytes() == Path(name).read_bytes()


def _loader(location, world_size, rank, monkeypatch, num_workers=0, seed=5, batch_size=4):
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    monkeypatch.setenv("GLOBAL_RANK", str(rank))
    dataset = shard_split(
        str(location), "train", RecordDecoder(16, 3, None, "error"), shuffle=True, seed=seed, cache={"limit": "1GB"}
    )
    return shard_loader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=lambda records: {"names": [r["name"] for r in records]},
        train=True,
    )


def _epochs(loader, count: int) -> list[tuple[int, list[list[str]]]]:
    """(steps, real batches' names) of `count` epochs."""
    out = []
    for _ in range(count):
        batches = list(loader)
        out.append((len(batches), [b["names"] for b in batches if not b.get(PADDING)]))
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_ranks_see_every_sample_exactly_once_in_the_same_number_of_steps(shards, monkeypatch, num_workers):
    out, meta = shards
    ranks = [_epochs(_loader(out, 2, rank, monkeypatch, num_workers), 2) for rank in (0, 1)]
    orders = []
    for epoch in range(2):
        steps = {ranks[r][epoch][0] for r in (0, 1)}
        assert len(steps) == 1  # DDP's collectives stay in step
        seen = [name for r in (0, 1) for batch in ranks[r][epoch][1] for name in batch]
        assert len(seen) == len(set(seen)) == meta["split_sizes"]["train"]  # each exactly once, none dropped
        orders.append(seen)
    assert orders[0] != orders[1]  # a new order each epoch
    again = [_epochs(_loader(out, 2, rank, monkeypatch, num_workers), 2) for rank in (0, 1)]
    assert again == ranks  # a function of (seed, epoch)


def test_padding_batches_weigh_nothing_in_training():
    import torch

    from cnnlab.tasks.base import _skipping_padding

    class Task:
        _padding_step = False

        def step(self, batch, batch_idx):
            self.seen_padding = self._padding_step
            return batch["x"].sum()

    wrapped = _skipping_padding(Task.step)
    task = Task()
    assert float(wrapped(task, {"x": torch.ones(3)}, 0)) == 3.0 and not task.seen_padding
    assert float(wrapped(task, {"x": torch.ones(3), PADDING: True}, 0)) == 0.0 and task.seen_padding
    assert task._padding_step is False


def test_a_loader_resumed_mid_epoch_yields_the_rest_of_that_epoch_then_the_next(shards, monkeypatch):
    out, _ = shards
    straight = _loader(out, 1, 0, monkeypatch)
    reference = _epochs(straight, 2)
    first = _loader(out, 1, 0, monkeypatch)
    taken = []
    for batch in first:
        taken.append(batch["names"])
        first.batches_trained = batch["cnnlab_batch_number"]  # what the DataModule reports
        if len(taken) == 2:
            break
    state = first.state_dict()
    resumed = _loader(out, 1, 0, monkeypatch)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # as a checkpoint stores it
    rest = _epochs(resumed, 2)
    assert taken + rest[0][1] == reference[0][1]  # the samples not yet seen, in the same order
    assert rest[1][1] == reference[1][1]  # then the next epoch as the uninterrupted run has it


def test_an_end_of_epoch_state_starts_the_next_epoch(shards, monkeypatch):
    out, _ = shards
    reference = _epochs(_loader(out, 1, 0, monkeypatch), 2)
    first = _loader(out, 1, 0, monkeypatch)
    for batch in first:
        first.batches_trained = batch["cnnlab_batch_number"]
    resumed = _loader(out, 1, 0, monkeypatch)
    resumed.load_state_dict(first.state_dict())
    assert _epochs(resumed, 1)[0][1] == reference[1][1]


def test_a_changed_shard_is_named_before_training(shards, tmp_path):
    import shutil

    out = tmp_path / "set"
    shutil.copytree(shards[0], out)
    shard = out / shards[1]["shards"]["train"][1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PreparedDataChanged, match=str(shard)):
        read_shard_meta(str(out))
    shard.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(PreparedDataChanged, match=str(shard)):
        read_shard_meta(str(out))


def test_a_shard_set_storing_pickles_is_refused(shards, tmp_path):
    import shutil

    out = tmp_path / "set"
    shutil.copytree(shards[0], out)
    index_path = out / "train" / "index.json"
    index = json.loads(index_path.read_text())
    index["config"]["data_format"][1] = "pickle"
    index_path.write_text(json.dumps(index))
    meta = json.loads((out / "meta.json").read_text())  # a consistent but hostile set: hashes updated too
    meta["file_hashes"]["train/index.json"] = hashlib.sha256(index_path.read_bytes()).hexdigest()
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ShardStoreError, match="pickle"):
        read_shard_meta(str(out))


def test_a_sample_that_does_not_decode_follows_on_bad_sample():
    decoder = RecordDecoder(16, 3, None, "error")
    record = {
        "image": np.frombuffer(b"\xff\xd8 not a jpeg", np.uint8),
        "label": 0,
        "name": np.frombuffer(b"x.jpg", np.uint8),
    }
    from cnnlab.data.sources.base import BadSampleError

    with pytest.raises(BadSampleError, match=r"x\.jpg.*data\.on_bad_sample=error"):
        decoder(record, seed=(0, 1, 2))
    assert RecordDecoder(16, 3, None, "skip")(record, seed=(0, 1, 2)) is None
    normalize = lambda images: images  # noqa: E731
    batch = ShardBatches(None, normalize, False, False)
    good = RecordDecoder(16, 3, None, "skip")
    image = np.frombuffer(__import__("cv2").imencode(".png", image_array(20, 20))[1].tobytes(), np.uint8)
    kept = batch([None, good({"image": image, "label": 2, "name": np.frombuffer(b"ok.png", np.uint8)}, (0, 1, 3))])
    assert kept["label"].tolist() == [2]  # the bad sample is left out, the batch goes on


def test_random_resized_crop_is_a_function_of_seed_epoch_and_sample(folder, shards):
    out, _ = shards
    record = raw_records(out, "train")[0]
    decoder = RecordDecoder(16, 3, [0.2, 1.0], "error")
    a, b, c = (decoder(record, seed=s)["image"] for s in [(1, 1, 0), (1, 1, 0), (1, 2, 0)])
    assert a.shape == (16, 16, 3) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_training_from_local_shards_logs_the_shard_set(folder, tmp_path):
    root = copy_project(tmp_path / "project")
    out = tmp_path / "run"
    data = [
        "data=image_folder",
        f"data.root={folder[0]}",
        "data.storage=shards",
        "data.shards.samples_per_shard=8",
        "data.image_size=16",
        "data.batch_size=8",
        "model=lenet5",
    ]
    done = call_in_process("cnnlab-train", [*QUICK, *data, f"hydra.run.dir={out}"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.storage"] == "shards"
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    profile = json.loads(dataset.profile)
    prepared = root / "data" / "prepared" / "image_folder-16"
    meta = json.loads((prepared / "meta.json").read_text())
    assert profile["storage"] == "shards" and profile["content_hash"] == meta["content_hash"]
    assert profile["shards"] == {s: len(meta["shards"][s]) for s in SPLITS}
    shard_list = json.loads(
        Path(client.download_artifacts(run.info.run_id, "data_shards.json", str(tmp_path))).read_text()
    )
    assert shard_list["file_hashes"] == meta["file_hashes"]
    assert "val/acc" in run.data.metrics and run.data.metrics["train/acc"] >= 0
    # evaluation and explain read the test split from the shards too
    evaluated = call_in_process("cnnlab-evaluate", [f"evaluate.train_dir={out}"], root)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert 0 <= metrics["test/acc"] <= 1
    explained = call_in_process("cnnlab-explain", [f"run={out}", "num_images=2", "pictures=[cam]"], root)
    assert explained.returncode == 0, explained.stderr[-3000:]
    assert list((root / "explain" / "cam").glob("gradcam_*.png"))  # output_dir: explain/ where it ran


def test_shard_settings_need_shard_storage(compose_config):
    from cnnlab.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"data\.shards\.max_side=64 applies to data\.storage=shards"):
        validate_config(compose_config("data.shards.max_side=64"))
    with pytest.raises(ConfigError, match=r"random_resized_crop=\[0\.5, 2\.0\] is not valid"):
        validate_config(compose_config("data.storage=shards", "data.shards.random_resized_crop=[0.5,2.0]"))
    with pytest.raises(ConfigError, match=r"data\.shards\.url=/tmp/x is not an s3:// URL"):
        validate_config(compose_config("data.storage=shards", "data.shards.url=/tmp/x"))


def test_a_crop_with_boxes_is_refused_before_any_run(tmp_path):
    root = copy_project(tmp_path / "project")
    done = call_in_process(
        "cnnlab-train",
        [*QUICK, "task=localization", "data=shapes", "data.storage=shards", "data.shards.random_resized_crop=[0.5,1]"],
        root,
    )
    assert done.returncode != 0
    assert "random_resized_crop with task=localization" in done.stderr
    assert not (root / "mlflow.db").exists() or not MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_experiments()]
    )


@pytest.mark.parametrize("task", ["localization", "segmentation"])
def test_boxes_and_masks_train_from_shards(task, tmp_path):
    root = copy_project(tmp_path / "project")
    out = tmp_path / "run"
    data = ["data=shapes", "data.source.num_samples=60", "data.storage=shards", "data.image_size=32", "augment=none"]
    head = ["task.module.variant=fcn32s"] if task == "segmentation" else []  # LeNet-5 has 2 feature maps
    done = call_in_process("cnnlab-train", [*QUICK, f"task={task}", *head, *data, f"hydra.run.dir={out}"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    run = MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert ("val/box_iou" if task == "localization" else "val/miou") in run.data.metrics
    assert os.path.isdir(root / "data" / "prepared")
