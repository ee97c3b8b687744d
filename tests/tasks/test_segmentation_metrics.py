"""Split-level segmentation scores against hand-computed values; ignored pixels never count."""

import math

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnlab.tasks.segmentation import segmentation_scores

IGNORE = 255
TARGET = torch.tensor([[[0, 0, 1, 1], [2, 2, IGNORE, IGNORE]]])
PREDICTED = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]]])
# valid (true, predicted) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); the two ignored pixels say 2 and 0
# class 0: TP 1, true 2, predicted 2 -> IoU 1/3, Dice 2/4
# class 1: TP 2, true 2, predicted 3 -> IoU 2/3, Dice 4/5
# class 2: TP 1, true 2, predicted 1 -> IoU 1/2, Dice 2/3
IOU = [1 / 3, 2 / 3, 1 / 2]
DICE = [1 / 2, 4 / 5, 2 / 3]


def scores_of(*batches, num_classes=3):
    confusion = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE)
    for predicted, target in batches:
        confusion.update(predicted, target)
    return segmentation_scores(confusion.compute())


def test_miou_dice_and_pixel_accuracy_of_known_masks():
    scores = scores_of((PREDICTED, TARGET))
    assert scores["iou"].tolist() == pytest.approx(IOU)
    assert scores["miou"].item() == pytest.approx(sum(IOU) / 3)
    assert scores["dice_class"].tolist() == pytest.approx(DICE)
    assert scores["dice"].item() == pytest.approx(sum(DICE) / 3)
    assert scores["pixel_acc"].item() == pytest.approx(4 / 6)


def test_ignored_pixels_do_not_count():
    other_guess = PREDICTED.clone()
    other_guess[TARGET == IGNORE] = 1  # whatever is predicted on ignored pixels changes nothing
    assert scores_of((other_guess, TARGET))["iou"].tolist() == pytest.approx(IOU)
    all_ignored = torch.full_like(TARGET, IGNORE)
    assert scores_of((PREDICTED, TARGET), (PREDICTED, all_ignored))["miou"].item() == pytest.approx(sum(IOU) / 3)


def test_scores_are_over_the_whole_split_not_a_mean_of_batches():
    # batch 1 perfect on one background pixel, batch 2 is the example above: a per-batch mean would differ
    perfect = (torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 1, 1, dtype=torch.long))
    scores = scores_of(perfect, (PREDICTED, TARGET))
    # class 0 now: TP 2, true 3, predicted 3 -> 2/4
    assert scores["iou"].tolist() == pytest.approx([2 / 4, 2 / 3, 1 / 2])
    assert scores["pixel_acc"].item() == pytest.approx(5 / 7)


def test_a_class_absent_and_never_predicted_is_left_out_of_the_mean():
    scores = scores_of((PREDICTED, TARGET), num_classes=4)
    assert math.isnan(scores["iou"][3].item())
    assert scores["miou"].item() == pytest.approx(sum(IOU) / 3)
    assert scores["dice"].item() == pytest.approx(sum(DICE) / 3)


def test_a_class_predicted_but_absent_scores_zero():
    predicted = PREDICTED.clone()
    predicted[0, 0, 0] = 3  # one background pixel called class 3, which no mask has
    scores = scores_of((predicted, TARGET), num_classes=4)
    assert scores["iou"][3].item() == 0.0
    assert scores["iou"][0].item() == pytest.approx(0.0)  # class 0 lost its only hit
