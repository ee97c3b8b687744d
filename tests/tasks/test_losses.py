"""Class losses against hand-computed values: label smoothing (every task) and mixup (classification)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from cnnlab.tasks.classification import ClassificationTask
from cnnlab.tasks.segmentation import SegmentationTask


def smoothed_cross_entropy(logits: torch.Tensor, label: int, smoothing: float) -> torch.Tensor:
    """-sum(q log p) with q = (1 - e) one-hot + e / classes, written out."""
    classes = logits.shape[-1]
    targets = torch.full((classes,), smoothing / classes)
    targets[label] += 1 - smoothing
    return -(targets * logits.log_softmax(-1)).sum()


def test_label_smoothing_is_cross_entropy_against_smoothed_targets(make_task_arguments):
    task = ClassificationTask(**make_task_arguments("simple_cnn", num_classes=4), label_smoothing=0.2)
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 3.0, -2.0]])
    expected = (smoothed_cross_entropy(logits[0], 0, 0.2) + smoothed_cross_entropy(logits[1], 2, 0.2)) / 2
    torch.testing.assert_close(task.loss(logits, torch.tensor([0, 2])), expected)
    # 0.2 smoothing on 4 classes: the right class aims at 0.85, not 1
    plain = ClassificationTask(**make_task_arguments("simple_cnn", num_classes=4))
    assert plain.loss(logits, torch.tensor([0, 2])) < task.loss(logits, torch.tensor([0, 2]))


def test_segmentation_smooths_labelled_pixels_and_skips_ignored_ones(make_task_arguments):
    task = SegmentationTask(**make_task_arguments("resnet18", num_classes=3, small_input=True), label_smoothing=0.1)
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, 0.5], [5.0, 5.0, -5.0]]).T.reshape(1, 3, 1, 3)
    masks = torch.tensor([[[0, 1, 255]]])  # the third pixel is a boundary: no loss at all
    expected = (
        smoothed_cross_entropy(logits[0, :, 0, 0], 0, 0.1) + smoothed_cross_entropy(logits[0, :, 0, 1], 1, 0.1)
    ) / 2
    torch.testing.assert_close(task.loss(logits, masks), expected)


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_mixup_blends_images_and_both_labels_by_the_drawn_weight(make_task_arguments):
    task = ClassificationTask(**make_task_arguments("simple_cnn", num_classes=4), mixup_alpha=0.4).eval()
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    with mock.patch("numpy.random.beta", return_value=0.3) as beta:
        torch.manual_seed(7)
        loss = task.training_step({"image": images, "label": labels}, 0)
    beta.assert_called_once_with(0.4, 0.4)
    torch.manual_seed(7)
    order = torch.randperm(6)
    logits = task(0.3 * images + 0.7 * images[order])
    expected = 0.3 * F.cross_entropy(logits, labels) + 0.7 * F.cross_entropy(logits, labels[order])
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(task(images), labels))
