"""Semantic segmentation: an FCN decoder on any backbone, per-pixel cross-entropy, split-level IoU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnlab.config import ConfigError
from cnnlab.models.networks import SegmentationNetwork
from cnnlab.tables import write_csv
from cnnlab.tasks.base import CamPrediction, CNNTask, PredictionInput
from cnnlab.tracking.store import metric_keys
from cnnlab.viz.classification import plot_confusion_matrix
from cnnlab.viz.segmentation import plot_mask_grid

GRID_IMAGES = 16  # test images kept for the overlay grid


def segmentation_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores from a (true x predicted) pixel confusion matrix accumulated over a whole split.

    Returns iou and dice per class (NaN for a class that is neither present nor predicted),
    miou and dice (means over the classes that are not NaN) and pixel_acc. Ignored pixels never
    reach the matrix, so they count nowhere.
    """
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    predicted = confusion.sum(0)
    actual = confusion.sum(1)
    union = actual + predicted - true_positive
    iou = true_positive / union  # 0/0 = NaN: the class is absent from this split and never predicted
    dice = 2 * true_positive / (actual + predicted)
    return {
        "iou": iou,
        "dice_class": dice,
        "miou": iou.nanmean(),
        "dice": dice.nanmean(),
        "pixel_acc": true_positive.sum() / confusion.sum().clamp(min=1),
    }


class SegmentationTask(CNNTask):
    """Backbone features -> FCN-32s/16s/8s -> per-pixel class logits at input resolution (`SegmentationNetwork`).

    `num_classes` counts the mask classes including background; pixels labelled `ignore_index`
    (object boundaries in VOC and Oxford-IIIT Pet trimaps) carry no loss and no metric.
    """

    name = "segmentation"
    labels = ("mask",)
    output = "N x K x H x W per-pixel class probabilities"
    prediction_columns = ("mask", "classes")

    @classmethod
    def output_classes(cls, meta: dict) -> list[str]:
        """The mask classes, background first (a dataset without mask class names: its classes)."""
        return list(meta.get("mask_classes") or meta["classes"])

    def __init__(
        self,
        *args,
        variant: str = "fcn8s",
        class_weights: Optional[list[float]] = None,
        ignore_index: int = 255,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        n = self.hparams.num_classes
        if class_weights is not None and len(class_weights) != n:
            raise ConfigError(
                f"task.module.class_weights has {len(class_weights)} entries but the data has {n} mask classes "
                f"({', '.join(self.class_names)}); give one weight per class or null"
            )
        self.register_buffer(
            "class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        )
        self.val_confusion = MulticlassConfusionMatrix(n, ignore_index=ignore_index)
        self.test_confusion = MulticlassConfusionMatrix(n, ignore_index=ignore_index)
        self._grid: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def build_network(self) -> SegmentationNetwork:
        hp = self.hparams
        return SegmentationNetwork(
            self.build_backbone(), hp.num_classes, hp.get("variant", "fcn8s"), hp.model.get("name", "backbone")
        )

    def model_metadata(self) -> dict:
        return {"mask_class_names": self.class_names}

    @classmethod
    def prediction_row(cls, output: np.ndarray, image: PredictionInput) -> dict[str, str]:
        """The mask at the input image's size (nearest), saved as a PNG, and each class's share of it."""
        names = image.class_names
        classes = np.argmax(output, axis=0).astype(np.uint8)
        mask = cv2.resize(classes, (image.width, image.height), interpolation=cv2.INTER_NEAREST)
        counts = np.bincount(mask.ravel(), minlength=len(names))
        present = [(names[i], counts[i] / mask.size) for i in np.argsort(-counts, kind="stable") if counts[i]]
        return {"mask": image.save_mask(mask), "classes": ";".join(f"{n}:{f:.4f}" for n, f in present)}

    def cam_target(self, output: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
        """The class's pixel scores (logits) summed over the image: where the network sees that class."""
        n, _, height, width = output.shape
        return output.gather(1, class_index.view(n, 1, 1, 1).expand(n, 1, height, width)).sum((1, 2, 3))

    def cam_prediction(self, output: torch.Tensor) -> CamPrediction:
        return CamPrediction(masks=output.argmax(1))  # no one class per image: every class gets its map

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits,
            masks,
            weight=self.class_weights,
            ignore_index=self.hparams.ignore_index,
            label_smoothing=self.hparams.label_smoothing,
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"])
        batch_size = len(logits)
        valid = batch["mask"] != self.hparams.ignore_index
        pixel_acc = (logits.argmax(1) == batch["mask"])[valid].float().mean()
        self.log_training({"train/loss": loss, "train/pixel_acc": pixel_acc}, batch_size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["mask"]), prog_bar=True, sync_dist=True, batch_size=len(logits))
        self.val_confusion.update(logits.argmax(1), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", self.val_confusion)

    def on_test_epoch_start(self) -> None:
        self._grid = []
        self.test_confusion.reset()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("test/loss", self.loss(logits, batch["mask"]), sync_dist=True, batch_size=len(logits))
        predicted = logits.argmax(1)
        self.test_confusion.update(predicted, batch["mask"])
        if sum(len(g[0]) for g in self._grid) < GRID_IMAGES:
            self._grid.append((self.denormalize(batch["image"]), batch["mask"].cpu().numpy(), predicted.cpu().numpy()))

    def on_test_epoch_end(self) -> None:
        self._test_confusion_matrix = self.test_confusion.compute().cpu()
        self._log_scores("test", self.test_confusion, keep=True)

    def _log_scores(self, stage: str, confusion_metric: MulticlassConfusionMatrix, keep: bool = False) -> None:
        # the matrix holds every pixel of the split (synced across DDP ranks by torchmetrics): split-level
        # IoU, not a mean of per-batch IoUs, which would over-weight small batches and rare classes
        scores = segmentation_scores(confusion_metric.compute())
        for key in ("miou", "pixel_acc", "dice"):
            self.log(f"{stage}/{key}", scores[key].float(), prog_bar=key == "miou")
        for key, value in zip(metric_keys(f"{stage}/iou_class", self.class_names), scores["iou"]):
            if not torch.isnan(value):
                self.log(key, value.float())
        if not keep:
            confusion_metric.reset()

    def write_test_report(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        names = self.class_names
        confusion = getattr(self, "_test_confusion_matrix", None)
        if confusion is None:
            confusion = self.test_confusion.compute().cpu()
        scores = segmentation_scores(confusion)
        rows = [
            (name, f"{float(iou):.6f}", f"{float(dice):.6f}", int(count))
            for name, iou, dice, count in zip(names, scores["iou"], scores["dice_class"], confusion.sum(1))
        ]
        table = write_csv(directory / "per_class_iou.csv", ["class", "iou", "dice", "pixels"], rows)
        files = {
            "per_class_iou": table,
            "pixel_confusion_matrix": plot_confusion_matrix(
                confusion.numpy(), names, directory / "pixel_confusion_matrix.png"
            ),
        }
        if self._grid:
            images, masks, predicted = (np.concatenate(parts)[:GRID_IMAGES] for parts in zip(*self._grid))
            files["mask_grid"] = plot_mask_grid(
                images, masks, predicted, names, directory / "test_masks.png", ignore_index=self.hparams.ignore_index
            )
        return files
