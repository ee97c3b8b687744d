"""benchmarks/gpu.sh (issue 28, GPU readiness) in its CPU tiny mode: every measurement the GPU run makes
is reported for both models and both sides, the DDP part lands as one MLflow run, and bad input fails clearly.
CI runs it so the GPU script cannot rot on machines without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # about a minute on 2 cores: four training processes, DDP and a compile

SCRIPT = REPO / "benchmarks" / "gpu.sh"
MODELS = ("resnet50", "speedrun")


def run_script(*args: str, timeout: int = 500) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CNNLAB_"))}
    env["PYTHON"] = sys.executable  # the interpreter running the tests, wherever its environment lives
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """One `gpu.sh --tiny` run: (the process, its work directory, its report lines by (model, side))."""
    workdir = tmp_path_factory.mktemp("gpu-sh") / "work"
    done = run_script("--tiny", "--workdir", str(workdir))
    assert done.returncode == 0, (
        f"gpu.sh --tiny exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert all(not line or line.startswith(("{", "# ")) for line in done.stdout.splitlines()), done.stdout
    return done, workdir, {(r.get("model"), r["side"]): r for r in records}


def test_tiny_mode_reports_both_models_on_both_sides(tiny):
    done, _, report = tiny
    setup = report[(None, "setup")]
    assert setup["mode"] == "cpu-tiny" and setup["device"] == "cpu" and setup["torch_threads"] == 1
    assert setup["speedrun_data"] in ("fashion_mnist", "digits")
    assert report[("resnet50", "prepare")]["image_size"] == 32
    for model in MODELS:
        for side in ("cnnlab-train", "plain"):
            assert report[(model, side)]["images_per_s"] > 0, (model, side)
        assert 0 <= report[(model, "plain")]["test_acc"] <= 1
        assert report[(model, "plain")]["gpu_max_allocated_mb"] is None  # no GPU: nothing to report, not zero
        assert len(report[(model, "cnnlab-train")]["run_id"]) == 32
        balance = report[(model, "input")]
        assert balance["supply_images_per_s"] > 0 and balance["consume_images_per_s"] > 0
        ratio = balance["supply_images_per_s"] / balance["consume_images_per_s"]
        assert balance["supply_over_consume"] == pytest.approx(ratio, rel=0.02)
        assert balance["verdict"].startswith("fed" if balance["supply_over_consume"] >= 1 else "input-bound")
    compiled = report[("speedrun", "plain+compile")]  # the compile path runs where torch can compile
    assert compiled["images_per_s"] > 0 if compiled["supported"] else compiled["reason"]
    assert "skipped" in report[("resnet50", "plain+compile")]
    assert report[(None, "done")]["wall_s"] > 0


def test_tiny_mode_ddp_over_two_cpu_processes_is_one_mlflow_run(tiny):
    _, workdir, report = tiny
    ddp = report[("resnet50", "ddp")]
    assert ddp["devices"] == 2 and ddp["accelerator"] == "cpu" and ddp["images_per_s"] > 0
    assert ddp["mlflow_runs"] == 1 and ddp["run_status"] == "FINISHED"
    client = MlflowClient(f"sqlite:///{workdir / 'project' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gpu-sh-ddp")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == ddp["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "ddp" and run.data.params["trainer.devices"] == "2"
    assert "val/acc" in run.data.metrics
    # the single-device runs are in the same store, each its own run
    for model in MODELS:
        assert client.get_run(report[(model, "cnnlab-train")]["run_id"]).info.status == "FINISHED"


def test_unknown_option_is_a_usage_error():
    done = run_script("--bogus", timeout=120)
    assert done.returncode == 2
    assert "usage: benchmarks/gpu.sh" in done.stderr and "unrecognized arguments: --bogus" in done.stderr
    assert done.stdout == ""


def test_a_workdir_holding_a_project_is_refused(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "keep.txt").write_text("mine")
    done = run_script("--tiny", "--workdir", str(tmp_path), timeout=120)
    assert done.returncode == 2 and "exists" in done.stderr
    assert (tmp_path / "project" / "keep.txt").read_text() == "mine"
