"""cnnlab-summary: the layer table's shapes, parameters and MACs, from the composed Hydra config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from cnnlab.config import ConfigError
from cnnlab.models import build_backbone
from cnnlab.models.summary import build_summary, format_summary, summarize, summary_text

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_summary(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="summary", overrides=list(overrides))


def test_lenet5_table():
    cfg = compose_summary("model=lenet5", "data.image_size=32", "data.channels=1")
    summary = build_summary(cfg)
    assert summary.total_params == summary.trainable_params == 61_706
    first = summary.rows[0]
    assert (first.name, first.kind, first.output_shape, first.params) == ("features.0", "Conv2d", (6, 28, 28), 156)
    assert first.macs == 28 * 28 * 6 * 25 == 117_600
    conv2 = next(row for row in summary.rows if row.name == "features.3")
    assert conv2.macs == 10 * 10 * 16 * 25 * 6
    assert [row.macs for row in summary.rows if row.kind == "Linear"] == [400 * 120, 120 * 84, 84 * 10]
    assert summary.total_macs == 117_600 + 240_000 + 48_000 + 10_080 + 840
    text = summary_text(cfg)
    assert "features.0 (Conv2d)" in text and "6x28x28" in text
    assert "Total params: 61,706" in text and "Trainable params: 61,706" in text
    assert "Total MACs: 416,520" in text


def test_vgg16_imagenet_totals():
    """torchvision's card says 15.47 GFLOPS (really GMACs) for vgg16; conv + linear MACs per image."""
    cfg = compose_summary("model=vgg16", "data.image_size=224", "data.channels=3", "num_classes=1000")
    summary = build_summary(cfg)
    assert summary.total_params == 138_357_544
    assert summary.total_macs == 15_470_264_320
    assert summary.rows[0].output_shape == (64, 224, 224)
    assert summary.rows[-1].output_shape == (1000,)


def test_grouped_and_depthwise_macs_and_unrun_modules():
    with torch.device("meta"):
        model = build_backbone("googlenet", num_classes=10, in_channels=3, image_size=32, aux_logits=True)
    summary = summarize(model, (3, 32, 32))
    aux_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("aux"))
    assert summary.params_not_run == aux_params  # aux heads only run in training mode
    assert "did not run" in format_summary(summary)
    with torch.device("meta"):
        mobile = build_backbone("mobilenet_v2", num_classes=10, in_channels=3, image_size=32, small_input=True)
    depthwise = next(r for r in summarize(mobile, (3, 32, 32)).rows if r.name == "features.1.conv.0.0")
    assert depthwise.macs == 32 * 32 * 32 * 9  # groups = channels: k*k per output value


def test_summary_leaves_the_model_in_training_mode():
    model = build_backbone("lenet5", num_classes=10, in_channels=1, image_size=32).train()
    summarize(model, (1, 32, 32))
    assert model.training


def test_too_small_input_is_a_config_error_naming_the_fix():
    cfg = compose_summary("model=alexnet", "data.image_size=28")
    with pytest.raises(ConfigError, match="set model.small_input=true"):
        build_summary(cfg)  # the CLI prints it as one line and exits 2 (cnnlab.cli.exit_on_user_error)


def test_console_script():
    """The installed entry point composes conf/summary.yaml and prints the table (CIFAR ResNet-18)."""
    args = ["model=resnet18", "model.small_input=true", "data.channels=3"]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cnnlab-summary"), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "layer4.1.bn2 (BatchNorm2d)" in result.stdout
    assert "Total params: 11,173,962" in result.stdout
