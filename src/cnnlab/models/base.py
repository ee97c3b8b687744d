"""The contract every architecture keeps, so any task head can sit on any backbone."""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn

from cnnlab.config import ConfigError


class Backbone(nn.Module):
    """A CNN classifier whose body also yields multi-scale feature maps.

    Subclasses keep the reference (torchvision) module names so `state_dict()` loads reference
    weights, set `feature_channels` / `feature_strides` (shallow to deep, one entry per map that
    `forward_features` returns) and implement `forward_features` and `forward_head`.
    `feature_strides` are the nominal reductions of each map relative to the input: a padded
    network at input size S gives maps of ceil(S / stride); unpadded ones (LeNet-5) a bit less.

    Each class also declares `MIN_INPUT_SIZE`, the smallest square input per `small_input` setting
    (what the registry reports and `check_input_size` enforces), and `CLASSIFIER`, the names of the
    modules only `forward_head` runs (what `remove_classifier` drops for tasks that read feature maps).
    """

    feature_channels: Sequence[int] = ()
    feature_strides: Sequence[int] = ()
    MIN_INPUT_SIZE: ClassVar[dict[bool, int]] = {False: 1, True: 1}
    CLASSIFIER: ClassVar[tuple[str, ...]] = ("classifier",)
    features_only = False  # True after remove_classifier: forward returns the feature maps

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at increasing stride; the last one feeds the classifier."""
        raise NotImplementedError

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Class logits from the feature maps."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Class logits; the feature maps once the classifier is removed."""
        features = self.forward_features(x)
        return features if self.features_only else self.forward_head(features)

    def remove_classifier(self) -> "Backbone":
        """Drop the modules of `CLASSIFIER` (for tasks that read only the feature maps); returns self.

        A parameter that never gets a gradient stops multi-process (DDP) training, and a removed classifier is
        not saved or logged. Weights that carry a classifier (torchvision files, classification checkpoints)
        still load: its tensors are skipped on load. Call it after building, so that the body is initialised
        from the same random draws as a full backbone.
        """
        for name in self.CLASSIFIER:
            if getattr(self, name, None) is not None:
                setattr(self, name, None)
        if not self.features_only:
            self.register_load_state_dict_pre_hook(_skip_classifier_keys)
        self.features_only = True
        return self

    @property
    def num_features(self) -> int:
        """Channels of the deepest feature map (what a pooled head receives)."""
        return self.feature_channels[-1]


class SequentialBackbone(Backbone):
    """A backbone whose body is one `features` Sequential, cut into stages at `_stage_ends`.

    Layers before `_stage_start` yield no map (VGG's first block, whose stride-2 map no head uses).
    The head average-pools the deepest map with `avgpool` and runs `classifier`; a family without
    an `avgpool` module overrides `forward_head`.
    """

    features: nn.Sequential
    _stage_ends: tuple[int, ...]
    _stage_start: int = 0

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.features[: self._stage_start](x)
        maps, start = [], self._stage_start
        for end in self._stage_ends:
            x = self.features[start:end](x)
            maps.append(x)
            start = end
        return maps

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(features[-1]), 1))


def _skip_classifier_keys(module: Backbone, state_dict: dict, prefix: str, *args) -> None:
    """A classifier-less backbone loads weights that have one: their classifier tensors are skipped."""
    dropped = tuple(f"{prefix}{name}." for name in module.CLASSIFIER)
    for key in [k for k in state_dict if k.startswith(dropped)]:
        del state_dict[key]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """(W - F + 2P) / S + 1, with dilation: the size of a convolution or pooling output."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_input_size(name: str, image_size: int, minimum: dict[bool, int], small_input: bool) -> None:
    """Fail at build time when `image_size` is below the minimum of this `small_input` setting.

    The registry's `min_input_size` is the smallest size over all settings (the small-input stem);
    families whose default stem needs more call this with their `MIN_INPUT_SIZE`.
    """
    if image_size < minimum[small_input]:
        hint = "" if small_input else f" (or set model.small_input=true, which works from {minimum[True]} px)"
        raise ConfigError(
            f"model={name} with small_input={small_input} needs inputs of at least "
            f"{minimum[small_input]}x{minimum[small_input]} px, but data.image_size={image_size}: "
            f"raise data.image_size{hint}."
        )
