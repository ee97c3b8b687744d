"""`dvc repro` runs any task as params.yaml configures it: segmentation, then localisation, on shapes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import cli_env, dvc_project, run_dvc, stages_ran

pytestmark = pytest.mark.slow


def test_params_select_the_task_and_dvc_repro_trains_evaluates_and_logs_it(tmp_path: Path):
    def segmentation_on_shapes(params: dict) -> None:
        params["overrides"] = (
            "task=segmentation data=shapes data.image_size=32 model=simple_cnn augment=shapes "
            "trainer.max_epochs=1 task.module.label_smoothing=0.0"
        )

    repo = dvc_project(tmp_path / "repo", segmentation_on_shapes)
    # 500 shapes instead of 3,000: the stages' shape, not the model's skill, is under test. The
    # composed data config is what prepare depends on, so the copy's own edit is what dvc repro sees.
    shapes_conf = repo / "conf/data/shapes.yaml"
    shapes_conf.write_text(shapes_conf.read_text().replace("num_samples: 3000", "num_samples: 500"))
    assert "num_samples: 500" in shapes_conf.read_text()

    assert stages_ran(run_dvc(repo, "repro")) == {"configure", "prepare", "train", "evaluate"}
    metrics = json.loads((repo / "artifacts/evaluate/metrics.json").read_text())
    assert {"test/miou", "test/pixel_acc", "test/dice", "test/iou_class/background"} <= set(metrics)
    plots = repo / "artifacts/evaluate/plots"
    per_class = list(csv.DictReader(open(plots / "per_class_iou.csv")))
    assert [row["class"] for row in per_class] == [
        "background",
        "circle",
        "square",
        "triangle",
        "diamond",
        "cross",
        "star",
    ]
    assert (plots / "test_masks.png").stat().st_size > 0
    run = json.loads((repo / "artifacts/train/run.json").read_text())
    client = mlflow.MlflowClient(cli_env(repo)["MLFLOW_TRACKING_URI"])
    logged = client.get_run(run["run_id"])
    assert logged.data.tags["cnnlab.task"] == "segmentation"
    assert logged.data.params["model.name"] == "simple_cnn"
    assert logged.data.metrics["test/miou"] == pytest.approx(metrics["test/miou"])

    # another task on the same prepared data: train and evaluate re-run, prepare does not
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["overrides"] = params["overrides"].replace("task=segmentation", "task=localization")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_ran(run_dvc(repo, "repro")) == {"configure", "train", "evaluate"}
    metrics = json.loads((repo / "artifacts/evaluate/metrics.json").read_text())
    assert {"test/acc", "test/box_iou", "test/loc_acc"} <= set(metrics)
    rows = list(csv.DictReader(open(plots / "predictions.csv")))
    assert len(rows) == 100  # 20% of 500 shapes, one row each, as DVC's confusion plot reads them
    assert sum(r["actual"] == r["predicted"] for r in rows) / len(rows) == pytest.approx(metrics["test/acc"], abs=1e-6)
