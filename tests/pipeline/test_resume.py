"""Kill a run during epoch 2 of 3, resume it: same MLflow run, every epoch once, same result."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, REPO, call_in_process, cli_env
from tests.conftest import INTERRUPTIBLE_RUN as RUN

pytestmark = pytest.mark.slow


def _train_process(project, *args: str) -> subprocess.CompletedProcess:
    """A real cnnlab-train process: the one that gets killed."""
    # the test's crash callback is importable, and the checkout's own src/ comes first (not another installed cnnlab)
    env = cli_env(project, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    return subprocess.run(
        [str(BIN / "cnnlab-train"), *RUN, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def _train(project, *args: str) -> subprocess.CompletedProcess:
    """The runs nobody kills (the reference, the resume) go in this process: what they log is under test."""
    return call_in_process("cnnlab-train", [*RUN, *args], project)


def test_resume_after_kill_continues_the_same_run_to_the_same_result(project, tracking_uri):
    client = MlflowClient(tracking_uri)
    straight_dir, killed_dir = project / "runs" / "straight", project / "runs" / "killed"
    assert _train(project, f"hydra.run.dir={straight_dir}").returncode == 0
    straight = client.get_run(json.loads((straight_dir / "run.json").read_text())["run_id"])

    # 8 steps per epoch: step 12 is the middle of epoch 2; SIGKILL leaves no chance to clean up
    crashed = _train_process(
        project,
        "+callbacks.kill._target_=tests.crash.KillAtStep",
        "+callbacks.kill.step=12",
        f"hydra.run.dir={killed_dir}",
    )
    assert crashed.returncode == -9
    run_id = json.loads((killed_dir / "run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "RUNNING"  # what a kill leaves behind

    resumed = _train(project, "resume=true", f"hydra.run.dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((killed_dir / "run.json").read_text())["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["cnnlab.resumed"] == "true"

    # every epoch once, on the step axis of the uninterrupted run
    history = client.get_metric_history(run_id, "val/acc")
    reference = client.get_metric_history(straight.info.run_id, "val/acc")
    steps = [m.step for m in history]
    assert steps == [m.step for m in reference] and len(steps) == 3 and steps == sorted(set(steps))
    assert [m.value for m in history] == pytest.approx([m.value for m in reference], abs=1e-6)
    assert run.data.metrics["val/loss"] == pytest.approx(straight.data.metrics["val/loss"], abs=1e-6)
    assert len((killed_dir / "history.csv").read_text().splitlines()) == 1 + 3  # header + 3 epochs


def test_a_plain_resume_keeps_the_runs_epochs_and_one_cycle_schedule(project, tracking_uri):
    """The issue's reproductions: a run of 4 epochs (not the default 20) stopped by SIGTERM after its first
    checkpoint, resumed with only `resume=true hydra.run.dir=`, trains to 4 epochs (the one-cycle schedule
    was made for 4: a resume to 20 crashed in OneCycleLR) and says 4 in config.yaml and in MLflow."""
    out = project / "runs" / "four"
    stopped = _train_process(
        project,
        "trainer.max_epochs=4",
        "+callbacks.term._target_=tests.hardening.signals.TermAtStep",
        "+callbacks.term.step=10",
        f"hydra.run.dir={out}",
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    resumed = call_in_process("cnnlab-train", ["resume=true", f"hydra.run.dir={out}"], project)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = MlflowClient(tracking_uri).get_run(json.loads((out / "run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["trainer.max_epochs"] == "4"
    assert "max_epochs: 4" in (out / "config.yaml").read_text()
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 4
