"""SIGTERM (schedulers, `docker stop`, `kill`) ends a training with a non-zero exit, its run KILLED in
MLflow and in run.json, and `resume=true` continues the same run to FINISHED."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, REPO, cli_env, copy_project

pytestmark = pytest.mark.slow  # end to end: run by `make test-slow` and CI, not by `make test`

RUN = (
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "logger.log_model=false",
    "logger.system_metrics=false",
    "callbacks.early_stopping=null",
)


def _train(root, *args: str) -> subprocess.CompletedProcess:
    # the SIGTERM callback is importable, and the checkout's own src/ comes first (not another installed cnnlab)
    env = cli_env(root, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    return subprocess.run(
        [str(BIN / "cnnlab-train"), *RUN, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def test_sigterm_exits_143_marks_the_run_killed_and_resume_finishes_it(tmp_path):
    root = copy_project(tmp_path / "project")
    out = root / "runs" / "termed"
    # 6 steps an epoch: step 8 is in epoch 2, after epoch 1's last.ckpt
    stopped = _train(
        root,
        "+callbacks.term._target_=tests.hardening.signals.TermAtStep",
        "+callbacks.term.step=8",
        f"hydra.run.dir={out}",
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped.stderr and "Traceback" not in stopped.stderr
    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert record["status"] == "killed" and client.get_run(record["run_id"]).info.status == "KILLED"

    resumed = _train(root, "resume=true", f"hydra.run.dir={out}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and json.loads((out / "run.json").read_text())["status"] == "finished"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [5, 11, 17]  # each epoch once
