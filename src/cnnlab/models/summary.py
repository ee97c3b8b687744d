"""Keras-style model summary: every leaf layer's output shape, parameters and multiply-accumulates.

MACs are counted for one sample, for the layers that do the arithmetic: a convolution costs
out_h * out_w * out_c * k_h * k_w * in_c / groups, a transposed convolution the same per input
position, a linear layer in * out per position. Biases, normalisation, activations and pooling count
as zero, so totals match the usual published "FLOPs" (really GMACs) of torchvision's model cards.
Works on the meta device, so a 140M-parameter model is summarised without allocating its weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from hydra.utils import instantiate
from torch import nn

from cnnlab.config import ConfigError

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class LayerRow:
    name: str  # qualified module name, as in state_dict keys
    kind: str  # module class
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int  # counted at the layer's first call only
    macs: int  # per sample


@dataclass
class ModelSummary:
    input_shape: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0

    @property
    def params_not_run(self) -> int:
        """Parameters of modules the forward pass skipped (e.g. auxiliary heads in eval mode)."""
        return self.total_params - sum(row.params for row in self.rows)


def layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of `module` for one sample (batch dimension divided out)."""
    batch = output.shape[0] if output.dim() > 0 else 1
    if isinstance(module, _CONVS):
        kernel = math.prod(module.kernel_size)
        return output.numel() // batch * kernel * module.in_channels // module.groups
    if isinstance(module, _TRANSPOSED_CONVS):
        kernel = math.prod(module.kernel_size)
        return inputs[0].numel() // batch * kernel * module.out_channels // module.groups
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    return 0


def summarize(model: nn.Module, input_shape: Sequence[int]) -> ModelSummary:
    """Run one sample of `input_shape` (C, H, W) through `model` in eval mode and tabulate its leaf layers.

    The input lives on the device and dtype of the model's parameters (meta works: shapes only).
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    summary = ModelSummary(input_shape=tuple(input_shape))
    seen: set[int] = set()
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple, output) -> None:
        tensor = _first_tensor(output)
        if tensor is None:
            return
        params = 0
        if id(module) not in seen:
            seen.add(id(module))
            params = sum(p.numel() for p in module.parameters(recurse=False))
        macs = layer_macs(module, inputs, tensor)
        summary.rows.append(LayerRow(names[module], type(module).__name__, tuple(tensor.shape[1:]), params, macs))

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    summary.total_params = sum(p.numel() for p in model.parameters())
    summary.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary.total_macs = sum(row.macs for row in summary.rows)
    return summary


def format_summary(summary: ModelSummary, title: str = "") -> str:
    """The summary as a fixed-width text table with totals at the bottom."""
    header = ("Layer (type)", "Output shape", "Params", "MACs")
    body = [
        (f"{row.name} ({row.kind})", "x".join(map(str, row.output_shape)), f"{row.params:,}", f"{row.macs:,}")
        for row in summary.rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]

    def render(line: tuple[str, str, str, str]) -> str:
        return f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {line[2]:>{widths[2]}}  {line[3]:>{widths[3]}}"

    rule_width = sum(widths) + 6
    lines = [title] if title else []
    lines += [f"Input: {'x'.join(map(str, summary.input_shape))}", "=" * rule_width, render(header), "=" * rule_width]
    lines += [render(line) for line in body]
    lines += [
        "=" * rule_width,
        f"Total params: {summary.total_params:,} ({_si(summary.total_params)})",
        f"Trainable params: {summary.trainable_params:,}",
        f"Non-trainable params: {summary.total_params - summary.trainable_params:,}",
        f"Total MACs: {summary.total_macs:,} ({_si(summary.total_macs)}MACs per image)",
    ]
    if summary.params_not_run:
        lines.append(f"(of the params, {summary.params_not_run:,} sit in modules this forward pass did not run)")
    return "\n".join(lines)


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def _si(value: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value} "


# ---- cnnlab-summary: a composed summary config (conf/summary.yaml) -> the table ---------------------
def build_summary(cfg) -> ModelSummary:
    """Instantiate `cfg.model` for `cfg.data` inputs and `cfg.num_classes` on the meta device, and summarise it."""
    size, channels = int(cfg.data.image_size), int(cfg.data.channels)
    try:
        with torch.device("meta"):
            model = instantiate(
                cfg.model, num_classes=int(cfg.num_classes), in_channels=channels, image_size=size, _convert_="all"
            )
    except Exception as err:  # Hydra wraps the builder's ConfigError in an InstantiationException
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise
    return summarize(model, (channels, size, size))


def summary_text(cfg) -> str:
    """The printed table for a composed summary config."""
    title = f"model={cfg.model.name}  input={cfg.data.channels}x{cfg.data.image_size}x{cfg.data.image_size}"
    return format_summary(build_summary(cfg), title=f"{title}  num_classes={cfg.num_classes}")
