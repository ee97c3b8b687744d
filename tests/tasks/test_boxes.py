"""Box geometry, box losses and localisation accuracy against hand-computed values."""

import pytest
import torch

from cnnlab.models.networks import BoxHead, center_size_to_corners
from cnnlab.tasks.boxes import box_iou, box_loss, generalized_box_iou
from cnnlab.tasks.localization import localization_accuracy


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_iou_of_known_boxes():
    predicted = boxes([0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 2], [0, 0, 1, 1])
    target = boxes([1, 1, 3, 3], [0, 0, 2, 2], [2, 0, 6, 2], [2, 2, 3, 3])
    # overlap 1 of union 7; identical; half of each (2x2 of 4x2 boxes: 4 of 12); disjoint
    assert box_iou(predicted, target) == pytest.approx([1 / 7, 1.0, 4 / 12, 0.0], abs=1e-6)


def test_giou_of_disjoint_boxes_is_negative():
    # unit boxes one gap apart: union 2, enclosing box 3x1 = 3, GIoU = 0 - (3 - 2) / 3
    giou = generalized_box_iou(boxes([0, 0, 1, 1]), boxes([2, 0, 3, 1]))
    assert giou.item() == pytest.approx(-1 / 3, abs=1e-6)
    # diagonal neighbours: union 2, enclosing 2x2 = 4 -> -0.5
    assert generalized_box_iou(boxes([0, 0, 1, 1]), boxes([1, 1, 2, 2])).item() == pytest.approx(-0.5, abs=1e-6)


def test_giou_equals_iou_when_one_box_contains_the_other():
    outer, inner = boxes([0, 0, 4, 4]), boxes([1, 1, 3, 3])
    assert generalized_box_iou(outer, inner).item() == pytest.approx(4 / 16, abs=1e-6)


def test_box_losses():
    predicted, target = boxes([0.1, 0.1, 0.5, 0.5]), boxes([0.2, 0.1, 0.5, 0.3])
    # squared errors 0.01, 0, 0, 0.04 -> mean 0.0125
    assert box_loss(predicted, target, "l2").item() == pytest.approx(0.0125, abs=1e-7)
    # smooth L1 with beta 0.05: |0.1| -> 0.1 - 0.025, |0.2| -> 0.2 - 0.025, mean over 4
    assert box_loss(predicted, target, "smooth_l1").item() == pytest.approx((0.075 + 0.175) / 4, abs=1e-6)
    # target inside prediction: IoU = 0.3 * 0.2 / (0.4 * 0.4), hull = prediction -> GIoU = IoU
    assert box_loss(predicted, target, "giou").item() == pytest.approx(1 - 0.06 / 0.16, abs=1e-6)
    with pytest.raises(ValueError, match="giou"):
        box_loss(predicted, target, "l3")


def test_giou_loss_has_a_gradient_for_disjoint_boxes():
    predicted = boxes([0, 0, 1, 1]).requires_grad_()
    box_loss(predicted, boxes([2, 0, 3, 1]), "giou").backward()
    assert predicted.grad.abs().sum() > 0  # plain IoU would give zero here


def test_center_size_to_corners():
    assert center_size_to_corners(boxes([0.5, 0.4, 0.2, 0.6]))[0].tolist() == pytest.approx([0.4, 0.1, 0.6, 0.7])


def test_localization_accuracy_needs_right_class_and_iou_at_least_half():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 0, 1])
    ious = torch.tensor([0.5, 0.49, 0.9, 0.7])
    # right+0.5 counts, right+0.49 does not, wrong class does not, right+0.7 counts
    assert localization_accuracy(logits, labels, ious).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_box_head_starts_at_a_valid_central_box():
    head = BoxHead(channels=8, pool_size=4, hidden=16)
    out = head(torch.randn(3, 8, 5, 5))
    assert out.shape == (3, 4)
    assert (out[:, 2:] >= out[:, :2]).all() and (out >= 0).all() and (out <= 1).all()
    assert out.mean(0).tolist() == pytest.approx([0.3, 0.3, 0.7, 0.7], abs=0.1)
