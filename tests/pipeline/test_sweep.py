"""A Hydra multirun is one MLflow parent run with a child run per job (run in this process: Hydra's
basic launcher and the Optuna sweeper run their jobs in the calling process anyway)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK

pytestmark = pytest.mark.slow


def test_two_job_sweep_has_one_parent_with_the_best_child(call_cli, project, tracking_uri):
    sweep_dir = project / "multirun" / "models"
    call_cli("cnnlab-train", "-m", "model=lenet5,simple_cnn", *QUICK, f"hydra.sweep.dir={sweep_dir}")
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("cnnlab-classification")
    parents = client.search_runs([experiment.experiment_id], filter_string=f"tags.`cnnlab.sweep_dir` = '{sweep_dir}'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.params["model.name"] for c in children) == ["lenet5", "simple_cnn"]
    # a run's own place is a tag, not a param: MLflow's compare view opens on the params that differ
    assert not [key for c in children for key, value in c.data.params.items() if str(sweep_dir) in value]
    assert all(c.data.tags["cnnlab.output_dir"].startswith(str(sweep_dir)) for c in children)
    assert all(c.info.status == "FINISHED" for c in children) and parent.info.status == "FINISHED"
    assert parent.data.params["sweep.overrides"].startswith("model=lenet5,simple_cnn")
    assert parent.data.params["sweep.metric"] == "val/acc"
    best = max(children, key=lambda c: c.data.metrics["best/val/acc"])
    assert parent.data.tags["best_child_run_id"] == best.info.run_id
    assert parent.data.metrics["best/val/acc"] == best.data.metrics["best/val/acc"]
    assert parent.data.metrics["sweep.children"] == 2


def test_optuna_study_of_three_trials(call_cli, project, tracking_uri, tmp_path):
    sweep_dir = project / "multirun" / "optuna"
    call_cli(
        "cnnlab-train",
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "~hydra.sweeper.params.model",
        *QUICK,
        f"hydra.sweep.dir={sweep_dir}",
    )
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("cnnlab-classification")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`cnnlab.sweep_dir` = '{sweep_dir}'")
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert parent.data.params["sweep.sweeper"] == "OptunaSweeper"
    best = max(children, key=lambda c: c.data.metrics["best/val/acc"])
    assert parent.data.metrics["best/val/acc"] == best.data.metrics["best/val/acc"]
    # the best trial's sampled values are the parent's best.* params
    sampled = dict(item.split("=", 1) for item in best.data.tags["cnnlab.overrides"].split())
    assert float(parent.data.params["best.optimizer.lr"]) == float(sampled["optimizer.lr"])
    assert parent.data.params["best.optimizer"] in ("adamw", "sgd")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"optimization_history.png"}
    # trial learning rates came from the configured log-uniform interval
    assert all(0.0003 <= float(c.data.params["optimizer.lr"]) <= 0.03 for c in children)


def test_an_optuna_study_in_sqlite_outlives_the_sweep(call_cli, project):
    """hydra.sweeper.storage=sqlite:///... (README): the study is kept, and a second sweep extends it.
    optuna 2.10.1 (hydra-optuna-sweeper's pin) with SQLAlchemy 2.x failed on a new database."""
    import optuna

    storage = f"sqlite:///{project / 'optuna.db'}"
    for sweep in ("first", "second"):
        call_cli(
            "cnnlab-train",
            "-m",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=1",
            "~hydra.sweeper.params.model",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=kept",
            *QUICK,
            "logger=none",
            f"hydra.sweep.dir={project / 'multirun' / sweep}",
        )
    trials = optuna.load_study(study_name="kept", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"] and all(t.value is not None for t in trials)
