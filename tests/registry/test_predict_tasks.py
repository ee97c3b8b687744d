"""Prediction for localisation (boxes in the input's pixels) and segmentation (masks at the input's size)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.prediction import open_model, predict_files, preprocess, read_image
from cnnlab.tracking.model_registry import log_model
from cnnlab.tracking.run import TrackedRun

BACKBONE = {"_target_": "cnnlab.models.build_backbone", "name": "simple_cnn"}
COMMON = dict(
    model=BACKBONE,
    in_channels=3,
    image_size=32,
    optimizer={"_target_": "torch.optim.SGD", "lr": 0.1},
    mean=[0.4, 0.5, 0.6],
    std=[0.2, 0.25, 0.3],
)
SIZES = {"wide.png": (30, 48), "tall.jpg": (50, 20)}  # (height, width); gray and colour inputs for an RGB model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, SIZES["wide.png"], dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 255, (*SIZES["tall.jpg"], 3), dtype=np.uint8)).save(folder / "tall.jpg")
    return folder


def logged(store: str, task) -> str:
    run = TrackedRun.start(store, "tasks", type(task).__name__, {})
    run_id = run.run_id
    model_uri = log_model(store, run_id, task)
    run.end()
    return model_uri


def test_localization_boxes_are_in_input_pixels(store, inputs, tmp_path):
    localization = pytest.importorskip("cnnlab.tasks.localization")
    torch.manual_seed(0)
    task = localization.LocalizationTask(num_classes=3, class_names=["circle", "square", "triangle"], **COMMON).eval()
    with open_model(logged(store, task), store) as model:
        assert model.task == "localization"
        result = predict_files(model, inputs, sorted(inputs.iterdir()), tmp_path, top_k=2)
        rows = list(csv.DictReader(open(result.csv_path)))
        assert list(rows[0]) == ["file", "label", "score", "top_k", "x_min", "y_min", "x_max", "y_max", "error"]
        for row in rows:
            height, width = SIZES[row["file"]]
            network_input = preprocess(read_image(inputs / row["file"]), model, row["file"])[None]
            with torch.no_grad():
                logits, box = task(network_input)
            assert row["label"] == task.class_names[int(logits.argmax())]
            expected = box[0].numpy() * np.array([width, height, width, height])
            actual = np.array([float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")])
            np.testing.assert_allclose(actual, expected, atol=0.06)
            assert 0 <= actual[0] <= actual[2] <= width and 0 <= actual[1] <= actual[3] <= height


def test_segmentation_masks_have_the_input_size(store, inputs, tmp_path):
    segmentation = pytest.importorskip("cnnlab.tasks.segmentation")
    torch.manual_seed(0)
    names = ["background", "circle", "square"]
    task = segmentation.SegmentationTask(num_classes=3, class_names=names, **COMMON).eval()
    with open_model(logged(store, task), store) as model:
        assert model.task == "segmentation" and model.info["mask_class_names"] == names
        result = predict_files(model, inputs, sorted(inputs.iterdir()), tmp_path)
    rows = list(csv.DictReader(open(result.csv_path)))
    assert list(rows[0]) == ["file", "mask", "classes", "error"]
    for row in rows:
        stem = row["file"].rsplit(".", 1)[0]
        assert row["mask"] == f"masks/{stem}.png"
        with Image.open(tmp_path / row["mask"]) as mask:
            assert mask.mode == "P" and (mask.height, mask.width) == SIZES[row["file"]]
            ids = np.asarray(mask)
        assert ids.max() < len(names)
        fractions = dict(entry.split(":") for entry in row["classes"].split(";"))
        assert set(fractions) <= set(names) and sum(map(float, fractions.values())) == pytest.approx(1.0, abs=1e-3)
        for name, fraction in fractions.items():
            assert float(fraction) == pytest.approx((ids == names.index(name)).mean(), abs=1e-4)
