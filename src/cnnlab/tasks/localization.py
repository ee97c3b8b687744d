"""Classification + localisation: one object per image, its class and its box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_confusion_matrix

from cnnlab.config import ConfigError
from cnnlab.models.networks import LocalizationNetwork
from cnnlab.tables import write_csv
from cnnlab.tasks.base import CamPrediction, CNNTask, PredictionInput, class_prediction
from cnnlab.tasks.boxes import BOX_LOSSES, box_iou, box_loss
from cnnlab.viz.classification import plot_confusion_matrix
from cnnlab.viz.localization import plot_box_grid

GRID_IMAGES = 32  # test images kept for the box grid
LOC_IOU_THRESHOLD = 0.5  # a localisation counts as right at IoU >= 0.5 (ILSVRC, PASCAL VOC)


def localization_accuracy(logits: torch.Tensor, labels: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """Per image: 1.0 where the class is right and the box IoU >= 0.5, else 0.0."""
    return ((logits.argmax(1) == labels) & (ious >= LOC_IOU_THRESHOLD)).float()


class LocalizationTask(CNNTask):
    """Class logits from the backbone's own classifier, a box from `BoxHead` on the same features
    (`LocalizationNetwork`).

    Loss = cross-entropy + box_weight x box loss (l2: squared error on the corners, the classic
    formulation; smooth_l1; or giou: 1 - GIoU).
    """

    name = "localization"
    labels = ("label", "box")
    output = "N x (K + 4): class probabilities, then x_min, y_min, x_max, y_max normalised to the input"
    prediction_columns = ("label", "score", "top_k", "x_min", "y_min", "x_max", "y_max")

    def __init__(
        self,
        *args,
        box_loss: str = "smooth_l1",
        box_weight: float = 1.0,
        box_pool_size: int = 4,
        box_hidden: int = 256,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if box_loss not in BOX_LOSSES:
            raise ConfigError(
                f"task.module.box_loss={box_loss!r} is not valid; expected one of: {', '.join(BOX_LOSSES)}"
            )
        n = self.hparams.num_classes
        self.val_metrics = MetricCollection({"acc": MulticlassAccuracy(n, average="micro")}, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self.val_box_iou, self.val_loc_acc = MeanMetric(), MeanMetric()
        self.test_box_iou, self.test_loc_acc = MeanMetric(), MeanMetric()
        self._test_rows: list[tuple[np.ndarray, ...]] = []
        self._grid: list[tuple[np.ndarray, ...]] = []

    def build_network(self) -> LocalizationNetwork:
        hp = self.hparams
        return LocalizationNetwork(self.build_backbone(), hp.get("box_pool_size", 4), hp.get("box_hidden", 256))

    @classmethod
    def prediction_row(cls, output: np.ndarray, image: PredictionInput) -> dict[str, str]:
        k = len(image.class_names)
        x_min, y_min, x_max, y_max = (float(v) for v in np.clip(output[k : k + 4], 0, 1))
        return {
            **class_prediction(output[:k], image),
            "x_min": f"{x_min * image.width:.1f}",
            "y_min": f"{y_min * image.height:.1f}",
            "x_max": f"{x_max * image.width:.1f}",
            "y_max": f"{y_max * image.height:.1f}",
        }

    def cam_target(self, output: tuple[torch.Tensor, torch.Tensor], class_index: torch.Tensor) -> torch.Tensor:
        """The class head's logit for the class (the box head is not what a class map explains)."""
        return output[0].gather(1, class_index.view(-1, 1))[:, 0]

    def cam_prediction(self, output: tuple[torch.Tensor, torch.Tensor]) -> CamPrediction:
        logits, boxes = output
        scores, classes = logits.softmax(1).max(1)
        return CamPrediction(classes=classes, scores=scores, boxes=boxes)

    def losses(self, logits, boxes, labels, true_boxes) -> dict[str, torch.Tensor]:
        class_loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        location_loss = box_loss(boxes, true_boxes, self.hparams.box_loss)
        return {
            "loss": class_loss + self.hparams.box_weight * location_loss,
            "class_loss": class_loss,
            "box_loss": location_loss,
        }

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, boxes = self(batch["image"])
        losses = self.losses(logits, boxes, batch["label"], batch["box"])
        batch_size = len(logits)
        ious = box_iou(boxes.detach(), batch["box"])
        self.log_training(
            {
                "train/loss": losses["loss"],
                "train/class_loss": losses["class_loss"],
                "train/box_loss": losses["box_loss"],
                "train/box_iou": ious.mean(),
                "train/loc_acc": localization_accuracy(logits.detach(), batch["label"], ious).mean(),
            },
            batch_size,
        )
        return losses["loss"]

    def _evaluate(self, stage: str, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, boxes = self(batch["image"])
        labels, true_boxes = batch["label"], batch["box"]
        losses = self.losses(logits, boxes, labels, true_boxes)
        for key, value in losses.items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "loss", sync_dist=True, batch_size=len(logits))
        ious = box_iou(boxes, true_boxes)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        box_iou_metric = self.val_box_iou if stage == "val" else self.test_box_iou
        loc_acc_metric = self.val_loc_acc if stage == "val" else self.test_loc_acc
        metrics.update(logits, labels)
        box_iou_metric.update(ious)
        loc_acc_metric.update(localization_accuracy(logits, labels, ious))
        self.log_dict(metrics, prog_bar=stage == "val")
        self.log(f"{stage}/box_iou", box_iou_metric, prog_bar=stage == "val")
        self.log(f"{stage}/loc_acc", loc_acc_metric, prog_bar=stage == "val")
        return logits, boxes, ious

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def on_test_epoch_start(self) -> None:
        self._test_rows, self._grid = [], []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        logits, boxes, ious = self._evaluate("test", batch)
        probabilities = logits.softmax(1)
        confidence, predicted = probabilities.max(1)
        row = (batch["label"], predicted, confidence, ious, batch["box"], boxes)
        self._test_rows.append(tuple(t.detach().cpu().numpy() for t in row))
        if sum(len(g[0]) for g in self._grid) < GRID_IMAGES:
            self._grid.append((self.denormalize(batch["image"]), *self._test_rows[-1]))

    def write_test_report(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        names = self.class_names
        files: dict[str, Path] = {}
        if self._test_rows:
            labels, predicted, confidence, ious, true_boxes, boxes = (
                np.concatenate(parts) for parts in zip(*self._test_rows)
            )
            # actual/predicted first: DVC's confusion template (dvc.yaml) reads these two columns
            header = (
                "actual,predicted,confidence,iou,true_x_min,true_y_min,true_x_max,true_y_max,x_min,y_min,x_max,y_max"
            )
            rows = [
                [
                    names[labels[i]],
                    names[predicted[i]],
                    *(f"{v:.4f}" for v in (confidence[i], ious[i], *true_boxes[i], *boxes[i])),
                ]
                for i in range(len(labels))
            ]
            files["predictions"] = write_csv(directory / "predictions.csv", header.split(","), rows)
            confusion = multiclass_confusion_matrix(torch.from_numpy(predicted), torch.from_numpy(labels), len(names))
            files["confusion_matrix"] = plot_confusion_matrix(
                confusion.numpy(), names, directory / "confusion_matrix.png"
            )
        if self._grid:
            images, labels, predicted, confidence, ious, true_boxes, boxes = (
                np.concatenate(p)[:GRID_IMAGES] for p in zip(*self._grid)
            )
            files["box_grid"] = plot_box_grid(
                images, labels, predicted, ious, true_boxes, boxes, names, directory / "test_boxes.png"
            )
        return files
