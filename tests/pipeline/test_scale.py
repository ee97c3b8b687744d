"""Parallel sweeps on SQLite, DDP on CPU (gloo), mixed precision, system metrics."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK

pytestmark = pytest.mark.slow


def _children(client: MlflowClient, sweep_dir) -> list:
    experiment = client.get_experiment_by_name("cnnlab-classification")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`cnnlab.sweep_dir` = '{sweep_dir}'")
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )


def test_parallel_sweep_on_sqlite_loses_nothing(run_cli, project, tracking_uri):
    sweep_dir = project / "multirun" / "joblib"
    run_cli(
        "cnnlab-train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "optimizer.lr=0.01,0.003,0.001,0.0003",
        *QUICK,
        f"hydra.sweep.dir={sweep_dir}",
    )
    client = MlflowClient(tracking_uri)
    children = _children(client, sweep_dir)
    assert sorted(float(c.data.params["optimizer.lr"]) for c in children) == [0.0003, 0.001, 0.003, 0.01]
    reference = len(children[0].data.params)
    for child in children:
        assert child.info.status == "FINISHED"
        assert len(child.data.params) == reference  # every param of every job
        assert len(client.get_metric_history(child.info.run_id, "val/acc")) == 2  # both epochs
        assert len(client.get_metric_history(child.info.run_id, "train/loss_step")) >= 4
        assert "best/val/acc" in child.data.metrics


def test_two_rank_cpu_ddp_is_one_run_and_one_checkpoint(run_cli, project, tracking_uri):
    out = project / "runs" / "ddp"
    run_cli(
        "cnnlab-train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *QUICK[1:],
        "logger.run_name=ddp-probe",
        f"hydra.run.dir={out}",
    )
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("cnnlab-classification")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'ddp-probe'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["trainer.strategy"] == "ddp" and runs[0].data.params["trainer.devices"] == "2"
    assert len(client.get_metric_history(runs[0].info.run_id, "val/acc")) == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert json.loads((out / "run.json").read_text())["run_id"] == runs[0].info.run_id
    # one Hydra output directory: the relaunched rank wrote into this one, not a new one
    assert (
        not any(p.name.startswith("train_ddp_process") for p in (project / "outputs").glob("*/*"))
        if (project / "outputs").exists()
        else True
    )


def test_ddp_inside_a_multirun(run_cli, project, tracking_uri):
    sweep_dir = project / "multirun" / "ddp"
    run_cli(
        "cnnlab-train",
        "-m",
        "model=lenet5,simple_cnn",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *QUICK[1:],
        f"hydra.sweep.dir={sweep_dir}",
    )
    children = _children(MlflowClient(tracking_uri), sweep_dir)
    assert sorted(c.data.params["model.name"] for c in children) == ["lenet5", "simple_cnn"]
    assert all(c.info.status == "FINISHED" and "val/acc" in c.data.metrics for c in children)
    for job in ("0", "1"):
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()


def test_bf16_mixed_precision_and_system_metrics(call_cli, project, tracking_uri):
    out = project / "runs" / "bf16"
    # samples every 0.2 s: MLflow logs nothing for a run shorter than one interval, and this one takes seconds
    call_cli(
        "cnnlab-train",
        *QUICK,
        "trainer.precision=bf16-mixed",
        "logger.system_metrics_interval=0.2",
        "trainer.limit_train_batches=20",
        f"hydra.run.dir={out}",
    )
    run = MlflowClient(tracking_uri).get_run(json.loads((out / "run.json").read_text())["run_id"])
    assert run.data.params["trainer.precision"] == "bf16-mixed"
    assert run.data.metrics["val/loss"] == run.data.metrics["val/loss"]  # not NaN
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
