"""What filters respond to: the first convolution's kernels, and inputs that maximise deeper filters.

The first layer's kernels are looked at directly (each one an image tile: RGB for colour input).
Deeper filters see combinations of earlier ones, so their preferred input is found instead, by
gradient ascent on the input from noise (Erhan et al. 2009; Chollet, 5.4.2), with the usual
regularisation (Yosinski et al. 2015): L2 decay of the image, a small random jitter each step and
an occasional Gaussian blur, and pixels kept in the range the network was trained on. All the
filters of one layer are optimised together, one image each, in one batch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.explain.activations import tile, upscale
from cnnlab.explain.layers import LayerRef, capture_output
from cnnlab.viz.figures import pyplot, save


def kernel_tiles(weight: torch.Tensor) -> np.ndarray:
    """O x I x k x k kernels -> O x k x k (x 3) uint8, each kernel stretched to the full range on its own."""
    kernels = weight.detach().float().cpu().numpy()
    if kernels.shape[1] not in (1, 3):  # a stem on other channel counts: show the mean over inputs
        kernels = kernels.mean(axis=1, keepdims=True)
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    high = kernels.max(axis=(1, 2, 3), keepdims=True)
    scaled = ((kernels - low) / np.maximum(high - low, 1e-8) * 255).round().astype(np.uint8)
    return scaled[:, 0] if scaled.shape[1] == 1 else scaled.transpose(0, 2, 3, 1)


def write_first_conv(weight: torch.Tensor, layer_name: str, path: Path) -> Path:
    """The first convolution's kernels as tiles, 8 per row, enlarged to about 32 px each."""
    tiles = kernel_tiles(weight)
    factor = max(1, 32 // tiles.shape[1])
    mosaic = tile(np.stack([upscale(t, factor) for t in tiles]), columns=min(16, len(tiles)), gap=2)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(min(12, 0.5 + mosaic.shape[1] / 60), 0.6 + mosaic.shape[0] / 60))
    axis.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, interpolation="nearest")
    axis.set_title(
        f"{layer_name}: {weight.shape[0]} kernels of {weight.shape[2]}x{weight.shape[3]} over {weight.shape[1]} "
        "channels",
        fontsize=8,
    )
    axis.axis("off")
    return save(figure, path)


def maximise_filters(
    network_forward: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    filters: Sequence[int],
    shape: tuple[int, int, int],
    pixel_range: tuple[torch.Tensor, torch.Tensor],
    steps: int = 48,
    lr: float = 0.05,
    l2: float = 1e-3,
    seed: int = 0,
) -> torch.Tensor:
    """sum(filters) x C x H x W inputs: for each layer l, images of its group maximise the mean
    activation of its filters 0 .. filters[l] - 1, one image each.

    `network_forward(x)` returns each layer's map (N x channels x h x w) for the whole batch; one
    forward and backward per step serves every layer. `pixel_range` is (low, high), per channel,
    of normalised inputs.
    """
    generator = torch.Generator().manual_seed(seed)
    low, high = pixel_range
    total = sum(filters)
    x = (torch.randn(total, *shape, generator=generator) * 0.1).clamp(low, high).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    groups, start = [], 0
    for count in filters:
        groups.append((torch.arange(start, start + count), torch.arange(count)))
        start += count
    for step in range(steps):
        shift = torch.randint(-2, 3, (2,), generator=generator).tolist()
        maps = network_forward(torch.roll(x, shifts=shift, dims=(2, 3)))
        activation = sum(
            layer_map[rows, channels].mean(dim=(1, 2)).sum() for layer_map, (rows, channels) in zip(maps, groups)
        )
        loss = -activation + l2 * x.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            if step % 8 == 7 and step < steps - 8:  # blur away high-frequency noise, not in the last steps
                x.copy_(_blur(x))
            x.copy_(torch.maximum(torch.minimum(x, high), low))
    return x.detach()


def _blur(x: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    taps = torch.exp(-(torch.arange(-1, 2, dtype=x.dtype) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    kernel = (taps[:, None] * taps[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


def deprocess(pixels: np.ndarray) -> np.ndarray:
    """N x H x W x C uint8 patterns -> contrast-stretched: centred, std 0.1 of the range, clipped (Chollet's
    deprocess_image).
    """
    x = pixels.astype(np.float64) / 255
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    x = x / (x.std(axis=(1, 2, 3), keepdims=True) + 1e-5) * 0.15 + 0.5
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def layer_patterns(task, refs: Sequence[LayerRef], filters: int, steps: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """Per layer of `refs`: (patterns of its first `filters` filters as N x H x W x C uint8, its channel count)."""
    hp = task.hparams
    backbone = task.backbone
    channels = hp.in_channels
    mean = torch.tensor(hp.mean or [0.0] * channels).view(1, -1, 1, 1)
    std = torch.tensor(hp.std or [1.0] * channels).view(1, -1, 1, 1)
    pixel_range = ((0 - mean) / std, (1 - mean) / std)
    shape = (channels, hp.image_size, hp.image_size)
    counts = [
        backbone.feature_channels[ref.stage] if ref.stage is not None else ref.module.out_channels for ref in refs
    ]
    shown = [min(filters, count) for count in counts]
    requires = [p.requires_grad for p in task.parameters()]
    for p in task.parameters():
        p.requires_grad_(False)  # gradients for the input only
    try:
        with contextlib.ExitStack() as stack:
            captured = {
                id(ref.module): stack.enter_context(capture_output(ref.module))
                for ref in refs
                if ref.module is not None
            }

            def forward(x: torch.Tensor) -> list[torch.Tensor]:
                for outputs in captured.values():
                    outputs.clear()
                stages = backbone.forward_features(task.network_input(x))
                return [stages[ref.stage] if ref.stage is not None else captured[id(ref.module)][-1] for ref in refs]

            patterns = maximise_filters(forward, shown, shape, pixel_range, steps, seed=seed)
    finally:
        for p, flag in zip(task.parameters(), requires):
            p.requires_grad_(flag)
    pictures = deprocess(task.denormalize(patterns))
    bounds = np.cumsum([0, *shown])
    return [(pictures[bounds[i] : bounds[i + 1]], counts[i]) for i in range(len(refs))]


def write_patterns(rows: Sequence[tuple[str, np.ndarray, int]], path: Path) -> Path:
    """One row per layer: (title, N x H x W x C patterns, channels of the layer) -> a labelled figure."""
    plt = pyplot()
    columns = max(len(patterns) for _, patterns, _ in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns, 1.25 * len(rows)), squeeze=False)
    for r, (title, patterns, count) in enumerate(rows):
        for c, axis in enumerate(axes[r]):
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if c < len(patterns):
                image = patterns[c]
                axis.imshow(
                    image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None
                )
                axis.set_title(f"filter {c}", fontsize=6)
        axes[r][0].set_ylabel(f"{title}\n({count} filters)", fontsize=7)
    figure.suptitle("inputs that maximise each filter (gradient ascent from noise)", fontsize=8)
    figure.tight_layout()
    return save(figure, path)
