"""Where runs go: the embedded SQLite file by default, a real tracking server when the env says so."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from cnnlab.paths import default_tracking_uri
from cnnlab.tracking.store import resolve_tracking_uri
from tests.conftest import BIN, QUICK, call_in_process, copy_project


def test_default_uri_is_an_absolute_sqlite_file_at_the_project_root(monkeypatch, tmp_path):
    root = copy_project(tmp_path / "proj")
    (root / "deep" / "er").mkdir(parents=True)
    monkeypatch.delenv("CNNLAB_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(root / "deep" / "er")  # anchored at the root, whatever the cwd
    assert default_tracking_uri() == f"sqlite:///{root.resolve()}/mlflow.db?timeout=60"
    assert resolve_tracking_uri() == default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri() == "http://127.0.0.1:1"
    assert resolve_tracking_uri("sqlite:////x.db") == "sqlite:////x.db"  # logger.tracking_uri wins


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with its own store, stopped after the tests."""
    home = tmp_path_factory.mktemp("server")
    port = _free_port()
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{home / 'server.db'}",
            "--artifacts-destination",
            str(home / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail("mlflow server exited at start-up")
            time.sleep(0.5)
    else:
        pytest.fail("mlflow server did not answer in 120 s")
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_environment_uri_sends_the_run_to_the_server(tracking_server, tmp_path):
    root = copy_project(tmp_path / "proj")
    out = root / "run"
    done = call_in_process("cnnlab-train", [*QUICK, f"hydra.run.dir={out}"], root, MLFLOW_TRACKING_URI=tracking_server)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    run = MlflowClient(tracking_server).get_run(run_id)
    assert run.info.status == "FINISHED" and "val/acc" in run.data.metrics
    artifacts = {a.path for a in MlflowClient(tracking_server).list_artifacts(run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts
    assert not (root / "mlflow.db").exists() and not (root / "mlruns").exists()  # nothing written locally
