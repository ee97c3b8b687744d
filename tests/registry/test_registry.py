"""Train, log the best checkpoint as an MLflow model, register it, promote it, predict with it by alias."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from PIL import Image

from cnnlab.data.datamodule import CNNDataModule
from cnnlab.tasks.classification import ClassificationTask
from cnnlab.tracking.model_registry import (
    example_inputs,
    held_out_metric,
    log_model,
    promote_run_model,
    registered_model_name,
    registered_version,
    use_tracking_uri,
)
from tests.conftest import QUICK

pytestmark = pytest.mark.slow  # end to end: run by `make test-slow` and CI, not by `make test`

NAME = registered_model_name("classification", "lenet5")
CHAMPION = f"models:/{NAME}@champion"


@pytest.fixture(scope="module")
def registered(call_cli, project, tracking_uri):
    """A short LeNet-5 run on digits; its best checkpoint logged, registered and promoted to @champion."""
    out = project / "runs" / "registry"
    call_cli("cnnlab-train", "model=lenet5", "data=digits", *QUICK, "register=true", f"hydra.run.dir={out}")
    run = json.loads((out / "run.json").read_text())
    # what training does at its end (register=true), then what evaluate does with its test metrics
    # run.json keeps paths relative to the project root
    run = {**run, "best_checkpoint": project / run["best_checkpoint"], "prepared_dir": project / run["prepared_dir"]}
    task = ClassificationTask.load_from_checkpoint(run["best_checkpoint"], map_location="cpu")
    example = example_inputs(CNNDataModule(run["prepared_dir"]).dataset("val", augment=False))
    model_uri = log_model(tracking_uri, run["run_id"], task, register_name=NAME, example=example)
    name, version = registered_version(tracking_uri, run["run_id"])
    metric = held_out_metric(run["monitor"])
    promoted = promote_run_model(tracking_uri, run["run_id"], {metric: 0.5}, metric, run["mode"], "champion")
    meta = json.loads((Path(run["prepared_dir"]) / "meta.json").read_text())
    return {
        "run": run,
        "task": task.eval(),
        "model_uri": model_uri,
        "name": name,
        "version": version,
        "promoted": promoted,
        "meta": meta,
        "prepared_dir": Path(run["prepared_dir"]),
        "example": example,
    }


def test_model_is_logged_with_signature_example_and_metadata(registered, tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    with use_tracking_uri(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(CHAMPION, dst_path=str(tmp_path)))
    model = Model.load(str(local))
    assert "pytorch" in model.flavors and (local / "data" / "model.pt2").is_file()  # torch.export, not a pickle
    assert model.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 32, 32)
    assert model.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 10)
    np.testing.assert_allclose(
        model.load_input_example(str(local)), registered["example"].numpy(), atol=1e-6
    )  # real images
    meta = registered["meta"]
    cnnlab = model.metadata["cnnlab"]
    assert cnnlab["task"] == "classification" and cnnlab["model"] == "lenet5"
    assert cnnlab["class_names"] == meta["classes"] and cnnlab["image_size"] == 32 and cnnlab["channels"] == 1
    assert cnnlab["mean"] == pytest.approx(meta["mean"]) and cnnlab["std"] == pytest.approx(meta["std"])
    # the version belongs to the training run, which says so in its tags; the model is linked to the run
    run = client.get_run(registered["run"]["run_id"])
    assert registered["name"] == NAME and run.data.tags["cnnlab.registered_model"] == NAME
    assert run.data.tags["cnnlab.model_version"] == registered["version"]
    assert client.get_model_version(NAME, registered["version"]).run_id == run.info.run_id
    assert registered["model_uri"].removeprefix("models:/") in {o.model_id for o in run.outputs.model_outputs}


def test_promoted_version_holds_the_alias_with_its_metric(registered, tracking_uri):
    client = MlflowClient(tracking_uri)
    assert registered["promoted"] is True
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == registered["version"]
    assert float(champion.tags["test/acc"]) == pytest.approx(0.5)
    # a run that registered nothing is left alone
    assert promote_run_model(tracking_uri, "0" * 32, {"test/acc": 1.0}, "test/acc", "max", "champion") is None


def test_logged_model_equals_the_best_checkpoint(registered, tracking_uri):
    with use_tracking_uri(tracking_uri):
        network = mlflow.pytorch.load_model(CHAMPION)
    images = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        expected = registered["task"](images).softmax(1)
        assert torch.allclose(network(images), expected, atol=1e-5)


def normalised(image: np.ndarray, meta: dict) -> torch.Tensor:
    """32 x 32 uint8 gray -> the 1 x 32 x 32 input, computed here from the prepared data's statistics."""
    return torch.from_numpy(((image / 255.0 - meta["mean"][0]) / meta["std"][0]).astype(np.float32))[None]


def test_predict_by_alias_labels_new_images(registered, call_cli, tracking_uri, tmp_path):
    prepared = registered["prepared_dir"]
    images = np.load(prepared / "images.npy")[..., 0]
    test_split = np.load(prepared / "splits.npz")["test"]
    first, second = images[test_split[0]], images[test_split[1]]
    inputs = tmp_path / "scans"
    inputs.mkdir()
    Image.fromarray(first).save(inputs / "a.png")  # 32 x 32 gray, as the model was trained on
    Image.fromarray(second).save(inputs / "b.png")
    # the first image again at 64 x 64 RGB: grayscale conversion and area resize must give back the same input
    Image.fromarray(np.repeat(np.kron(first, np.ones((2, 2), np.uint8))[:, :, None], 3, axis=2)).save(
        inputs / "c_big_rgb.png"
    )
    (inputs / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (inputs / "notes.txt").write_text("not an image, not a prediction")

    out = tmp_path / "predictions"
    done = call_cli("cnnlab-predict", f"model_uri={CHAMPION}", f"input={inputs}", f"output_dir={out}", "top_k=3")
    assert "3 images predicted" in done.stdout and "1 unreadable" in done.stdout
    assert "d_broken.png" in done.stderr  # warned, by name
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["file"] for r in rows] == ["a.png", "b.png", "c_big_rgb.png", "d_broken.png"]
    assert list(rows[0]) == ["file", "label", "score", "top_k", "error"]
    classes = registered["meta"]["classes"]
    with torch.no_grad():
        expected = registered["task"](
            torch.stack([normalised(first, registered["meta"]), normalised(second, registered["meta"])])
        ).softmax(1)
    for row, probabilities in zip(rows[:2], expected):
        assert row["label"] in classes and 0.0 <= float(row["score"]) <= 1.0 and row["error"] == ""
        assert row["label"] == classes[int(probabilities.argmax())]
        assert float(row["score"]) == pytest.approx(float(probabilities.max()), abs=1e-4)
        top = [entry.split(":") for entry in row["top_k"].split(";")]
        assert (
            len(top) == 3
            and top[0][0] == row["label"]
            and float(top[0][1]) == pytest.approx(float(row["score"]), abs=1e-4)
        )
        assert [float(s) for _, s in top] == sorted((float(s) for _, s in top), reverse=True)
    # the same digit as a bigger colour image: the same prediction
    assert (rows[2]["label"], rows[2]["score"]) == (rows[0]["label"], rows[0]["score"])
    assert rows[3]["label"] == "" and "d_broken.png" in rows[3]["error"]
