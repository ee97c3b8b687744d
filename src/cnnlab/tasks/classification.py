"""Image classification: softmax cross-entropy, top-1/top-5 accuracy, macro F1, confusion matrix.

Two-class problems can instead use one logit with a sigmoid (`binary_mode: sigmoid`): binary
cross-entropy and the binary torchmetrics (accuracy, F1 of the positive class, AUROC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from cnnlab.config import ConfigError
from cnnlab.models.networks import ClassificationNetwork
from cnnlab.tables import write_csv
from cnnlab.tasks.base import CamPrediction, CNNTask, PredictionInput, class_prediction
from cnnlab.tracking.store import metric_keys
from cnnlab.viz.classification import plot_confusion_matrix, plot_prediction_grid

GRID_IMAGES = 32  # test images kept for the prediction grid
BINARY_MODES = ("softmax", "sigmoid")


class ClassificationTask(CNNTask):
    """Backbone logits trained with cross-entropy (optional label smoothing and mixup).

    tta_flip: evaluation averages the logits of each image and its mirror image (ClassificationNetwork).
    binary_mode applies to two-class data only: softmax (default) keeps two logits and the
    multiclass path; sigmoid gives the backbone one logit (positive = class index 1), trained with
    BCEWithLogits, and logs acc, f1 (positive class) and auroc from the binary torchmetrics.
    """

    name = "classification"
    labels = ("label",)
    output = "N x K class probabilities"
    prediction_columns = ("label", "score", "top_k")

    def __init__(self, *args, mixup_alpha: float = 0.0, binary_mode: str = "softmax", tta_flip: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        n = self.hparams.num_classes
        if self.sigmoid:
            metrics = {"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()}
        else:
            metrics = {"acc": MulticlassAccuracy(n, average="micro"), "f1_macro": MulticlassF1Score(n, average="macro")}
        if n > 5:
            metrics["acc_top5"] = MulticlassAccuracy(n, top_k=5, average="micro")
        self.val_metrics = MetricCollection(metrics, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self.test_per_class = MulticlassAccuracy(n, average="none")
        self.test_confusion = MulticlassConfusionMatrix(n)
        self._grid: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    @property
    def sigmoid(self) -> bool:
        return self.hparams.get("binary_mode", "softmax") == "sigmoid"

    def build_network(self) -> ClassificationNetwork:
        return ClassificationNetwork(
            self.build_backbone(), sigmoid=self.sigmoid, tta_flip=bool(self.hparams.get("tta_flip", False))
        )

    def build_backbone(self, num_classes: Optional[int] = None) -> torch.nn.Module:
        mode = self.hparams.get("binary_mode", "softmax")
        if mode not in BINARY_MODES:
            raise ConfigError(
                f"task.module.binary_mode={mode!r} is not valid; expected one of: {', '.join(BINARY_MODES)}"
            )
        if mode == "sigmoid":
            if self.hparams.num_classes != 2:
                raise ConfigError(
                    f"task.module.binary_mode=sigmoid needs two classes, but the data has {self.hparams.num_classes}; "
                    "use binary_mode=softmax"
                )
            num_classes = 1
        return super().build_backbone(num_classes)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        smoothing = self.hparams.label_smoothing
        if self.sigmoid:
            targets = labels.float() * (1 - smoothing) + 0.5 * smoothing
            return F.binary_cross_entropy_with_logits(logits[:, 0], targets)
        return F.cross_entropy(logits, labels, label_smoothing=smoothing)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """N x classes probabilities in either mode (sigmoid: [1 - p, p])."""
        return self.network.probabilities(logits)

    @classmethod
    def prediction_row(cls, output: np.ndarray, image: PredictionInput) -> dict[str, str]:
        return class_prediction(output[: len(image.class_names)], image)

    def cam_target(self, output: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
        """The class's logit (sigmoid mode: the one logit for class 1, its negative for class 0)."""
        if self.sigmoid:
            return output[:, 0] * (2 * class_index.to(output.dtype) - 1)
        return output.gather(1, class_index.view(-1, 1))[:, 0]

    def cam_prediction(self, output: torch.Tensor) -> CamPrediction:
        scores, classes = self.probabilities(output).max(1)
        return CamPrediction(classes=classes, scores=scores)

    def metric_input(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metric collection takes: logits, or the positive-class probability in sigmoid mode."""
        return torch.sigmoid(logits[:, 0]) if self.sigmoid else logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        alpha = self.hparams.mixup_alpha
        if alpha > 0:
            lam = float(np.random.beta(alpha, alpha))
            order = torch.randperm(images.shape[0], device=images.device)
            logits = self(lam * images + (1 - lam) * images[order])
            loss = lam * self.loss(logits, labels) + (1 - lam) * self.loss(logits, labels[order])
        else:
            logits = self(images)
            loss = self.loss(logits, labels)
        predicted = (
            (logits[:, 0] > 0).long() if self.sigmoid else logits.argmax(1)
        )  # argmax of the logits: no softmax per step
        self.log_training({"train/loss": loss, "train/acc": (predicted == labels).float().mean()}, len(labels))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["label"]), prog_bar=True, sync_dist=True, batch_size=len(logits))
        self.val_metrics.update(self.metric_input(logits), batch["label"])
        self.log_dict(self.val_metrics, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._grid = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        labels = batch["label"]
        self.log("test/loss", self.loss(logits, labels), sync_dist=True, batch_size=len(logits))
        probs = self.probabilities(logits)
        self.test_metrics.update(self.metric_input(logits), labels)
        self.test_per_class.update(probs, labels)
        self.test_confusion.update(probs, labels)
        self.log_dict(self.test_metrics)
        if sum(len(g[0]) for g in self._grid) < GRID_IMAGES:
            confidence, predicted = probs.max(1)
            self._grid.append(
                (
                    self.denormalize(batch["image"]),
                    labels.cpu().numpy(),
                    predicted.cpu().numpy(),
                    confidence.cpu().numpy(),
                )
            )

    def on_test_epoch_end(self) -> None:
        per_class = self.test_per_class.compute()
        self._per_class = [float(value) for value in per_class]  # for the report's per-class table
        for key, value in zip(metric_keys("test/acc_class", self.class_names), per_class):
            self.log(key, value)

    def write_test_report(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        names = self.class_names
        confusion = self.test_confusion.compute().cpu().numpy()
        # one row per test image, the layout DVC's confusion template reads
        rows = [
            (names[a], names[p])
            for a in range(len(names))
            for p in range(len(names))
            for _ in range(int(confusion[a, p]))
        ]
        files = {
            "predictions": write_csv(directory / "predictions.csv", ["actual", "predicted"], rows),
            # the true class names beside the metric keys they were logged under (keys MLflow takes)
            "per_class_accuracy": write_csv(
                directory / "per_class_accuracy.csv",
                ["class", "metric", "accuracy"],
                zip(names, metric_keys("test/acc_class", names), getattr(self, "_per_class", [])),
            ),
            "confusion_matrix": plot_confusion_matrix(confusion, names, directory / "confusion_matrix.png"),
        }
        if self._grid:
            images, labels, predicted, confidence = (np.concatenate(parts)[:GRID_IMAGES] for parts in zip(*self._grid))
            files["prediction_grid"] = plot_prediction_grid(
                images, labels, predicted, confidence, names, directory / "test_predictions.png"
            )
        return files
