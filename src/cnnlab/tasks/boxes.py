"""Paired box geometry and box losses, on (x_min, y_min, x_max, y_max) boxes.

"Paired": row i of the predictions is compared with row i of the targets (one object per image),
not every box with every box as in detection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BOX_LOSSES = ("l2", "smooth_l1", "giou")


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of N x 4 boxes; inverted boxes count as empty."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _intersection_union(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    bottom_right = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    overlap = (bottom_right - top_left).clamp(min=0)
    intersection = overlap[:, 0] * overlap[:, 1]
    union = box_area(boxes1) + box_area(boxes2) - intersection
    return intersection, union


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of each pair (row i of boxes1 with row i of boxes2): N x 4, N x 4 -> N."""
    intersection, union = _intersection_union(boxes1, boxes2)
    return intersection / (union + eps)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """GIoU of each pair (Rezatofighi et al. 2019): IoU - (hull - union) / hull, in (-1, 1].

    Unlike IoU it still has a gradient when the boxes do not overlap: it falls towards -1 as
    they move apart inside their enclosing box.
    """
    intersection, union = _intersection_union(boxes1, boxes2)
    hull_size = torch.maximum(boxes1[:, 2:], boxes2[:, 2:]) - torch.minimum(boxes1[:, :2], boxes2[:, :2])
    hull = hull_size[:, 0] * hull_size[:, 1]
    return intersection / (union + eps) - (hull - union) / (hull + eps)


def box_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean box loss over the batch: l2 (squared error per coordinate), smooth_l1, or giou (1 - GIoU)."""
    if kind == "l2":
        return F.mse_loss(predicted, target)
    if kind == "smooth_l1":
        # beta in image units: coordinates are normalised, so the usual beta=1 would be pure L2
        return F.smooth_l1_loss(predicted, target, beta=0.05)
    if kind == "giou":
        return (1 - generalized_box_iou(predicted, target)).mean()
    raise ValueError(f"box_loss={kind!r}; expected one of: {', '.join(BOX_LOSSES)}")
