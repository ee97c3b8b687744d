"""A password in the tracking URI never lands in run.json, train.log, config.yaml, Hydra's saved
config, params, tags or artifacts: everything cnnlab writes is redacted (it connects with the real URI)."""

from __future__ import annotations

import json
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, cli_env, copy_project
from tests.hardening.servers import MlflowServer

pytestmark = pytest.mark.slow  # end to end: run by `make test-slow` and CI, not by `make test`

SECRET = "s3cret-Pa55"


@pytest.fixture
def server(tmp_path):
    running = MlflowServer(tmp_path / "server").start()
    yield running
    running.stop()


def test_credentials_in_the_uri_are_redacted_everywhere(server, tmp_path):
    root = copy_project(tmp_path / "project")
    out = root / "runs" / "one"
    uri = server.url.replace("http://", f"http://alice:{SECRET}@")
    command = [
        str(BIN / "cnnlab-train"),
        f"logger.tracking_uri={uri}",
        "trainer=debug",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.max_epochs=1",
        "logger.log_model=false",
        "logger.system_metrics=false",
        f"hydra.run.dir={out}",
    ]
    done = subprocess.run(command, cwd=root, env=cli_env(root), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".log", ".csv", ".txt"):
            assert SECRET not in path.read_text(), path
    record = json.loads((out / "run.json").read_text())
    assert record["tracking_uri"] == server.url.replace("http://", "http://***@")

    client = MlflowClient(server.url)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"  # the real URI was used to connect
    assert run.data.params["logger.tracking_uri"] == record["tracking_uri"]
    assert all(SECRET not in value for value in [*run.data.params.values(), *run.data.tags.values()])
    assert "***@" in run.data.tags["cnnlab.command"] and "***@" in run.data.tags["cnnlab.overrides"]
    for name in ("run.json", "config.yaml"):
        local = client.download_artifacts(run.info.run_id, name, str(tmp_path))
        assert SECRET not in open(local).read()
