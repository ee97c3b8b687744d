"""Every task head on every backbone family: output shapes at a small input, through the Backbone contract only."""

from collections import defaultdict

import pytest
import torch

from cnnlab.config import ConfigError
from cnnlab.models import available_models, build_backbone, model_spec
from cnnlab.models.fcn import FCN_VARIANTS, FCNHead
from cnnlab.models.networks import BoxHead
from cnnlab.tasks.classification import ClassificationTask
from cnnlab.tasks.localization import LocalizationTask
from cnnlab.tasks.segmentation import SegmentationTask

CLASSES = 4
# the lightest member of each family; any other family present is tried with its first model
LIGHT = {
    "lenet": "simple_cnn",
    "resnet": "resnet18",
    "densenet": "densenet_bc_100_k12",
    "vgg": "vgg11",
    "alexnet": "alexnet",
}


def one_model_per_family() -> list:
    families = defaultdict(list)
    for name in available_models():
        families[model_spec(name).family].append(name)
    picks = {"lenet5"} | {LIGHT[f] if LIGHT.get(f) in names else names[0] for f, names in families.items()}
    cases = [pytest.param((name, False), id=name) for name in sorted(picks)]
    if "resnet18" in picks:
        cases.append(pytest.param(("resnet18", True), id="resnet18-small_input"))  # a stride-1 map: no upsampling
    return cases


def small_backbone(name: str, small_input: bool):
    """The backbone at the smallest input it takes (at least 20 px, odd-sized maps included),
    switching on small_input where the default stem needs more."""
    size = max(20, model_spec(name).min_input_size)
    options = {"small_input": True} if small_input else {}
    try:
        return build_backbone(name, num_classes=CLASSES, in_channels=3, image_size=size, **options), size
    except ConfigError as error:
        if "small_input" not in str(error):
            raise
        return build_backbone(name, num_classes=CLASSES, in_channels=3, image_size=size, small_input=True), size


@pytest.mark.parametrize("case", one_model_per_family())
@torch.no_grad()
def test_heads_output_shapes(case):
    name, small_input = case
    backbone, size = small_backbone(name, small_input)
    backbone.eval()
    images = torch.randn(1, 3, size, size)
    features = backbone.forward_features(images)
    assert [f.shape[1] for f in features] == list(backbone.feature_channels)

    assert backbone.forward_head(features).shape == (1, CLASSES)  # classification, and localisation's class logits
    boxes = BoxHead(backbone.num_features).eval()(features[-1])
    assert boxes.shape == (1, 4) and (boxes >= 0).all() and (boxes <= 1).all() and (boxes[:, 2:] >= boxes[:, :2]).all()

    for variant, maps in FCN_VARIANTS.items():
        if len(features) < maps:
            with pytest.raises(ConfigError, match=name):
                FCNHead(backbone.feature_channels, backbone.feature_strides, CLASSES, variant, name)
            continue
        head = FCNHead(backbone.feature_channels, backbone.feature_strides, CLASSES, variant, name)
        assert head(features, images.shape[-2:]).shape == (1, CLASSES, size, size)


@pytest.mark.parametrize("name,size", [("simple_cnn", 64), ("lenet5", 32), ("resnet18", 33)])
@torch.no_grad()
def test_tasks_forward(make_task_arguments, name, size):
    arguments = make_task_arguments(name, num_classes=CLASSES, image_size=size)
    images = torch.randn(2, 3, size, size)
    assert ClassificationTask(**arguments).eval()(images).shape == (2, CLASSES)
    logits, boxes = LocalizationTask(**arguments).eval()(images)
    assert logits.shape == (2, CLASSES) and boxes.shape == (2, 4)
    variant = "fcn16s" if name == "lenet5" else "fcn8s"
    assert SegmentationTask(**arguments, variant=variant).eval()(images).shape == (2, CLASSES, size, size)


def test_binary_sigmoid_mode_has_one_logit(make_task_arguments):
    arguments = make_task_arguments("simple_cnn", num_classes=2)
    task = ClassificationTask(**arguments, binary_mode="sigmoid")
    assert task(torch.randn(3, 3, 32, 32)).shape == (3, 1)
    with pytest.raises(ConfigError, match="two classes"):
        ClassificationTask(**make_task_arguments("simple_cnn", num_classes=3), binary_mode="sigmoid")


@torch.no_grad()
def test_channels_last_changes_speed_not_numbers(make_task_arguments):
    arguments = make_task_arguments("mobilenet_v2", num_classes=CLASSES, image_size=32, small_input=True)
    plain = SegmentationTask(**arguments).eval()
    fast = SegmentationTask(**arguments, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fast(images), plain(images), rtol=1e-4, atol=1e-4)
    boxes = LocalizationTask(**arguments, channels_last=True).eval()(images)[1]
    assert boxes.shape == (2, 4)


@pytest.mark.parametrize("cls", [LocalizationTask, SegmentationTask])
def test_checkpoints_from_before_the_network_still_load(cls, make_task_arguments):
    """A task's tensors used to sit on it (backbone.*, head.*, box_head.*), and segmentation kept the backbone's
    classifier: such a state dict loads strictly, the classifier skipped."""
    old, new = cls(**make_task_arguments("resnet18")), cls(**make_task_arguments("resnet18"))
    legacy = {k.removeprefix("network."): v for k, v in old.state_dict().items()}
    if cls is SegmentationTask:
        assert "network.backbone.fc.weight" not in new.state_dict()  # never run: not built into the network
        legacy["backbone.fc.weight"], legacy["backbone.fc.bias"] = torch.zeros(CLASSES, 512), torch.zeros(CLASSES)
    new.load_state_dict(legacy, strict=True)
    for key, value in old.state_dict().items():
        assert torch.equal(new.state_dict()[key], value), key
