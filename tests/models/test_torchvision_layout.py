"""Parameter counts and state_dict layouts identical to torchvision's, so its ImageNet weights load."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import build_backbone

# torchvision's published counts at 1000 classes, 3x224x224 (its weight cards' num_params).
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "densenet121": 7_978_856,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
}


def meta_model(name: str, num_classes: int = 1000, image_size: int = 224, **kwargs):
    with torch.device("meta"):  # shapes without memory: 140M-parameter nets cost nothing
        return build_backbone(name, num_classes=num_classes, in_channels=3, image_size=image_size, **kwargs)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", sorted(TORCHVISION_PARAMS.items()))
def test_parameter_count_matches_torchvision(name, expected):
    assert n_params(meta_model(name)) == expected


def test_zfnet_parameter_count():
    """96@7x7/2, 256@5x5/2, 384, 384, 256 @3x3, FC 9216-4096-4096-1000: 62,357,608 (our statement;
    the paper gives no total), independent of input size thanks to the adaptive 6x6 pool."""
    expected = (96 * 3 * 49 + 96) + (256 * 96 * 25 + 256) + (384 * 256 * 9 + 384) + (384 * 384 * 9 + 384)
    expected += (256 * 384 * 9 + 256) + (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert expected == 62_357_608
    assert n_params(meta_model("zfnet")) == expected
    assert n_params(meta_model("zfnet", image_size=96)) == expected


def test_xception_parameter_count():
    """22,855,952 learnable parameters at 299 px and 1000 classes: the paper's 22.9M (Keras' 22,910,480
    also counts the 54,528 batch-norm running means and variances)."""
    model = meta_model("xception", image_size=299)
    count = n_params(model)
    assert count == 22_855_952
    assert round(count / 1e6, 1) == 22.9
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert count + bn_stats == 22_910_480


def test_densenet_bc_100_k12_parameter_count():
    """DenseNet-BC (L=100, k=12) on CIFAR-10: 769,162, the paper's "0.8M"."""
    count = n_params(meta_model("densenet_bc_100_k12", num_classes=10, image_size=32))
    assert count == 769_162
    assert round(count / 1e6, 1) == 0.8


def test_googlenet_aux_heads_add_torchvisions_aux_parameters():
    """torchvision's googlenet with aux_logits=True has 13,004,888 parameters."""
    assert n_params(meta_model("googlenet", aux_logits=True)) == 13_004_888


def shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_resnet18_state_dict_layout():
    sd = shapes(meta_model("resnet18"))
    assert sd["conv1.weight"] == (64, 3, 7, 7)
    assert sd["bn1.running_mean"] == (64,)
    assert sd["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert sd["layer1.1.bn2.num_batches_tracked"] == ()
    assert sd["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert sd["layer2.0.downsample.1.running_var"] == (128,)
    assert sd["layer4.1.conv2.weight"] == (512, 512, 3, 3)
    assert sd["fc.weight"] == (1000, 512)
    assert sd["fc.bias"] == (1000,)
    # 20 convs, 20 batch norms (weight, bias + 3 buffers each), fc: 122 entries as in torchvision
    assert len(sd) == 20 + 20 * 5 + 2
    assert "layer1.0.downsample.0.weight" not in sd


def test_resnet50_and_resnext_state_dict_layout():
    sd = shapes(meta_model("resnet50"))
    assert sd["layer1.0.conv3.weight"] == (256, 64, 1, 1)
    assert sd["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert sd["layer3.5.bn3.weight"] == (1024,)
    assert sd["fc.weight"] == (1000, 2048)
    sd = shapes(meta_model("resnext50_32x4d"))
    assert sd["layer1.0.conv2.weight"] == (128, 4, 3, 3)  # 32 groups of 4 channels
    assert sd["layer4.0.conv2.weight"] == (1024, 32, 3, 3)


def test_vgg16_state_dict_layout():
    sd = shapes(meta_model("vgg16"))
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    expected = {f"features.{i}.{p}" for i in conv_indices for p in ("weight", "bias")}
    expected |= {f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    assert set(sd) == expected
    assert sd["features.0.weight"] == (64, 3, 3, 3)
    assert sd["features.28.weight"] == (512, 512, 3, 3)
    assert sd["classifier.0.weight"] == (4096, 25088)
    assert sd["classifier.6.weight"] == (1000, 4096)
    sd_bn = shapes(meta_model("vgg16_bn"))
    assert sd_bn["features.1.running_mean"] == (64,)
    assert sd_bn["features.40.weight"] == (512, 512, 3, 3)
    assert sd_bn["features.41.weight"] == (512,)


def test_alexnet_state_dict_layout():
    sd = shapes(meta_model("alexnet"))
    expected = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    expected |= {f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")}
    assert set(sd) == expected
    assert sd["features.0.weight"] == (64, 3, 11, 11)
    assert sd["classifier.1.weight"] == (4096, 9216)
    assert sd["classifier.6.weight"] == (1000, 4096)


def test_mobilenet_v2_state_dict_layout():
    sd = shapes(meta_model("mobilenet_v2"))
    assert sd["features.0.0.weight"] == (32, 3, 3, 3)
    assert sd["features.0.1.weight"] == (32,)
    assert sd["features.1.conv.0.0.weight"] == (32, 1, 3, 3)  # t=1: no expansion conv
    assert sd["features.1.conv.1.weight"] == (16, 32, 1, 1)
    assert sd["features.1.conv.2.running_mean"] == (16,)
    assert sd["features.2.conv.0.0.weight"] == (96, 16, 1, 1)
    assert sd["features.2.conv.1.0.weight"] == (96, 1, 3, 3)
    assert sd["features.2.conv.2.weight"] == (24, 96, 1, 1)
    assert sd["features.17.conv.2.weight"] == (320, 960, 1, 1)
    assert sd["features.18.0.weight"] == (1280, 320, 1, 1)
    assert sd["classifier.1.weight"] == (1000, 1280)
    assert "features.19.0.weight" not in sd


def test_efficientnet_b0_state_dict_layout():
    sd = shapes(meta_model("efficientnet_b0"))
    assert sd["features.0.0.weight"] == (32, 3, 3, 3)
    assert sd["features.1.0.block.0.0.weight"] == (32, 1, 3, 3)
    assert sd["features.1.0.block.1.fc1.weight"] == (8, 32, 1, 1)
    assert sd["features.1.0.block.1.fc2.bias"] == (32,)
    assert sd["features.1.0.block.2.0.weight"] == (16, 32, 1, 1)
    assert sd["features.2.0.block.0.0.weight"] == (96, 16, 1, 1)
    assert sd["features.3.1.block.1.0.weight"] == (240, 1, 5, 5)
    assert sd["features.7.0.block.3.1.running_var"] == (320,)
    assert sd["features.8.0.weight"] == (1280, 320, 1, 1)
    assert sd["classifier.1.weight"] == (1000, 1280)
    assert not any("stochastic_depth" in key for key in sd)


def test_googlenet_state_dict_layout():
    model = meta_model("googlenet")
    sd = shapes(model)
    assert sd["conv1.conv.weight"] == (64, 3, 7, 7)
    assert sd["conv1.bn.running_mean"] == (64,)
    assert sd["inception3a.branch1.conv.weight"] == (64, 192, 1, 1)
    assert sd["inception3a.branch2.1.conv.weight"] == (128, 96, 3, 3)
    assert sd["inception3a.branch3.1.conv.weight"] == (32, 16, 3, 3)  # torchvision's 3x3 "5x5" branch
    assert sd["inception3a.branch4.1.conv.weight"] == (32, 192, 1, 1)
    assert sd["inception5b.branch1.bn.weight"] == (384,)
    assert sd["fc.weight"] == (1000, 1024)
    assert not any(key.startswith("aux") for key in sd)
    assert model.conv1.bn.eps == 0.001
    aux = shapes(meta_model("googlenet", aux_logits=True))
    assert aux["aux1.conv.conv.weight"] == (128, 512, 1, 1)
    assert aux["aux2.conv.conv.weight"] == (128, 528, 1, 1)
    assert aux["aux1.fc1.weight"] == (1024, 2048)
    assert aux["aux2.fc2.weight"] == (1000, 1024)


def test_densenet121_state_dict_layout():
    sd = shapes(meta_model("densenet121"))
    assert sd["features.conv0.weight"] == (64, 3, 7, 7)
    assert sd["features.norm0.weight"] == (64,)
    assert sd["features.denseblock1.denselayer1.norm1.weight"] == (64,)
    assert sd["features.denseblock1.denselayer1.conv1.weight"] == (128, 64, 1, 1)
    assert sd["features.denseblock1.denselayer1.conv2.weight"] == (32, 128, 3, 3)
    assert sd["features.denseblock1.denselayer6.norm1.running_var"] == (224,)
    assert sd["features.transition1.conv.weight"] == (128, 256, 1, 1)
    assert sd["features.denseblock4.denselayer16.conv2.weight"] == (32, 128, 3, 3)
    assert sd["features.norm5.weight"] == (1024,)
    assert sd["classifier.weight"] == (1000, 1024)


def test_densenet_loads_torchvisions_legacy_checkpoint_keys():
    """torchvision's densenet121-*.pth spells 'denselayer1.norm.1.weight'; strict loading still works."""
    torch.manual_seed(0)
    source = build_backbone("densenet_bc_100_k12", num_classes=10, in_channels=3, image_size=32)
    legacy = {}
    for key, value in source.state_dict().items():
        for old, new in (("norm1", "norm.1"), ("conv1", "conv.1"), ("norm2", "norm.2"), ("conv2", "conv.2")):
            if "denselayer" in key and f".{old}." in key:
                key = key.replace(f".{old}.", f".{new}.")
        legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    target = build_backbone("densenet_bc_100_k12", num_classes=10, in_channels=3, image_size=32)
    target.load_state_dict(legacy, strict=True)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_googlenet_without_aux_loads_a_checkpoint_with_aux_heads():
    """torchvision's googlenet-*.pth holds aux1/aux2; like torchvision, a model without them drops them."""
    torch.manual_seed(0)
    with_aux = build_backbone("googlenet", num_classes=10, in_channels=3, image_size=32, aux_logits=True)
    plain = build_backbone("googlenet", num_classes=10, in_channels=3, image_size=32)
    plain.load_state_dict(with_aux.state_dict(), strict=True)
    torch.testing.assert_close(plain.fc.weight, with_aux.fc.weight)
    with_aux.load_state_dict(with_aux.state_dict(), strict=True)


def test_googlenet_aux_heads_train_and_return_main_logits():
    torch.manual_seed(0)
    model = build_backbone("googlenet", num_classes=5, in_channels=3, image_size=32, small_input=True, aux_logits=True)
    logits = model.train()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5)
    assert [a.shape for a in model.aux_outputs] == [(2, 5), (2, 5)]
    loss = logits.square().mean() + 0.3 * sum(a.square().mean() for a in model.aux_outputs)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()(torch.randn(1, 3, 32, 32))
    assert model.aux_outputs == ()
