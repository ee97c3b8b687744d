"""Image classification: softmax cross-entropy, top-1/top-5 accuracy, macro F1, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from cnnlab.tasks.base import CNNTask

GRID_IMAGES = 32  # test images kept for the prediction grid


class ClassificationTask(CNNTask):
    """Backbone logits trained with cross-entropy (optional label smoothing and mixup)."""

    def __init__(self, *args, label_smoothing: float = 0.0, mixup_alpha: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        n = self.hparams.num_classes
        metrics = {"acc": MulticlassAccuracy(n, average="micro"), "f1_macro": MulticlassF1Score(n, average="macro")}
        if n > 5:
            metrics["acc_top5"] = MulticlassAccuracy(n, top_k=5, average="micro")
        self.val_metrics = MetricCollection(metrics, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self.test_per_class = MulticlassAccuracy(n, average="none")
        self.test_confusion = MulticlassConfusionMatrix(n)
        self._grid: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)

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
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log("train/acc", (logits.argmax(1) == labels).float().mean(), on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["label"]), prog_bar=True, sync_dist=True, batch_size=len(logits))
        self.val_metrics.update(logits, batch["label"])
        self.log_dict(self.val_metrics, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._grid = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        labels = batch["label"]
        self.log("test/loss", self.loss(logits, labels), sync_dist=True, batch_size=len(logits))
        self.test_metrics.update(logits, labels)
        self.test_per_class.update(logits, labels)
        self.test_confusion.update(logits, labels)
        self.log_dict(self.test_metrics)
        if sum(len(g[0]) for g in self._grid) < GRID_IMAGES:
            probs = logits.softmax(1)
            confidence, predicted = probs.max(1)
            self._grid.append((self.denormalize(batch["image"]), labels.cpu().numpy(), predicted.cpu().numpy(), confidence.cpu().numpy()))

    def on_test_epoch_end(self) -> None:
        per_class = self.test_per_class.compute()
        names = self.hparams.class_names or [str(i) for i in range(self.hparams.num_classes)]
        for name, value in zip(names, per_class):
            self.log(f"test/acc_class/{name}", value)

    def write_test_report(self, directory: Path) -> dict[str, Path]:
        from cnnlab.viz.classification import plot_confusion_matrix, plot_prediction_grid

        directory.mkdir(parents=True, exist_ok=True)
        names = self.hparams.class_names or [str(i) for i in range(self.hparams.num_classes)]
        confusion = self.test_confusion.compute().cpu().numpy()
        # one row per test image, the layout DVC's confusion template reads
        rows = ["actual,predicted"] + [
            f"{names[a]},{names[p]}" for a in range(len(names)) for p in range(len(names)) for _ in range(int(confusion[a, p]))
        ]
        predictions = directory / "predictions.csv"
        predictions.write_text("\n".join(rows) + "\n")
        files = {"predictions": predictions, "confusion_matrix": plot_confusion_matrix(confusion, names, directory / "confusion_matrix.png")}
        if self._grid:
            images, labels, predicted, confidence = (np.concatenate(parts)[:GRID_IMAGES] for parts in zip(*self._grid))
            files["prediction_grid"] = plot_prediction_grid(images, labels, predicted, confidence, names, directory / "test_predictions.png")
        return files
