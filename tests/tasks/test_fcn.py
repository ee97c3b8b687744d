"""FCN decoder: bilinear-initialised upsampling, variants, and the error on too-shallow backbones."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import ConfigError
from cnnlab.models.fcn import BilinearUpsample, FCNHead, bilinear_kernel
from cnnlab.tasks.segmentation import SegmentationTask


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_upsampling_starts_as_bilinear_interpolation_of_a_constant_map(factor):
    upsample = BilinearUpsample(channels=2, factor=factor)
    constant = torch.full((1, 2, 3, 5), 1.5)
    out = upsample(constant)
    assert out.shape == (1, 2, 3 * factor, 5 * factor)
    torch.testing.assert_close(out, torch.full_like(out, 1.5))  # borders included


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_upsampling_starts_as_bilinear_interpolation_of_a_linear_map(factor):
    rows, columns = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    ramp = (2 * rows - 0.5 * columns + 1)[None, None].repeat(1, 3, 1, 1)
    ramp[:, 1] *= -1  # channels stay apart: each is upsampled on its own
    out = BilinearUpsample(channels=3, factor=factor)(ramp)
    torch.testing.assert_close(out, F.interpolate(ramp, scale_factor=factor, mode="bilinear", align_corners=False))
    # away from the clamped border, output pixel centres lie on the same plane
    y, x = (torch.arange(4 * factor) + 0.5) / factor - 0.5, (torch.arange(6 * factor) + 0.5) / factor - 0.5
    plane = 2 * y[:, None] - 0.5 * x[None, :] + 1
    inner = slice(factor, -factor)
    torch.testing.assert_close(out[0, 0, inner, inner], plane[inner, inner])


def test_bilinear_kernel_of_factor_two():
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(2), taps[:, None] * taps[None, :])


def test_upsampling_layer_is_learned():
    upsample = BilinearUpsample(channels=2, factor=2)
    assert isinstance(upsample.conv, torch.nn.ConvTranspose2d) and upsample.conv.weight.requires_grad


@pytest.mark.parametrize("variant,maps", [("fcn32s", 1), ("fcn16s", 2), ("fcn8s", 3)])
def test_variants_fuse_the_last_maps_and_return_input_resolution(variant, maps):
    # a padded backbone at 50 px: maps of ceil(50 / stride), so upsampled maps overshoot and get cropped
    strides, channels = (4, 8, 16, 32), (8, 16, 32, 64)
    features = [torch.randn(2, c, -(-50 // s), -(-50 // s)) for c, s in zip(channels, strides)]
    head = FCNHead(channels, strides, num_classes=5, variant=variant)
    assert len(head.score) == maps
    out = head(features, (50, 50))
    assert out.shape == (2, 5, 50, 50)
    # skip score layers start at zero (as in the reference FCN-16s/8s), so they add nothing until trained
    assert all(not layer.weight.detach().any() for layer in head.score[1:])
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_too_few_feature_maps_fail_at_construction_naming_model_count_and_working_variants(make_task_arguments):
    with pytest.raises(ConfigError) as error:
        SegmentationTask(**make_task_arguments("lenet5", num_classes=7), variant="fcn8s")
    message = str(error.value)
    assert "lenet5" in message and "2" in message and "fcn32s" in message and "fcn16s" in message


def test_unknown_variant_is_a_config_error():
    with pytest.raises(ConfigError, match="fcn8s"):
        FCNHead((8,), (4,), num_classes=3, variant="fcn4s")


def test_alignment_translates_and_never_stretches():
    from cnnlab.models.fcn import align_to

    scores = torch.arange(12.0).repeat(12, 1)[None, None]  # a ramp along x, one value per column
    grown = align_to(scores, (14, 14))  # an unpadded net's short map: centred, edges repeated
    assert grown.shape[-2:] == (14, 14)
    torch.testing.assert_close(grown[0, 0, 7], torch.tensor([0.0, *range(12), 11.0]))
    cropped = align_to(torch.arange(10.0).repeat(10, 1)[None, None], (6, 6))  # a padded net's overhang
    torch.testing.assert_close(cropped[0, 0, 0], torch.arange(0.0, 6.0))  # cut at the far edge
