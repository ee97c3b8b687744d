"""model.weights: reading each kind of file, strict body, new head, the channel rule, bad files."""

from __future__ import annotations

import pytest
import torch

from cnnlab.config import ConfigError
from cnnlab.models import build_backbone
from cnnlab.models.weights import IMAGENET_MEAN, load_weights, read_weights


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A torchvision-layout ResNet-18 state dict (1000 classes, 3 channels), as an ImageNet .pth would be."""
    torch.manual_seed(0)
    source = build_backbone("resnet18", num_classes=1000, in_channels=3, image_size=64)
    for module in source.modules():  # non-trivial BN statistics, so loading them is visible
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth"
    torch.save(source.state_dict(), path)
    return path, source.state_dict()


def example(channels: int, size: int = 64) -> torch.Tensor:
    return torch.zeros(1, channels, size, size)


def test_torchvision_file_loads_body_strictly_and_replaces_the_head(imagenet_file):
    path, original = imagenet_file
    weights = read_weights(str(path))
    assert weights.kind == "torchvision" and len(weights.sha256) == 64
    assert weights.normalization(3) == (IMAGENET_MEAN, [0.229, 0.224, 0.225])
    target = build_backbone("resnet18", num_classes=10, in_channels=3, image_size=64)
    report = load_weights(target, weights, example(3), "resnet18")
    assert report.new == ["fc.bias", "fc.weight"]  # 10 classes, not 1000: a new head
    assert report.loaded == len(original) - 2
    state = target.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.running_var", "layer3.0.downsample.1.weight"):
        assert torch.equal(state[key], original[key]), key
    assert state["fc.weight"].shape == (10, 512)


def test_same_class_count_keeps_the_head(imagenet_file):
    path, original = imagenet_file
    target = build_backbone("resnet18", num_classes=1000, in_channels=3, image_size=64)
    report = load_weights(target, read_weights(str(path)), example(3), "resnet18")
    assert report.new == [] and report.loaded == len(original)
    assert torch.equal(target.state_dict()["fc.weight"], original["fc.weight"])


def test_channel_rule_grey_image_matches_its_colour_replica(imagenet_file):
    """1-channel data on 3-channel weights: the summed kernels give what the grey image replicated to RGB gives."""
    path, _ = imagenet_file
    weights = read_weights(str(path))
    colour = build_backbone("resnet18", num_classes=10, in_channels=3, image_size=64).eval()
    grey = build_backbone("resnet18", num_classes=10, in_channels=1, image_size=64).eval()
    load_weights(colour, weights, example(3), "resnet18")
    report = load_weights(grey, weights, example(1), "resnet18")
    assert report.channel_rule == "conv1.weight: summed 3 -> 1 channels"
    grey.fc.load_state_dict(colour.fc.state_dict())  # the same new head in both
    image = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        expected = colour(image.repeat(1, 3, 1, 1))
        got = grey(image)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    # grey normalisation from ImageNet's: the mean of the colour statistics
    mean, std = weights.normalization(1)
    assert mean == [pytest.approx(sum(IMAGENET_MEAN) / 3)] and len(std) == 1


def test_weights_of_another_architecture_say_which_they_look_like(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(build_backbone("resnet34", num_classes=1000, in_channels=3, image_size=64).state_dict(), path)
    target = build_backbone("resnet18", num_classes=10, in_channels=3, image_size=64)
    with pytest.raises(ConfigError) as err:
        load_weights(target, read_weights(str(path)), example(3), "resnet18")
    message = str(err.value)
    assert f"model.weights='{path}'" in message and "model=resnet18" in message
    assert "look like model=resnet34" in message


def test_a_shape_mismatch_in_the_body_names_the_key(imagenet_file):
    path, _ = imagenet_file
    narrow = build_backbone("resnet18", num_classes=10, in_channels=3, image_size=64, width_mult=0.25)
    with pytest.raises(
        ConfigError, match=r"key 'bn1.weight' has shape \[64\] in the weights but \[16\]|key '.*' has shape"
    ):
        load_weights(narrow, read_weights(str(path)), example(3), "resnet18")


@pytest.mark.parametrize(
    "write, expected",
    [
        (lambda p: torch.save([1, 2, 3], p), "is not a state dict: the file holds a list"),
        (lambda p: torch.save({"conv.weight": torch.zeros(2), "step": 3}, p), "key 'step' holds a int"),
        (lambda p: torch.save(torch.nn.Linear(2, 2), p), "needs code to load"),
        (lambda p: p.write_bytes(b"not a torch file at all"), "not a readable PyTorch file"),
    ],
    ids=["list", "not-all-tensors", "pickled-module", "garbage"],
)
def test_bad_files_are_refused_naming_the_source(tmp_path, write, expected):
    path = tmp_path / "weights.pth"
    write(path)
    with pytest.raises(ConfigError) as err:
        read_weights(str(path))
    assert f"model.weights='{path}'" in str(err.value) and expected in str(err.value)


def test_truncated_and_missing_files(imagenet_file, tmp_path):
    path, _ = imagenet_file
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConfigError, match="not a readable PyTorch file"):
        read_weights(str(truncated))
    with pytest.raises(ConfigError, match="no such file or directory"):
        read_weights(str(tmp_path / "absent.pth"))
    with pytest.raises(ConfigError, match="without checkpoints/best.ckpt"):
        read_weights(str(tmp_path))


def test_a_home_relative_path_is_read_as_the_readme_writes_it(imagenet_file, tmp_path, monkeypatch, run_cli):
    """`model.weights=~/Downloads/x.pth` unquoted: the shell leaves `~` after `key=`, Hydra's grammar refuses
    it; cnnlab's commands expand it as the shell does an assignment. Quoted for Hydra ('...="~/..."'), the
    `~` reaches read_weights, which expands it too."""
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    (home / "Downloads" / "resnet18.pth").write_bytes(imagenet_file[0].read_bytes())
    monkeypatch.setenv("HOME", str(home))
    assert read_weights("~/Downloads/resnet18.pth").sha256 == read_weights(str(imagenet_file[0])).sha256
    done = run_cli("cnnlab-train", "--cfg", "job", "model.weights=~/Downloads/resnet18.pth")  # HOME: the test's
    assert f"weights: {home}/Downloads/resnet18.pth" in done.stdout
