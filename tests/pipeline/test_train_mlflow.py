"""A short training run per embedded dataset, read back from MLflow the way a user would see it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK

pytestmark = pytest.mark.slow

DATASETS = {
    "digits": ("lenet5", ["data=digits"]),
    "shapes": (
        "simple_cnn",
        ["data=shapes", "data.source.num_samples=240", "data.image_size=32", "data.batch_size=16"],
    ),
}


@pytest.fixture(scope="module", params=sorted(DATASETS))
def trained(request, call_cli, project, tracking_uri):
    """Train, then evaluate into the same run; returns (run, output dir, dataset name)."""
    dataset = request.param
    model, data_args = DATASETS[dataset]
    out = project / "runs" / dataset
    call_cli(
        "cnnlab-train",
        f"model={model}",
        *data_args,
        *QUICK,
        "logger.log_model=true",
        "register=true",
        f"hydra.run.dir={out}",
    )
    call_cli("cnnlab-evaluate", *data_args, f"evaluate.train_dir={out}", f"evaluate.output_dir={out}/evaluation")
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    return MlflowClient(tracking_uri).get_run(run_id), out, dataset


def test_run_holds_config_as_params(trained):
    run, _, dataset = trained
    params = run.data.params
    assert params["data.name"] == dataset
    assert params["model.name"] == DATASETS[dataset][0]
    assert params["trainer.max_epochs"] == "2"
    assert params["optimizer._target_"] == "torch.optim.AdamW"
    assert params["augment.name"] == "affine"
    assert float(params["optimizer.lr"]) == pytest.approx(0.003)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{DATASETS[dataset][0]}-{dataset}"
    assert [key for key in params if "/" in key] == []  # one name per param: no Lightning `optimizer/lr` twin
    assert params["num_classes"] and params["class_names"]  # the task's own arguments stay


def test_run_tags_identify_code_data_and_command(trained, project):
    run, out, _ = trained
    tags = run.data.tags
    prepared = project / json.loads((out / "run.json").read_text())["prepared_dir"]  # relative to the project root
    meta = json.loads((prepared / "meta.json").read_text())
    assert tags["cnnlab.data_hash"] == meta["content_hash"] and len(meta["content_hash"]) == 64
    assert len(tags["mlflow.source.git.commit"]) in (40, len("unknown"))
    assert tags["git.dirty"] in ("true", "false", "unknown")
    assert tags["cnnlab.command"].startswith("cnnlab-train model=")
    assert "trainer.max_epochs=2" in tags["cnnlab.overrides"]


def test_run_has_step_and_epoch_metrics(trained, tracking_uri):
    run, _, _ = trained
    client = MlflowClient(tracking_uri)
    steps = client.get_metric_history(run.info.run_id, "train/loss_step")
    assert len(steps) >= 4 and len({m.step for m in steps}) == len(steps)  # a point per logged step
    epochs = client.get_metric_history(run.info.run_id, "val/acc")
    assert len(epochs) == 2 and all(0.0 <= m.value <= 1.0 for m in epochs)
    assert run.data.metrics["best/val/acc"] == pytest.approx(max(m.value for m in epochs))
    assert "train/loss_epoch" in run.data.metrics and "lr-AdamW" in run.data.metrics


def test_run_has_config_checkpoint_and_evaluation(trained, tracking_uri, tmp_path):
    run, out, _ = trained
    client = MlflowClient(tracking_uri)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "run.json", "history.csv", "checkpoints", "evaluation", "augmentation_preview.png"} <= top
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert "name: lenet5" in config.read_text() or "name: simple_cnn" in config.read_text()
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/confusion_matrix.png", "evaluation/predictions.csv"} <= evaluation
    # the evaluate stage's test metrics sit in the training run, equal to its metrics.json
    written = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert run.data.metrics["test/acc"] == pytest.approx(written["test/acc"])
    assert 0.0 <= written["test/acc"] <= 1.0 and "test/f1_macro" in written


def test_best_model_is_logged_registered_and_promoted(trained, tracking_uri):
    run, _, dataset = trained
    client = MlflowClient(tracking_uri)
    name = f"cnnlab-classification-{DATASETS[dataset][0]}"
    versions = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run.info.run_id]
    assert len(versions) == 1  # register=true: one version for this run
    champion = client.get_model_version_by_alias(name, "champion")
    # evaluate promoted it unless an earlier version scored higher on the test split
    assert float(champion.tags["test/acc"]) >= run.data.metrics["test/acc"]
    import mlflow.pyfunc

    from cnnlab.tracking.model_registry import use_tracking_uri

    with use_tracking_uri(tracking_uri):  # models:/ URIs resolve through MLflow's process-wide registry URI
        model = mlflow.pyfunc.load_model(f"models:/{name}/{versions[0].version}")
    from cnnlab.data.sources.shapes import SHAPES

    classes = {"digits": [str(d) for d in range(10)], "shapes": list(SHAPES)}[dataset]
    stored = model.metadata.metadata["cnnlab"]
    assert stored["class_names"] == classes and stored["task"] == "classification"


def test_logged_model_loads_as_pytorch_and_pins_torch(trained, tracking_uri):
    """The model as `mlflow.pytorch.load_model` and `mlflow models serve` get it: a network that runs
    without cnnlab, and a requirements file naming the torch and mlflow it needs."""
    import mlflow.models
    import mlflow.pyfunc
    import mlflow.pytorch
    import torch

    from cnnlab.tracking.model_registry import use_tracking_uri

    run, _, _ = trained
    version = MlflowClient(tracking_uri).search_model_versions(f"run_id = '{run.info.run_id}'")[0]
    uri = f"models:/{version.name}/{version.version}"
    with use_tracking_uri(tracking_uri):
        network = mlflow.pytorch.load_model(uri)
        stored = mlflow.models.get_model_info(uri).metadata["cnnlab"]
        requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    with torch.no_grad():
        probabilities = network(torch.zeros(3, stored["channels"], stored["image_size"], stored["image_size"]))
    assert probabilities.shape[0] == 3 and torch.allclose(probabilities.sum(dim=1), torch.ones(3), atol=1e-4)
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    assert f"mlflow=={mlflow.__version__}" in requirements


def test_outputs_for_dvc(trained):
    _, out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and "val/acc" in metrics
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].split(",")[0] == "epoch" and len(history) == 3
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    import torch

    # last.ckpt is the final epoch (resume continues from there); best.ckpt the lowest val/loss
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 1
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    losses = [float(row.split(",")[history[0].split(",").index("val/loss")]) for row in history[1:]]
    assert best["epoch"] == losses.index(min(losses))
    record = json.loads((out / "run.json").read_text())
    best_acc = max(float(r.split(",")[history[0].split(",").index("val/acc")]) for r in history[1:])
    assert metrics["best/val/acc"] == pytest.approx(best_acc, abs=1e-6)  # history.csv keeps 6 decimals
    assert record["last_checkpoint"].endswith("last.ckpt")
    predictions = (out / "evaluation" / "plots" / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "actual,predicted" and len(predictions) > 1
