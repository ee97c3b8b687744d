"""Class-activation maps: where in the image the evidence for a class lies, at a chosen stage.

Three methods, all on Captum's layer attributions, on the map of one stage or convolution:

- Grad-CAM (Selvaraju et al. 2017, `captum.attr.LayerGradCam`): channels weighted by their
  spatially averaged gradient, summed, ReLU.
- Grad-CAM++ (Chattopadhay et al. 2018): channels weighted by the positive gradients, each location
  weighted by the closed-form second-order coefficients, which spreads the map over the whole
  object instead of its most telling part; the layer's gradients and activations come from Captum
  (`LayerGradientXActivation(multiply_by_inputs=False)`, `LayerActivation`).
- HiResCAM (Draelos & Carin 2020): gradient times activation element-wise, summed over channels,
  ReLU (`captum.attr.LayerGradientXActivation`). It does not average the gradient over the map,
  so it shows only locations that raise the score. Where a global average pool and one linear
  layer follow the map (a classifier's deepest stage) the gradient is constant over the map and
  HiResCAM equals Grad-CAM (and CAM, Zhou et al. 2016); on other layers they differ.

What a map explains is the task's `cam_target(output, class_index)`: a class logit, the
localisation's class head, or a segmentation class's pixel scores summed. Maps are upsampled
(bilinear) to the input size and scaled to [0, 1] per image.

Smoothing (`smooth=True`, cnnlab-explain's default): the mean of the maps of the image, its mirror
image and the two at 1.25x and 1.5x the size, each mapped back onto the image (the test-time
augmentation of pytorch-grad-cam's `aug_smooth`, with rescaling for its multiplications). The
deepest stage has cells of 16 px and more, so one map can only peak near a cell centre, and its
evidence sits where one class is told from another, often at a corner or just outside the outline;
the views move both, and their mean peaks on the object (benchmarks/RESULTS.md: the pointing game
goes from 0.75 to 0.98 for Grad-CAM++). A model with a fixed input size (LeNet-5's flatten) gets
the mirror only.

Also here: the pointing game (Zhang et al. 2016) and the rank correlation of the model
randomisation test (Adebayo et al. 2018) that benchmarks/explain.py and the tests use.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from captum.attr import LayerActivation, LayerAttribution, LayerGradCam, LayerGradientXActivation
from matplotlib import colormaps
from matplotlib.patches import Rectangle
from scipy.stats import rankdata

from cnnlab.explain.layers import LayerRef, hooked_module, resolve_layer
from cnnlab.viz.figures import pyplot, save

CAM_METHODS = ("gradcam", "gradcampp", "hirescam")
DEFAULT_CAM_METHODS = ("gradcam", "gradcampp")
SMOOTH_SCALES = (1.0, 1.25, 1.5)  # with and without a mirror: six views


def class_maps(
    task, images: torch.Tensor, ref: LayerRef, classes: torch.Tensor, method: str, smooth: bool = False
) -> np.ndarray:
    """N x H x W maps in [0, 1]: evidence for `classes[i]` in image i at layer `ref`, by `method`;
    with `smooth`, the mean over mirrored and enlarged views (module docstring)."""
    if not smooth:
        return _view_maps(task, images, ref, classes, method)
    size = tuple(images.shape[-2:])
    total = np.zeros((len(images), *size))
    for scale in [s for s in SMOOTH_SCALES if _accepts(task, images, s)]:
        for mirror in (False, True):
            view = images.flip(-1) if mirror else images
            if scale != 1.0:
                view = torch.nn.functional.interpolate(view, scale_factor=scale, mode="bilinear", align_corners=False)
            maps = torch.from_numpy(_view_maps(task, view, ref, classes, method))
            if scale != 1.0:
                maps = torch.nn.functional.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[
                    :, 0
                ]
            total += (maps.flip(-1) if mirror else maps).numpy()
    peak = total.reshape(len(total), -1).max(1).clip(min=1e-12)[:, None, None]
    return (total / peak).astype(np.float32)


def _accepts(task, images: torch.Tensor, scale: float) -> bool:
    """Whether the network runs on `images` enlarged by `scale` (not one whose head fixes the input size)."""
    if scale == 1.0:
        return True
    try:
        with torch.no_grad():
            task(torch.nn.functional.interpolate(images[:1], scale_factor=scale, mode="bilinear", align_corners=False))
    except RuntimeError:  # e.g. "mat1 and mat2 shapes cannot be multiplied" behind a flatten
        return False
    return True


def _view_maps(task, images: torch.Tensor, ref: LayerRef, classes: torch.Tensor, method: str) -> np.ndarray:
    def forward(x: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
        return task.cam_target(task(x), class_index)

    with hooked_module(task.backbone, ref) as layer:
        if method == "gradcam":
            maps = LayerGradCam(forward, layer).attribute(
                images, additional_forward_args=(classes,), relu_attributions=True
            )
        elif method == "gradcampp":
            gradients = LayerGradientXActivation(forward, layer, multiply_by_inputs=False).attribute(
                images, additional_forward_args=(classes,)
            )
            activations = LayerActivation(forward, layer).attribute(images, additional_forward_args=(classes,))
            maps = _gradcam_plus_plus(gradients.detach(), activations.detach())
        elif method == "hirescam":
            maps = LayerGradientXActivation(forward, layer).attribute(images, additional_forward_args=(classes,))
            maps = maps.sum(1, keepdim=True).clamp(min=0)
        else:
            raise ValueError(f"unknown CAM method {method!r}; expected one of {CAM_METHODS}")
    maps = LayerAttribution.interpolate(maps.detach().float(), tuple(images.shape[-2:]), "bilinear")[:, 0]
    peak = maps.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
    return (maps.clamp(min=0) / peak).cpu().numpy()


def _gradcam_plus_plus(gradients: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """N x 1 x h x w Grad-CAM++ maps from a layer's N x C x h x w gradients and activations
    (the closed form for an exponential of the score, as in the paper's eq. 19)."""
    squared = gradients.pow(2)
    denominator = 2 * squared + activations.sum((2, 3), keepdim=True) * squared * gradients
    alpha = torch.where(
        gradients != 0, squared / torch.where(denominator != 0, denominator, torch.ones_like(denominator)), 0.0
    )
    weights = (alpha * gradients.clamp(min=0)).sum((2, 3), keepdim=True)
    return (weights * activations).sum(1, keepdim=True).clamp(min=0)


# ---- measures ---------------------------------------------------------------------------------------
def pointing_hits(maps: np.ndarray, object_masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Per image: whether the map's maximum lies on the object (`object_masks` N x H x W bool), or
    within `tolerance` pixels of it (Zhang et al. allow 15 px at 224 px)."""
    n, height, width = object_masks.shape
    rows, cols = np.divmod(maps.reshape(n, -1).argmax(1), width)
    if tolerance == 0:
        return object_masks[np.arange(n), rows, cols]
    ys, xs = np.mgrid[:height, :width]
    near = (ys[None] - rows[:, None, None]) ** 2 + (xs[None] - cols[:, None, None]) ** 2 <= tolerance**2
    return (near & object_masks).any(axis=(1, 2))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per image of two N x H x W map sets (ties share their mean rank).

    A flat map (Grad-CAM's ReLU can zero a whole map) has no ranks: two equal flat maps count as
    1, a flat map against a varied one as 0.
    """
    out = []
    for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1)):
        rx, ry = rankdata(x), rankdata(y)
        if rx.std() == 0 or ry.std() == 0:
            out.append(1.0 if np.array_equal(x, y) else 0.0)
        else:
            out.append(float(np.corrcoef(rx, ry)[0, 1]))
    return np.asarray(out)


