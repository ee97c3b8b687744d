"""data.storage=shards end to end: two-process DDP sees every sample once, a run killed mid-epoch resumes to the
uninterrupted result, shards stream from an S3 server (moto, on 127.0.0.1) through a bounded cache, and a bucket
that is missing, refuses the credentials or holds a truncated shard stops the run before it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import BIN, REPO, call_in_process, cli_env, copy_project
from tests.data.shard_probe import read_ranks
from tests.team.services import S3Server

pytestmark = pytest.mark.slow

# the embedded digits as shards (PNG-encoded: the reader decodes arrays), whole epochs, nothing random in the input
DIGITS = (
    "data=digits",
    "data.storage=shards",
    "data.shards.samples_per_shard=50",
    "augment=none",
    "trainer.enable_progress_bar=false",
    "logger.log_model=false",
    "logger.system_metrics=false",
    "experiment=none",
    "data.batch_size=64",
)


def _process(project: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """cnnlab-train as a process, with the tests' callbacks importable."""
    env = {**cli_env(project, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)])), **(env or {})}
    return subprocess.run(
        [str(BIN / "cnnlab-train"), *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout
    )


def _probe(directory: Path) -> tuple[str, ...]:
    return ("+callbacks.probe._target_=tests.data.shard_probe.RecordSamples", f"+callbacks.probe.directory={directory}")


def test_two_ddp_ranks_train_on_every_sample_once_per_epoch(tmp_path):
    project = copy_project(tmp_path / "project")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    args = (*DIGITS, "trainer.max_epochs=2", "trainer.accelerator=cpu")
    done = call_in_process(
        "cnnlab-train", [*args, "trainer=cpu", *_probe(single), "hydra.run.dir=runs/single"], project
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = _process(project, *args, "trainer=ddp", "trainer.devices=2", *_probe(ddp), "hydra.run.dir=runs/ddp")
    assert done.returncode == 0, done.stderr[-4000:]
    (reference,) = read_ranks(single)
    ranks = read_ranks(ddp)
    assert len(ranks) == 2
    for epoch in ("0", "1"):
        assert ranks[0][epoch]["steps"] == ranks[1][epoch]["steps"]  # the same number of steps: no rank waits
        together = Counter(ranks[0][epoch]["samples"]) + Counter(ranks[1][epoch]["samples"])
        assert together == Counter(reference[epoch]["samples"])  # every sample once, none twice, none dropped
        assert not set(ranks[0][epoch]["samples"]) & set(ranks[1][epoch]["samples"])
    assert ranks[0]["0"]["samples"] != ranks[0]["1"]["samples"]  # a new order each epoch
    run_id = json.loads((project / "runs" / "ddp" / "run.json").read_text())["run_id"]
    run = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"


def test_a_run_killed_mid_epoch_resumes_with_the_samples_not_yet_seen(tmp_path):
    project = copy_project(tmp_path / "project")
    # 20 steps an epoch; last.ckpt after every step (mid-epoch checkpoints are what a streamed dataset resumes from)
    args = (*DIGITS, "trainer=cpu", "trainer.max_epochs=2", "+callbacks.last_checkpoint.every_n_train_steps=1")
    straight = call_in_process("cnnlab-train", [*args, "hydra.run.dir=runs/straight"], project)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _process(
        project,
        *args,
        "+callbacks.kill._target_=tests.crash.KillAtStep",
        "+callbacks.kill.step=27",
        "hydra.run.dir=runs/killed",
    )
    assert killed.returncode == -9
    import torch

    checkpoint = torch.load(project / "runs/killed/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    loader_state = checkpoint["CNNDataModule"]["shard_loader"]  # the DataModule's state: where the stream stood
    assert checkpoint["global_step"] == 27 and loader_state["cnnlab_batches_trained"] == 7  # epoch 2, batch 7
    resumed = _process(project, *args, "resume=true", "hydra.run.dir=runs/killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # every number of every epoch as the uninterrupted run has it: the same batches, in the same order
    assert (project / "runs/killed/history.csv").read_text() == (project / "runs/straight/history.csv").read_text()


# ---- S3 ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3():
    server = S3Server().start()
    server.client().create_bucket(Bucket="shards")
    yield server
    server.stop()


def _s3_env(server: S3Server, **extra: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        **extra,
    }


@pytest.fixture(scope="module")
def uploaded(s3, tmp_path_factory):
    """The digits as shards, prepared in a project and uploaded to s3://shards/digits."""
    project = copy_project(tmp_path_factory.mktemp("s3") / "project")
    prepared = project / "data" / "prepared" / "digits-shards"
    done = call_in_process("cnnlab-prepare", [*DIGITS[:3], f"data.prepared_dir={prepared}"], project)
    assert done.returncode == 0, done.stderr[-3000:]
    upload = subprocess.run(
        [sys.executable, "-m", "cnnlab.data.shards", "upload", str(prepared), "s3://shards/digits"],
        env={**os.environ, **_s3_env(s3)},
        capture_output=True,
        text=True,
    )
    assert upload.returncode == 0, upload.stdout + upload.stderr
    meta = json.loads((prepared / "meta.json").read_text())
    assert upload.stdout.strip() == f"uploaded {len(meta['file_sizes']) + 1} files to s3://shards/digits"
    return project, meta


def test_training_streams_the_shards_from_s3(s3, uploaded, tmp_path):
    project, meta = uploaded
    cache = tmp_path / "cache"
    args = (*DIGITS, "trainer=cpu", "trainer.max_epochs=1", "data.shards.url=s3://shards/digits")
    done = _process(project, *args, f"data.shards.cache_dir={cache}", "hydra.run.dir=runs/s3", env=_s3_env(s3))
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = json.loads((project / "runs/s3/run.json").read_text())["run_id"]
    run = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["cnnlab.data_hash"] == meta["content_hash"]
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert json.loads(dataset.source)["uri"] == "s3://shards/digits"
    assert json.loads((project / "runs/s3/metrics.json").read_text())  # trained and evaluated from the stream
    cached = sorted(p.name for p in cache.rglob("chunk-*.bin"))
    assert cached  # the chunks came through the cache, not from the prepared folder


def test_the_cache_stays_bounded_while_streaming_more_than_it_holds(s3, uploaded, tmp_path, monkeypatch):
    from cnnlab.data.shards import RecordDecoder, shard_loader, shard_split

    _, meta = uploaded
    for key, value in _s3_env(s3).items():
        monkeypatch.setenv(key, value)
    chunk_bytes = [size for name, size in meta["file_sizes"].items() if name.startswith("train/chunk-")]
    limit = 3 * max(chunk_bytes)
    cache = tmp_path / "cache"
    dataset = shard_split(
        "s3://shards/digits",
        "train",
        RecordDecoder(32, 1, None, "error"),
        shuffle=True,
        seed=0,
        cache={"dir": str(cache), "limit": limit},
    )
    loader = shard_loader(dataset, batch_size=64, num_workers=1, collate_fn=lambda r: {"n": len(r)}, train=True)
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            size = sum(p.stat().st_size for p in cache.rglob("chunk-*.bin") if p.is_file())
            peak[0] = max(peak[0], size)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        seen = sum(batch["n"] for batch in loader)
    finally:
        stop.set()
        watcher.join()
    assert seen == meta["split_sizes"]["train"]  # every sample streamed
    assert sum(chunk_bytes) > 3 * limit  # the dataset is well beyond the cache
    # the limit, plus what one worker reads and pre-fetches (LitData's max_pre_download: 2 chunks)
    assert peak[0] <= limit + 3 * max(chunk_bytes), (peak[0], limit)


def test_a_missing_bucket_refused_credentials_or_truncated_shard_stop_before_any_run(s3, uploaded, tmp_path):
    project, meta = uploaded
    args = (*DIGITS, "trainer=cpu", "trainer.max_epochs=1", f"data.shards.cache_dir={tmp_path / 'cache'}")
    missing = _process(project, *args, "data.shards.url=s3://no-such-bucket/digits", env=_s3_env(s3))
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1] == (
        "error: s3://no-such-bucket/digits: no such bucket or no shard set there (meta.json not found)"
    )

    strict = S3Server(enforce_access_after=1).start()  # checks credentials after its readiness probe
    try:
        refused = _process(project, *args, "data.shards.url=s3://shards/digits", env=_s3_env(strict))
    finally:
        strict.stop()
    assert refused.returncode != 0
    assert "refused the credentials (InvalidAccessKeyId)" in refused.stderr.strip().splitlines()[-1]

    client = s3.client()
    name = meta["shards"]["train"][2]
    body = client.get_object(Bucket="shards", Key=f"digits/{name}")["Body"].read()
    client.put_object(Bucket="shards", Key=f"digits/{name}", Body=body[: len(body) // 2])
    try:
        truncated = _process(project, *args, "data.shards.url=s3://shards/digits", env=_s3_env(s3))
    finally:
        client.put_object(Bucket="shards", Key=f"digits/{name}", Body=body)
    assert truncated.returncode != 0
    assert f"s3://shards/digits/{name} is {len(body) // 2} bytes where meta.json records {len(body)} bytes" in (
        truncated.stderr
    )
    assert "Traceback" not in missing.stderr + refused.stderr + truncated.stderr
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r for r in runs if r.info.status == "RUNNING"] == []  # no run was opened, none left RUNNING


def test_a_crash_while_streaming_from_s3_ends_the_process_and_fails_the_run(s3, uploaded, tmp_path):
    project, _ = uploaded
    args = (*DIGITS, "trainer=cpu", "trainer.max_epochs=2", "data.shards.url=s3://shards/digits", "data.num_workers=1")
    crashed = _process(
        project,
        *args,
        f"data.shards.cache_dir={tmp_path / 'cache'}",
        "+callbacks.crash._target_=tests.crash.RaiseAtStep",
        "+callbacks.crash.step=5",
        "hydra.run.dir=runs/crash",
        env=_s3_env(s3),
        timeout=180,  # LitData's download threads must not keep a failed process alive
    )
    assert crashed.returncode == 1
    run_id = json.loads((project / "runs/crash/run.json").read_text())["run_id"]
    assert MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(run_id).info.status == "FAILED"


def test_shards_are_a_dvc_output_and_one_changed_image_pushes_one_shard(s3, tmp_path):
    import hashlib

    from tests.conftest import dvc_project
    from tests.data.test_shards import write_folder

    overrides = "data=image_folder data.root=data/raw/folder data.storage=shards data.shards.samples_per_shard=5"
    root = dvc_project(tmp_path / "repo", lambda params: params.update(overrides=overrides))
    files = write_folder(root / "data" / "raw" / "folder")
    s3.client().create_bucket(Bucket="dvc-shards")
    env = {**cli_env(root), "DVC_NO_ANALYTICS": "1", **_s3_env(s3)}

    def dvc(*args: str) -> str:
        done = subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    def pushed() -> set[str]:
        listing = s3.client().list_objects_v2(Bucket="dvc-shards").get("Contents", [])
        return {o["Key"] for o in listing}

    dvc("remote", "add", "-d", "team", "s3://dvc-shards/cache")
    dvc("remote", "modify", "team", "endpointurl", s3.url)
    dvc("repro", "prepare")
    prepared = root / "data/prepared/pipeline"
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["storage"] == "shards" and meta["num_samples"] == len(files)
    dvc("push")
    first = pushed()
    assert len(first) == len(meta["file_sizes"]) + 2  # each file (meta.json too) and the directory's manifest

    changed = sorted(files)[4]  # one image, edited in place
    from tests.data.data_writers import image_array, write_image

    write_image(Path(changed), image_array(70, 50, seed=4242), quality=90)
    dvc("repro", "prepare")
    after = json.loads((prepared / "meta.json").read_text())
    dvc("push")
    new = pushed() - first
    changed_files = [n for n in after["file_hashes"] if after["file_hashes"][n] != meta["file_hashes"].get(n)]
    chunks = [n for n in changed_files if "/chunk-" in n]
    assert len(chunks) == 1  # the edited image's shard; the others are the same bytes
    md5 = hashlib.md5((prepared / chunks[0]).read_bytes()).hexdigest()
    assert any(key.endswith(md5[2:]) for key in new)  # uploaded
    # that shard, its split's index, meta.json and the directory manifest: nothing else goes up again
    assert len(new) == len(changed_files) + 2, (sorted(new), changed_files)
