"""Every registered architecture: trains at a small input, keeps its feature contract, sizes honestly."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.config import ConfigError
from cnnlab.models import build_backbone, model_spec

from .zoo_cases import MODELS, UNPADDED_IMAGENET_SIZES, UNPADDED_SMALL_SIZES, has_small_input, imagenet_size, small_case


def expected_sizes(name: str, size: int, strides, table) -> list[int]:
    if name in table:
        return table[name]
    return [math.ceil(size / stride) for stride in strides]


@pytest.mark.parametrize("name", MODELS)
def test_small_input_forward_backward_and_features(name):
    """Batch 2 in train mode: logits (2, classes), finite, every parameter gets a gradient, and the
    feature maps have the declared channels and the sizes the declared strides imply."""
    torch.manual_seed(0)
    size, kwargs = small_case(name)
    if model_spec(name).family == "vgg" and name != "vgg16":
        # The 25088x4096 head (exact counts asserted on meta) costs seconds per variant on 2 cores;
        # vgg16 runs with it, the other conv bodies with the CIFAR head.
        kwargs.update(pool_size=1, hidden_features=512)
    model = build_backbone(name, num_classes=7, in_channels=3, image_size=size, **kwargs).train()
    x = torch.randn(2, 3, size, size)

    features = model.forward_features(x)
    logits = model.forward_head(features)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    assert len(features) == len(model.feature_channels) == len(model.feature_strides)
    assert [f.shape[1] for f in features] == list(model.feature_channels)
    sizes = expected_sizes(name, size, model.feature_strides, UNPADDED_SMALL_SIZES)
    assert [tuple(f.shape[2:]) for f in features] == [(s, s) for s in sizes]
    assert list(model.feature_strides) == sorted(model.feature_strides)


@pytest.mark.parametrize("name", MODELS)
def test_imagenet_feature_pyramid_on_meta(name):
    """At 224 px (xception 299) with the default stem: ImageNet-style nets give strides 4/8/16/32 and,
    when padded, maps of exactly ceil(224 / stride) (56/28/14/7). Shapes only, on the meta device."""
    size = imagenet_size(name)
    with torch.device("meta"):
        model = build_backbone(name, num_classes=1000, in_channels=3, image_size=size).eval()
        features = model.forward_features(torch.empty(1, 3, size, size))
        logits = model.forward_head(features)
    assert logits.shape == (1, 1000)
    assert [f.shape[1] for f in features] == list(model.feature_channels)
    sizes = expected_sizes(name, size, model.feature_strides, UNPADDED_IMAGENET_SIZES)
    assert [tuple(f.shape[2:]) for f in features] == [(s, s) for s in sizes]
    if model_spec(name).family not in ("lenet", "densenet", "speednet") or name == "densenet121":  # small-image nets
        assert tuple(model.feature_strides) == (4, 8, 16, 32)


def test_small_input_strides_are_declared():
    """small_input divides the stem's downsampling out of the declared strides."""
    with torch.device("meta"):
        assert build_backbone("resnet50", 10, 3, 32, small_input=True).feature_strides == (1, 2, 4, 8)
        assert build_backbone("densenet121", 10, 3, 32, small_input=True).feature_strides == (1, 2, 4, 8)
        assert build_backbone("googlenet", 10, 3, 32, small_input=True).feature_strides == (1, 2, 4, 8)
        assert build_backbone("mobilenet_v2", 10, 3, 32, small_input=True).feature_strides == (2, 4, 8, 16)
        assert build_backbone("efficientnet_b0", 10, 3, 32, small_input=True).feature_strides == (2, 4, 8, 16)
        assert build_backbone("xception", 10, 3, 32, small_input=True).feature_strides == (2, 4, 8, 16)
        assert build_backbone("densenet_bc_100_k12", 10, 3, 32).feature_strides == (1, 2, 4)


def _min_cases():
    for name in MODELS:
        settings = [False, True] if has_small_input(name) else [None]
        for small in settings:
            yield pytest.param(name, small, id=f"{name}-{small}")


# Smallest input per small_input setting where the builder checks more than the registry minimum.
SETTING_MIN = {
    ("alexnet", False): 63,
    ("zfnet", False): 63,
    ("googlenet", False): 15,
    ("densenet121", False): 29,
    ("xception", False): 7,
}


@pytest.mark.parametrize("name,small", list(_min_cases()))
def test_min_input_size_is_honest(name, small):
    """The declared minimum works; one pixel less is refused with a ConfigError that says what to do,
    and really would fail in the forward pass. Runs on the meta device, whose shape checks are the
    CPU kernels' own (measured the same way on CPU); the forward/backward test above runs the models
    without a small-input stem at their minimum on CPU."""
    spec = model_spec(name)
    kwargs = {} if small is None else {"small_input": small}
    minimum = SETTING_MIN.get((name, small), spec.min_input_size)
    if small is True:
        assert minimum == spec.min_input_size, "the registry minimum is the small-input stem's"
    with torch.device("meta"):
        model = build_backbone(name, num_classes=5, in_channels=3, image_size=minimum, **kwargs).eval()
        assert model(torch.empty(1, 3, minimum, minimum)).shape == (1, 5)
    if minimum == 1:
        return
    with pytest.raises(ConfigError, match=f"at least {minimum}x{minimum}"):
        build_backbone(name, num_classes=5, in_channels=3, image_size=minimum - 1, **kwargs)
    if spec.family != "lenet":  # the classifier does not depend on image_size: check forward fails too
        with torch.device("meta"), pytest.raises(RuntimeError):
            model(torch.empty(1, 3, minimum - 1, minimum - 1))


def test_config_error_suggests_small_input():
    with pytest.raises(ConfigError, match="small_input=true"):
        build_backbone("alexnet", num_classes=10, in_channels=1, image_size=28)
    build_backbone("alexnet", num_classes=10, in_channels=1, image_size=28, small_input=True)


@pytest.mark.parametrize("name", ["resnet18", "densenet_bc_100_k12", "mobilenet_v2", "googlenet"])
def test_forward_is_head_of_features(name):
    size, kwargs = small_case(name)
    model = build_backbone(name, num_classes=4, in_channels=1, image_size=size, **kwargs).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