def randomisation_blocks(task, depth: int = 3) -> list[str]:
    """Blocks of modules with parameters (names cut to `depth` parts), output side first: the
    order in which the cascading randomisation test re-initialises them."""
    blocks: list[str] = []
    for name, module in task.network.named_modules():  # the network's names: backbone.*, head.*
        if name and any(True for _ in module.parameters(recurse=False)) and hasattr(module, "reset_parameters"):
            block = ".".join(name.split(".")[:depth])
            if block not in blocks:
                blocks.append(block)
    return blocks[::-1]


def cascading_randomisation(
    task,
    images: torch.Tensor,
    ref_name: str,
    classes: torch.Tensor,
    method: str,
    depth: int = 3,
    seed: int = 0,
    smooth: bool = False,
) -> list[tuple[str, float]]:
    """Adebayo et al.'s model randomisation test: re-initialise blocks from the output side, one more
    each step, and give the mean rank correlation of each step's maps with the trained model's."""
    trained = class_maps(task, images, resolve_layer(task.backbone, ref_name, "layer"), classes, method, smooth)
    randomised = copy.deepcopy(task).eval()
    torch.manual_seed(seed)
    results = []
    for block in randomisation_blocks(randomised, depth):
        for name, module in randomised.network.named_modules():
            if (name == block or name.startswith(block + ".")) and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        maps = class_maps(
            randomised, images, resolve_layer(randomised.backbone, ref_name, "layer"), classes, method, smooth
        )
        results.append((block, float(rank_correlation(trained, maps).mean())))
    return results


