"""FCN decoders (Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic Segmentation").

FCN-32s scores the deepest feature map and upsamples it to the input; FCN-16s and FCN-8s first fuse
in the scores of one or two shallower maps (the paper's pool4 and pool3), each step a learned 2x-ish
upsampling initialised to bilinear interpolation followed by a sum. Here "32/16/8" name the number of
maps used (the last 1, 2 or 3 of `forward_features`); the actual strides are the backbone's own
(`feature_strides`), so the same head sits on a stride-32 ImageNet stem or a stride-8 small-input one.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import ConfigError

FCN_VARIANTS = {"fcn32s": 1, "fcn16s": 2, "fcn8s": 3}  # variant -> feature maps it fuses


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The k x k kernel (k = 2f - f mod 2) with which a stride-f transposed conv interpolates bilinearly."""
    size = 2 * factor - factor % 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return (taps[:, None] * taps[None, :]).float()


class BilinearUpsample(nn.Module):
    """Learned x`factor` upsampling: a ConvTranspose2d initialised to bilinear interpolation.

    As initialised it equals `F.interpolate(x, scale_factor=factor, mode="bilinear",
    align_corners=False)` exactly, borders included: the input is edge-padded by one pixel before
    the transposed convolution and the result cropped, which is what interpolation's clamping to
    the edge amounts to (a plain zero-padded transposed conv darkens the border rows). Channels
    start uncoupled (the kernel sits on the diagonal, as in the FCN reference code) and may mix as
    they learn. factor=1 is the identity.
    """

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = int(factor)
        if self.factor < 1:
            raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
        self.conv = None
        if self.factor > 1:
            kernel = bilinear_kernel(self.factor)
            self.conv = nn.ConvTranspose2d(channels, channels, kernel.shape[0], stride=self.factor, bias=False)
            with torch.no_grad():
                self.conv.weight.zero_()
                for c in range(channels):
                    self.conv.weight[c, c] = kernel
            self.crop = self.factor + (kernel.shape[0] - self.factor) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return x
        height, width = x.shape[-2] * self.factor, x.shape[-1] * self.factor
        out = self.conv(F.pad(x, (1, 1, 1, 1), mode="replicate"))
        return out[..., self.crop : self.crop + height, self.crop : self.crop + width]


def align_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bring a score map to `size` by translation only: crop what overhangs, edge-pad what is short.

    Padded nets (ResNet, VGG, ...) round odd sizes up at the far edge, so their overhang is cropped
    there, keeping cell i over input pixel i x stride. The maps of unpadded nets (LeNet-5, the Keras
    CNN) lose a border at every valid convolution and come out short: they are centred and
    edge-padded. Never stretched: resizing a 56-px map to 64 px would move every boundary by a
    position-dependent amount (up to 4 px at the edges) that no translation-equivariant network can
    learn to undo, whereas a constant offset is learnt away by the layers below.
    """
    height, width = int(size[0]), int(size[1])
    x = x[..., :height, :width]
    pads = []
    for have, want in ((x.shape[-1], width), (x.shape[-2], height)):  # F.pad order: last dim first
        short = want - have
        pads += [short // 2, short - short // 2]
    return F.pad(x, pads, mode="replicate") if any(pads) else x


def _upsampling_factor(deep_stride: int, shallow_stride: int) -> int:
    ratio = deep_stride / shallow_stride
    return max(1, int(round(ratio)))


class FCNHead(nn.Module):
    """1x1 score layers on the last 1-3 feature maps, learned upsampling, skip fusion by summation.

    `forward(features, output_size)` takes the backbone's `forward_features` list and returns
    N x num_classes x H x W logits at `output_size`.
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        feature_strides: Sequence[int],
        num_classes: int,
        variant: str = "fcn8s",
        model_name: str = "backbone",
    ):
        super().__init__()
        if variant not in FCN_VARIANTS:
            raise ConfigError(
                f"task.module.variant={variant!r} is not valid; expected one of: {', '.join(FCN_VARIANTS)}"
            )
        maps = FCN_VARIANTS[variant]
        available = len(feature_channels)
        if available < maps:
            working = [name for name, needed in FCN_VARIANTS.items() if needed <= available]
            raise ConfigError(
                f"{variant} fuses the last {maps} feature maps, but model={model_name} yields only "
                f"{available} (strides {tuple(feature_strides)}); with this model use "
                f"task.module.variant={' or '.join(working) if working else '(none)'}, or pick a deeper model."
            )
        self.variant, self.maps = variant, maps
        channels = list(feature_channels[-maps:])[::-1]  # deep to shallow
        strides = list(feature_strides[-maps:])[::-1]
        self.score = nn.ModuleList(nn.Conv2d(c, num_classes, kernel_size=1) for c in channels)
        for layer in self.score[1:]:
            # as in the reference FCN-16s/8s: skip scores start at zero, so training starts from the coarser net
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.upsample = nn.ModuleList(
            BilinearUpsample(num_classes, _upsampling_factor(deep, shallow))
            for deep, shallow in zip(strides, strides[1:])
        )
        self.final_upsample = BilinearUpsample(num_classes, strides[-1])

    def forward(self, features: Sequence[torch.Tensor], output_size: Sequence[int]) -> torch.Tensor:
        used = list(features[-self.maps :])[::-1]
        scores = self.score[0](used[0])
        for upsample, score, feature in zip(self.upsample, self.score[1:], used[1:]):
            skip = score(feature)
            scores = align_to(upsample(scores), skip.shape[-2:]) + skip
        return align_to(self.final_upsample(scores), output_size)
