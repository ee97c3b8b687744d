"""A short real run per task through cnnlab.training.train and cnnlab.evaluation.evaluate: the loss
falls, and the MLflow run holds the task's val and test metrics and its test pictures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import train_in_process

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parents[2] / "conf"

# 300 shapes at 32 px: 210 training images, 7 batches an epoch, 4 epochs
QUICK = [
    "experiment=none",  # on the plain defaults of conf/
    "data=shapes",
    "model=simple_cnn",
    "model.batch_norm=true",
    "augment=none",
    "data.source.num_samples=300",
    "data.image_size=32",
    "data.batch_size=32",
    "trainer.max_epochs=4",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=2",
    "logger.log_model=false",
    "logger.log_checkpoint=false",
    "optimizer.lr=0.003",
]

# task -> (val metrics in the MLflow run, picture cnnlab-evaluate logs, per-class test metric, classes)
EXPECTED = {
    "classification": ({"val/acc", "val/acc_top5", "val/f1_macro"}, "test_predictions.png", "test/acc_class/", 6),
    "localization": ({"val/acc", "val/box_iou", "val/loc_acc", "val/box_loss"}, "test_boxes.png", None, 0),
    "segmentation": (
        {"val/miou", "val/pixel_acc", "val/dice", "val/iou_class/background"},
        "test_masks.png",
        "test/iou_class/",
        7,
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One MLflow store and one data folder for the module (prepared shapes are shared)."""
    root = tmp_path_factory.mktemp("task_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        yield root


def epoch_losses(output_dir: Path) -> list[float]:
    lines = (output_dir / "history.csv").read_text().splitlines()
    column = lines[0].split(",").index("train/loss")
    return [float(line.split(",")[column]) for line in lines[1:]]


@pytest.mark.parametrize("task_name", ["classification", "localization", "segmentation"])
def test_short_run_learns_logs_and_reports(task_name, workspace):
    import mlflow
    from matplotlib.image import imread

    from cnnlab.evaluation import evaluate

    output_dir = workspace / task_name
    overrides = [f"task={task_name}", f"paths.data_dir={workspace / 'data'}", *QUICK]
    run, cfg = train_in_process(overrides, output_dir)

    losses = epoch_losses(output_dir)
    assert len(losses) == 4 and losses[-1] < losses[0], losses

    val_metrics, picture_name, per_class, classes = EXPECTED[task_name]
    logged = mlflow.MlflowClient(run["tracking_uri"]).get_run(run["run_id"])
    assert logged.info.status == "FINISHED"
    assert val_metrics <= set(logged.data.metrics), sorted(logged.data.metrics)
    assert logged.data.tags["cnnlab.task"] == task_name
    history = mlflow.MlflowClient(run["tracking_uri"]).get_metric_history(run["run_id"], cfg.task.monitor)
    assert len(history) == 4  # one value per epoch

    # cnnlab-evaluate: the best checkpoint on the test split, logged into the same MLflow run
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        eval_cfg = compose(
            "config",
            overrides=[f"evaluate.train_dir={output_dir}", f"evaluate.output_dir={workspace / f'{task_name}-eval'}"],
        )
    results = evaluate(eval_cfg)
    assert {key.replace("val/", "test/") for key in val_metrics} - {"test/box_loss"} <= set(results)
    if per_class:  # one figure per shapes class (and background for masks)
        assert sum(key.startswith(per_class) for key in results) == classes, sorted(results)

    client = mlflow.MlflowClient(run["tracking_uri"])
    logged = client.get_run(run["run_id"])
    assert {key.replace("val/", "test/") for key in val_metrics} - {"test/box_loss"} <= set(logged.data.metrics)
    artifacts = {Path(item.path).name: item.file_size for item in client.list_artifacts(run["run_id"], "evaluation")}
    assert artifacts.get(picture_name, 0) > 0, artifacts
    picture = imread(workspace / f"{task_name}-eval" / "plots" / picture_name)
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 100

    # the table DVC's confusion template reads: one row per test image, agreeing with test/acc
    rows = list(csv.DictReader(open(workspace / f"{task_name}-eval" / "plots" / "predictions.csv")))
    if task_name == "segmentation":
        assert rows == []  # per-pixel classes live in per_class_iou.csv and the pixel confusion matrix
        per_class_rows = list(csv.DictReader(open(workspace / f"{task_name}-eval" / "plots" / "per_class_iou.csv")))
        assert [row["class"] for row in per_class_rows] == cfg_classes(run)
    else:
        assert len(rows) == 60  # 20% of 300 shapes
        accuracy = sum(row["actual"] == row["predicted"] for row in rows) / len(rows)
        assert accuracy == pytest.approx(results["test/acc"], abs=1e-6)
        assert artifacts.get("confusion_matrix.png", 0) > 0, artifacts


def cfg_classes(run: dict) -> list[str]:
    meta = json.loads((Path(run["prepared_dir"]) / "meta.json").read_text())
    return meta["mask_classes"]