# ---- pictures ---------------------------------------------------------------------------------------
def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """H x W x C uint8 image with an H x W [0, 1] map in the jet colour map blended over it."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    heat = colormaps["jet"](cam)[..., :3] * 255
    return (rgb * (1 - alpha) + heat * alpha).round().clip(0, 255).astype(np.uint8)


def _draw_box(axis, box: Sequence[float], size: tuple[int, int], color: str) -> None:
    height, width = size
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    axis.add_patch(
        Rectangle(
            (x_min * width - 0.5, y_min * height - 0.5),
            (x_max - x_min) * width,
            (y_max - y_min) * height,
            fill=False,
            edgecolor=color,
            linewidth=1.2,
        )
    )


def plot_class_cams(
    images: np.ndarray,
    columns: Sequence[tuple[str, np.ndarray, Sequence[str]]],
    row_titles: Sequence[str],
    path: Path,
    *,
    predicted_boxes: Optional[np.ndarray] = None,
    true_boxes: Optional[np.ndarray] = None,
    outlines: Optional[np.ndarray] = None,
    title: str = "",
) -> Path:
    """Rows of images: the input, then one CAM overlay per column (header, N x H x W maps, per-image captions).

    Boxes (normalised corners), where given, are drawn on every panel: predicted red, true green;
    `outlines` (N x H x W bool, the true objects of a mask) are drawn in white on every panel.
    """
    plt = pyplot()
    rows, cols = len(images), 1 + len(columns)
    figure, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.75 * rows + 0.3), squeeze=False)
    size = images.shape[1:3]
    for r in range(rows):
        panels = [(images[r] if images.shape[3] == 3 else np.repeat(images[r], 3, axis=2), row_titles[r])]
        panels += [(overlay(images[r], maps[r]), captions[r]) for _, maps, captions in columns]
        for c, (picture, caption) in enumerate(panels):
            axis = axes[r][c]
            axis.imshow(picture)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(caption, fontsize=6)
            if predicted_boxes is not None:
                _draw_box(axis, predicted_boxes[r], size, "red")
            if true_boxes is not None:
                _draw_box(axis, true_boxes[r], size, "lime")
            if outlines is not None and outlines[r].any():
                axis.contour(outlines[r].astype(float), levels=[0.5], colors="white", linewidths=0.8)
    for c, (header, _, _) in enumerate(columns):
        axes[0][c + 1].set_title(f"{header}\n{axes[0][c + 1].get_title()}", fontsize=6)
    axes[0][0].set_title(f"input\n{axes[0][0].get_title()}", fontsize=6)
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    return save(figure, path)
