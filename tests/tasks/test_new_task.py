"""A task is one class and one YAML: a new task defined here runs prepare -> train -> evaluate -> predict
with no change under src/, and nothing in src/ outside tasks/ branches on a task's name."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAccuracy, MultilabelF1Score

from cnnlab.models.networks import ClassificationNetwork
from cnnlab.tasks.base import CNNTask, PredictionInput

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "cnnlab"
THRESHOLD = 0.5


class PresenceNetwork(ClassificationNetwork):
    """The backbone's logits, served as one independent probability per class."""

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(images))


class PresenceTask(CNNTask):
    """Multi-label presence: which object classes appear in an image, read off its segmentation mask.

    The network's classes are the mask classes without the background; the loss is binary
    cross-entropy per class, positives weighted up by K - 1 (one object in K classes would otherwise
    teach "nothing is here" first); the metrics are torchmetrics' multi-label accuracy and F1.
    """

    name = "presence"
    labels = ("mask",)
    output = "N x K presence probabilities (sigmoid), one per object class"
    prediction_columns = ("present", "scores")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        n = self.hparams.num_classes
        metrics = {
            "acc": MultilabelAccuracy(n, threshold=THRESHOLD),
            "f1": MultilabelF1Score(n, threshold=THRESHOLD, average="macro"),
        }
        self.val_metrics = MetricCollection(metrics, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")

    @classmethod
    def output_classes(cls, meta: dict) -> list[str]:
        return list(meta["mask_classes"][1:])

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = torch.full((logits.shape[1],), float(max(1, logits.shape[1] - 1)), device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)

    def targets(self, masks: torch.Tensor) -> torch.Tensor:
        """N x K: 1 where mask class k + 1 covers any pixel."""
        ids = torch.arange(1, self.hparams.num_classes + 1, device=masks.device)
        return (masks.flatten(1)[:, :, None] == ids).any(1).float()

    def build_network(self) -> PresenceNetwork:
        return PresenceNetwork(self.build_backbone())

    @classmethod
    def prediction_row(cls, output: np.ndarray, image: PredictionInput) -> dict[str, str]:
        present = [name for name, p in zip(image.class_names, output) if p >= THRESHOLD]
        return {
            "present": ";".join(present),
            "scores": ";".join(f"{n}:{p:.4f}" for n, p in zip(image.class_names, output)),
        }

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), self.targets(batch["mask"]))
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def _evaluate(self, stage: str, batch: dict) -> None:
        logits, targets = self(batch["image"]), self.targets(batch["mask"])
        self.log(f"{stage}/loss", self.loss(logits, targets), batch_size=len(logits))
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(torch.sigmoid(logits), targets.int())
        self.log_dict(metrics)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def write_test_report(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "presence.txt"
        path.write_text(f"classes: {', '.join(self.class_names)}\n")
        return {"presence": path}


TASK_YAML = f"""\
name: presence
monitor: val/f1
mode: max
module:
  _target_: {__name__}.PresenceTask
"""


@pytest.mark.slow
def test_a_task_defined_outside_src_runs_prepare_train_evaluate_predict(tmp_path, monkeypatch):
    """conf/task/presence.yaml + the class above: every step dispatches through the class's declarations."""
    import mlflow
    from hydra import compose, initialize_config_dir

    from cnnlab.config import register_configs
    from cnnlab.data.prepare import prepare_from_config
    from cnnlab.evaluation import evaluate
    from cnnlab.prediction import predict
    from tests.conftest import copy_project, train_in_process

    root = copy_project(tmp_path / "project")
    (root / "conf" / "task" / "presence.yaml").write_text(TASK_YAML)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("CNNLAB_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    overrides = [
        "experiment=none",  # the plain defaults: the default recipe sets classification keys (label_smoothing)
        "task=presence",
        "data=shapes",
        "data.source.num_samples=300",
        "data.image_size=32",
        "model=simple_cnn",
        "model.batch_norm=true",
        "augment=none",
        "data.batch_size=32",
        "trainer.max_epochs=4",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "optimizer.lr=0.003",
        "logger.system_metrics=false",
        "register=true",
    ]
    register_configs()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
        eval_cfg = compose(
            "config",
            overrides=[
                *overrides,
                f"evaluate.train_dir={tmp_path / 'train'}",
                f"evaluate.output_dir={tmp_path / 'eval'}",
            ],
        )

    meta = prepare_from_config(cfg.data)  # prepare: the data layer knows nothing of tasks
    assert meta["has_masks"] and meta["mask_classes"][0] == "background"

    record, _ = train_in_process(overrides, tmp_path / "train", root / "conf")
    best = record["best_score"]
    run = mlflow.MlflowClient(uri).get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["cnnlab.task"] == "presence"
    assert run.data.metrics["best/val/f1"] == pytest.approx(best) and "val/acc" in run.data.metrics
    assert run.data.tags["cnnlab.registered_model"] == "cnnlab-presence-simple_cnn"

    history = list(csv.DictReader(open(tmp_path / "train" / "history.csv")))
    assert float(history[-1]["train/loss"]) < 0.8 * float(history[0]["train/loss"])  # it learns
    assert {"val/acc", "val/f1"} <= set(history[0])

    metrics = evaluate(eval_cfg)
    assert set(metrics) >= {"test/acc", "test/f1", "test/loss"} and 0 <= metrics["test/f1"] <= 1
    assert (tmp_path / "eval" / "plots" / "presence.txt").read_text().startswith("classes: circle")
    logged = mlflow.MlflowClient(uri).get_run(record["run_id"])
    assert logged.data.metrics["test/f1"] == pytest.approx(metrics["test/f1"])

    images = tmp_path / "images"
    images.mkdir()
    prepared = np.load(Path(cfg.data.prepared_dir) / "images.npy")
    from PIL import Image

    for i in range(3):
        Image.fromarray(prepared[i]).save(images / f"shape{i}.png")
    result = predict("models:/cnnlab-presence-simple_cnn/1", images, tmp_path / "predictions", uri)
    rows = list(csv.DictReader(open(result.csv_path)))
    assert list(rows[0]) == ["file", "present", "scores", "error"]
    assert [row["file"] for row in rows] == ["shape0.png", "shape1.png", "shape2.png"]
    shapes = set(meta["mask_classes"][1:])
    for row in rows:
        scores = dict(item.split(":") for item in row["scores"].split(";"))
        assert set(scores) == shapes and all(0 <= float(p) <= 1 for p in scores.values())
        assert set(filter(None, row["present"].split(";"))) == {n for n, p in scores.items() if float(p) >= THRESHOLD}


# A string constant equal to a task name, outside tasks/ and conf/, is a branch on a task's name,
# except where it names something else: VOC's own ImageSets/Segmentation subset (data.source.subset).
ALLOWED = {("data/sources/voc.py", "segmentation")}


def _task_name_constants(path: Path, names: set[str]) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
    ]


def test_no_task_name_branches_outside_tasks():
    from cnnlab.tasks import available_tasks

    names = set(available_tasks())
    assert names >= {"classification", "localization", "segmentation"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith("tasks/"):
            continue
        found += [
            f"{relative}:{line}: {value!r}"
            for line, value in _task_name_constants(path, names)
            if (relative, value) not in ALLOWED
        ]
    assert not found, "task names outside tasks/:\n" + "\n".join(found)
