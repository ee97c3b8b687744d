"""What a run links to in MLflow: its model in its own experiment, its dataset inputs, the experiment's kind."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK, call_in_process, copy_project


@pytest.fixture(scope="module")
def trained_and_evaluated(tmp_path_factory):
    """One training (model logged and registered) and its evaluation, run from the project root as cwd."""
    root = copy_project(tmp_path_factory.mktemp("lineage"))
    out = root / "runs" / "one"
    done = call_in_process(
        "cnnlab-train", [*QUICK, "logger.log_model=true", "register=true", f"hydra.run.dir={out}"], root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = call_in_process(
        "cnnlab-evaluate", [f"evaluate.train_dir={out}", f"evaluate.output_dir={out}/evaluation"], root
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    record = json.loads((out / "run.json").read_text())
    return root, MlflowClient(uri), MlflowClient(uri).get_run(record["run_id"]), record


def test_logged_model_lives_in_the_runs_experiment_not_in_mlruns(trained_and_evaluated):
    root, client, run, _ = trained_and_evaluated
    experiment = client.get_experiment(run.info.experiment_id)
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]
    model = models[0]
    assert model.name == "lenet5-classification-digits"  # what it is, not "model": the runs table's Models column
    assert model.experiment_id == run.info.experiment_id and model.status.name == "READY"
    assert model.artifact_location.startswith(experiment.artifact_location)  # beside the run's artifacts
    assert model.artifact_location.startswith((root / "mlartifacts").as_uri())
    assert not (root / "mlruns").exists()  # MLflow's cwd-relative default is never used
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_logged_models(experiment_ids=[default.experiment_id])
    # the runs table's Model column: the run's outputs name the model
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    version = client.get_model_version_by_alias("cnnlab-classification-lenet5", "champion")
    assert version.source == f"models:/{model.model_id}" and version.run_id == run.info.run_id


def test_runs_uri_finds_the_model_by_its_name_or_as_model(trained_and_evaluated):
    from cnnlab.config import ConfigError
    from cnnlab.tracking.model_files import logged_model_uri

    _, client, run, _ = trained_and_evaluated
    uri = client.tracking_uri
    (model,) = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    run_id = run.info.run_id
    for source in (f"runs:/{run_id}", f"runs:/{run_id}/model", f"runs:/{run_id}/lenet5-classification-digits"):
        assert logged_model_uri(source, uri) == f"models:/{model.model_id}"
    with pytest.raises(ConfigError) as err:
        logged_model_uri(f"runs:/{run_id}/resnet18-classification-digits", uri)
    message = str(err.value)
    assert "no model named 'resnet18-classification-digits'" in message
    assert "its models: lenet5-classification-digits" in message


def test_training_and_evaluation_log_the_prepared_dataset(trained_and_evaluated):
    root, client, run, record = trained_and_evaluated
    run = client.get_run(run.info.run_id)  # as it stands after evaluate
    meta = json.loads((json_path := root / record["prepared_dir"] / "meta.json").read_text())  # relative to the root
    inputs = {
        tag.value: item.dataset
        for item in run.inputs.dataset_inputs
        for tag in item.tags
        if tag.key == "mlflow.data.context"
    }
    assert set(inputs) == {"training", "evaluation"}, json_path
    training, evaluation = inputs["training"], inputs["evaluation"]
    assert training.name == "digits-32" and evaluation.name == "digits-32/test"
    assert training.digest == evaluation.digest == meta["content_hash"][:32] == run.data.tags["cnnlab.data_hash"][:32]
    assert training.source_type == "local" and json.loads(training.source)["uri"] == "data/prepared/digits-32"
    profile = json.loads(training.profile)
    assert profile["split_sizes"] == meta["split_sizes"] and profile["content_hash"] == meta["content_hash"]
    assert profile["num_samples"] == meta["num_samples"] and profile["num_classes"] == 10
    assert json.loads(evaluation.profile)["split_sizes"] == {"test": meta["split_sizes"]["test"]}


def test_experiment_declares_model_training_so_the_ui_opens_on_runs(trained_and_evaluated):
    _, client, run, _ = trained_and_evaluated
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_dataset_is_named_by_what_it_holds_not_by_its_folder(tmp_path):
    """The pipeline prepares into data/prepared/pipeline; the runs table still says digits-32."""
    from cnnlab.tracking.datasets import prepared_dataset

    meta = {
        "name": "digits",
        "image_size": 32,
        "split_sizes": {"train": 3, "val": 1, "test": 1},
        "content_hash": "ab" * 32,
    }
    assert prepared_dataset(tmp_path / "pipeline", meta).name == "digits-32"
    assert prepared_dataset(tmp_path / "pipeline", meta, ("test",)).name == "digits-32/test"
