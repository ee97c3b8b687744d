"""Every channel of every stage for one image: how successive stages transform their input.

As in Chollet's "Deep Learning with Python" (5.4.1): each channel is standardised on its own
(mean 0, std 1, then x 64 + 128, clipped), so a weak but structured channel stays visible; a channel
that is constant for this image (a dead ReLU) is drawn flat, and deeper stages show more of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image


def standardise_channels(maps: np.ndarray) -> np.ndarray:
    """C x h x w floats -> C x h x w uint8, each channel centred and scaled on its own."""
    centred = maps - maps.mean(axis=(1, 2), keepdims=True)
    std = centred.std(axis=(1, 2), keepdims=True)
    scaled = np.where(std > 1e-6, centred / np.maximum(std, 1e-6), 0.0) * 64 + 128
    return np.clip(scaled, 0, 255).astype(np.uint8)


def tile(tiles: np.ndarray, columns: int, gap: int = 1, fill: int = 255) -> np.ndarray:
    """N x h x w (x 3) -> one mosaic, `columns` wide, `gap` pixels of `fill` between tiles."""
    count, height, width = tiles.shape[:3]
    columns = max(1, min(columns, count))
    rows = int(np.ceil(count / columns))
    shape = (rows * (height + gap) - gap, columns * (width + gap) - gap, *tiles.shape[3:])
    mosaic = np.full(shape, fill, dtype=tiles.dtype)
    for i in range(count):
        r, c = divmod(i, columns)
        mosaic[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = tiles[
            i
        ]
    return mosaic


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement: each unit of a small map stays a visible square."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image


def colormap(gray: np.ndarray, name: str = "viridis") -> np.ndarray:
    """H x W uint8 -> H x W x 3 uint8 through a matplotlib colour map."""
    table = (colormaps[name](np.arange(256))[:, :3] * 255).astype(np.uint8)
    return table[gray]


def activation_grid(maps: torch.Tensor, max_channels: int, tile_pixels: int = 48) -> np.ndarray:
    """One stage's C x h x w map for one image -> an RGB mosaic of its first `max_channels` channels."""
    channels = standardise_channels(maps[:max_channels].detach().float().cpu().numpy())
    factor = max(1, tile_pixels // max(channels.shape[1:]))
    tiles = np.stack([upscale(colormap(c), factor) for c in channels])
    return tile(tiles, columns=int(np.ceil(np.sqrt(len(tiles)))), gap=2)


def write_activations(
    images: np.ndarray,
    stage_maps: Sequence[torch.Tensor],
    stages: Sequence[str],
    strides: Sequence[int],
    image_names: Sequence[str],
    directory: Path,
    max_channels: int,
) -> list[Path]:
    """For each image and stage, `<image>_<stage>.png`: the image, then its channels in that stage."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i, name in enumerate(image_names):
        for stage, stride, maps in zip(stages, strides, stage_maps):
            mosaic = activation_grid(maps[i], max_channels)
            picture = _with_input(images[i], mosaic)
            path = directory / f"{name}_{stage}_stride{stride}.png"
            Image.fromarray(picture).save(path, compress_level=3)
            files.append(path)
    return files


def _with_input(image: np.ndarray, mosaic: np.ndarray) -> np.ndarray:
    """The input image (scaled to the mosaic's height, at most 2x) to the left of the mosaic."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    factor = max(1, min(2, mosaic.shape[0] // rgb.shape[0]))
    rgb = upscale(rgb, factor)
    height = max(rgb.shape[0], mosaic.shape[0])
    canvas = np.full((height, rgb.shape[1] + 6 + mosaic.shape[1], 3), 255, np.uint8)
    canvas[: rgb.shape[0], : rgb.shape[1]] = rgb
    canvas[: mosaic.shape[0], rgb.shape[1] + 6 :] = mosaic
    return canvas
