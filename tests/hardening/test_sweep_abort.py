"""A sweep cut short by a failing job leaves no parent run RUNNING (Hydra skips on_multirun_end then)."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, cli_env, copy_project

pytestmark = pytest.mark.slow  # end to end: run by `make test-slow` and CI, not by `make test`


def test_a_failing_job_ends_the_sweep_and_its_parent_failed(tmp_path):
    root = copy_project(tmp_path / "project")
    command = [
        str(BIN / "cnnlab-train"),
        "-m",
        "trainer=debug",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.max_epochs=1",
        "logger.log_model=false",
        "logger.system_metrics=false",
        "optimizer.lr=0.01,-1",
    ]
    done = subprocess.run(command, cwd=root, env=cli_env(root), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "optimizer.lr=-1" in done.stderr
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("cnnlab.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert parents[0].data.tags.get("best_child_run_id")  # the job that finished is still recorded
    assert not [r for r in runs if r.info.status == "RUNNING"]
