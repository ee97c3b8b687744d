"""A password in the tracking URI never lands in run.json, train.log, config.yaml, Hydra's saved
config, params, tags, artifacts or what the command prints, on a successful run, a run that fails at the start
and one that crashes after its run opened: everything cnnlab writes is redacted (it connects with the real URI)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cnnlab.redaction import redact
from tests.conftest import BIN, REPO, call_in_process, cli_env, copy_project
from tests.hardening.servers import MlflowServer

SECRET = "s3cret-Pa55"

REDACTED = [
    ("http://alice:s3cret@host:5000/", "http://alice:***@host:5000/"),
    ("postgresql://mlflow:s3cret@db/mlflow", "postgresql://mlflow:***@db/mlflow"),
    ("https://ghp_tok3n@example.com/x", "https://***@example.com/x"),
    ("postgresql://db/mlflow?user=a&password=s3cret", "postgresql://db/mlflow?user=a&password=***"),
    (
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=abc123&X-Amz-Date=1",
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=1",
    ),
    ("https://acct.blob.core.windows.net/c?sv=2020&sig=s3cret", "https://acct.blob.core.windows.net/c?sv=2020&sig=***"),
    ("['logger.tracking_uri=http://alice:s3cret@127.0.0.1:9']", "['logger.tracking_uri=http://alice:***@127.0.0.1:9']"),
    ("sqlite:////tmp/x/mlflow.db?timeout=60", "sqlite:////tmp/x/mlflow.db?timeout=60"),  # nothing secret: unchanged
]


@pytest.mark.parametrize("text, expected", REDACTED, ids=[e for _, e in REDACTED])
def test_redaction_keeps_the_user_and_hides_the_secret(text, expected):
    assert redact(text) == expected


def _leaks(directory: Path, *outputs: str) -> list[str]:
    """Every file under `directory` (Hydra's .hydra/ included), and each output, that holds SECRET."""
    found = [str(p) for p in directory.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    return found + [f"output {i}" for i, text in enumerate(outputs) if SECRET in text]


def test_a_run_that_fails_at_the_start_leaves_no_secret(project, tmp_path):
    out = tmp_path / "run"
    done = call_in_process(
        "cnnlab-train",
        ["debug=fast", f"logger.tracking_uri=http://alice:{SECRET}@127.0.0.1:9", f"hydra.run.dir={out}"],
        project,
    )
    assert done.returncode == 2 and "does not answer" in done.stderr
    assert (out / ".hydra" / "overrides.yaml").is_file()  # Hydra wrote its files, redacted
    assert "alice:***@127.0.0.1:9" in (out / ".hydra" / "overrides.yaml").read_text()
    assert not _leaks(out, done.stdout, done.stderr)


@pytest.fixture
def server(tmp_path):
    running = MlflowServer(tmp_path / "server").start()
    yield running
    running.stop()


def _short_run_with_a_password(server, out, *extra: str) -> list[str]:
    """cnnlab-train for 3 steps into `out`, logging to `server` through a URI that carries a password."""
    uri = server.url.replace("http://", f"http://alice:{SECRET}@")
    return [
        str(BIN / "cnnlab-train"),
        f"logger.tracking_uri={uri}",
        "trainer=debug",
        "trainer.limit_train_batches=3",
        "trainer.max_epochs=1",
        "logger.log_model=false",
        "logger.system_metrics=false",
        *extra,
        f"hydra.run.dir={out}",
    ]


@pytest.mark.slow  # end to end with a server: run by `make test-slow` and CI, not by `make test`
def test_credentials_in_the_uri_are_redacted_everywhere(server, tmp_path):
    root = copy_project(tmp_path / "project")
    out = root / "runs" / "one"
    command = _short_run_with_a_password(server, out, "trainer.limit_val_batches=1")
    done = subprocess.run(command, cwd=root, env=cli_env(root), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".log", ".csv", ".txt"):
            assert SECRET not in path.read_text(), path
    record = json.loads((out / "run.json").read_text())
    assert record["tracking_uri"] == server.url.replace("http://", "http://alice:***@")
    assert not _leaks(out)

    client = MlflowClient(server.url)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"  # the real URI was used to connect
    assert run.data.params["logger.tracking_uri"] == record["tracking_uri"]
    assert all(SECRET not in value for value in [*run.data.params.values(), *run.data.tags.values()])
    assert "alice:***@" in run.data.tags["cnnlab.command"] and "alice:***@" in run.data.tags["cnnlab.overrides"]
    for name in ("run.json", "config.yaml"):
        local = client.download_artifacts(run.info.run_id, name, str(tmp_path))
        assert SECRET not in open(local).read()


@pytest.mark.slow  # end to end with a server
def test_a_crash_after_the_run_opened_prints_and_leaves_no_secret(server, tmp_path):
    root = copy_project(tmp_path / "project")
    out = root / "runs" / "crash"
    command = _short_run_with_a_password(
        server, out, "+callbacks.crash._target_=tests.crash.RaiseAtStep", "+callbacks.crash.step=1"
    )
    env = cli_env(root, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))  # tests.crash
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "crash at step 1" in done.stderr, done.stderr[-3000:]
    assert "Error executing job with overrides" in done.stderr and "alice:***@" in done.stderr
    assert not _leaks(out, done.stdout, done.stderr)
    record = json.loads((out / "run.json").read_text())
    assert MlflowClient(server.url).get_run(record["run_id"]).info.status == "FAILED"
