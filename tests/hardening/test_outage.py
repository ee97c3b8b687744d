"""A tracking server that goes away mid-run: training goes on, its metrics reach the same run when the
server is back (or through cnnlab-sync), the stall is bounded, and a server away at the start fails
in seconds naming it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient

from cnnlab.config import ConfigError
from tests.conftest import BIN, cli_env, train_in_process
from tests.hardening.servers import MlflowServer, free_port

pytestmark = pytest.mark.slow  # end to end: run by `make test-slow` and CI, not by `make test`

SERVERS: dict[str, MlflowServer] = {}
EPOCHS = 3


class Outage(pl.Callback):
    """Stop the test's server after epoch `stop_after`; start it again after epoch `back_after` (-1: never)."""

    def __init__(self, server: str, stop_after: int, back_after: int = -1):
        self.server, self.stop_after, self.back_after = SERVERS[server], stop_after, back_after

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.stop_after:
            self.server.stop()
            trainer.logger.log_metrics({"outage/probe": 1.0}, step=trainer.global_step)  # something to send now
            time.sleep(3)  # the outbox tries (every 2 s) and finds the server away
        if trainer.current_epoch == self.back_after:
            self.server.start()


def train_with_server(tmp_path: Path, uri: str, *overrides: str) -> tuple[dict, Path]:
    out = tmp_path / "train"
    record, _ = train_in_process(
        [
            f"logger.tracking_uri={uri}",
            f"paths.data_dir={tmp_path / 'data'}",
            "trainer=debug",
            f"trainer.max_epochs={EPOCHS}",
            "trainer.limit_train_batches=4",
            "trainer.limit_val_batches=2",
            "trainer.log_every_n_steps=1",
            "logger.log_model=false",
            "logger.system_metrics=false",
            "callbacks.early_stopping=null",
            "augment.preview=false",
            *overrides,
        ],
        out,
    )
    return record, out


@pytest.fixture
def server(tmp_path):
    running = MlflowServer(tmp_path / "server").start()
    SERVERS["current"] = running
    yield running
    running.stop()
    SERVERS.pop("current", None)


def _val_steps(client: MlflowClient, run_id: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, "val/acc")]


def test_an_outage_mid_run_loses_nothing_once_the_server_is_back(server, tmp_path, caplog):
    outage = [
        "+callbacks.outage._target_=tests.hardening.test_outage.Outage",
        "+callbacks.outage.server=current",
        "+callbacks.outage.stop_after=0",
        "+callbacks.outage.back_after=1",
    ]
    record, out = train_with_server(tmp_path, server.url, *outage)
    assert record["status"] == "finished" and "sync" not in record
    assert {"metrics.json", "history.csv", "config.yaml"} <= {p.name for p in out.iterdir()}
    assert (out / "checkpoints" / "last.ckpt").is_file()
    client = MlflowClient(server.url)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert _val_steps(client, record["run_id"]) == [3, 7, 11]  # every epoch's point, on its step
    assert len(client.get_metric_history(record["run_id"], "train/loss_step")) == EPOCHS * 4
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "does not answer" in messages and "answers again" in messages
    assert not [r for r in caplog.records if r.getMessage().startswith("Retrying (")]  # urllib3's, per retry


def test_a_server_away_at_the_end_leaves_everything_for_cnnlab_sync(server, tmp_path):
    outage = [
        "+callbacks.outage._target_=tests.hardening.test_outage.Outage",
        "+callbacks.outage.server=current",
        "+callbacks.outage.stop_after=1",
    ]
    started = time.monotonic()
    record, out = train_with_server(tmp_path, server.url, *outage, "logger.unreachable_wait=2")
    assert time.monotonic() - started < 120  # bounded: no minutes of retries per call
    assert record["status"] == "finished" and record["sync"] == "pending"
    pending = json.loads((out / "mlflow_pending.json").read_text())
    assert pending["status"] == "FINISHED" and not pending["outputs_logged"] and pending["metrics"]

    server.start()
    client = MlflowClient(server.url)
    assert client.get_run(record["run_id"]).info.status == "RUNNING"
    env = cli_env(tmp_path, MLFLOW_TRACKING_URI=server.url)
    done = subprocess.run([str(BIN / "cnnlab-sync"), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and _val_steps(client, record["run_id"]) == [3, 7, 11]
    assert {a.path for a in client.list_artifacts(record["run_id"])} >= {"config.yaml", "run.json", "history.csv"}
    assert not (out / "mlflow_pending.json").exists() and "sync" not in json.loads((out / "run.json").read_text())
    again = subprocess.run([str(BIN / "cnnlab-sync"), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "nothing to sync" in again.stderr


def test_a_server_away_at_the_start_fails_in_seconds_naming_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"the MLflow tracking server at {url} does not answer"):
        train_with_server(tmp_path, url)
    assert time.monotonic() - started < 15
    assert not (tmp_path / "data").exists()  # nothing was prepared
