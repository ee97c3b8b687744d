"""Every picture of cnnlab-explain, for every task, on backbones of four families (untrained: the
pictures' existence and shape do not need learned weights; tests/explain/test_explain_run.py
checks what they show on a trained one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_class
from PIL import Image

from cnnlab.config import ConfigError
from cnnlab.explain.cam import class_maps
from cnnlab.explain.layers import resolve_layer, stage_names
from cnnlab.explain.report import PictureSettings, make_pictures, plan
from cnnlab.explain.source import ImageBatch

SIZE = 32
CLASSES = ["bg", "circle", "square"]
TASKS = {
    "classification": "cnnlab.tasks.classification.ClassificationTask",
    "localization": "cnnlab.tasks.localization.LocalizationTask",
    "segmentation": "cnnlab.tasks.segmentation.SegmentationTask",
}
MODELS = {  # three families: one Sequential body, stage maps made by residual sums, by concatenations
    "lenet": {"name": "simple_cnn", "batch_norm": True},
    "resnet": {"name": "resnet18", "width_mult": 0.25, "small_input": True},
    "densenet": {"name": "densenet_bc_100_k12", "growth_rate": 4, "block_config": [2, 2, 2]},
}
FAST = PictureSettings(max_channels=4, filter_count=2, filter_steps=3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one thread each is faster than two fighting over the suite's two workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_task(task: str, family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = {"_target_": "cnnlab.models.build_backbone", **MODELS[family]}
    return get_class(TASKS[task])(
        model=model,
        num_classes=len(CLASSES),
        in_channels=3,
        image_size=SIZE,
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1},
        class_names=CLASSES,
        mean=[0.5] * 3,
        std=[0.25] * 3,
    ).eval()


def batch_of(task, count: int = 2) -> ImageBatch:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(count, 3, SIZE, SIZE, generator=generator)
    masks = np.zeros((count, SIZE, SIZE), np.int64)
    masks[:, 8:20, 10:24] = 1
    return ImageBatch(
        inputs=inputs,
        pixels=task.denormalize(inputs),
        names=[f"img{i}" for i in range(count)],
        labels=torch.tensor([1, 2])[:count],
        boxes=np.tile([[0.3, 0.25, 0.75, 0.6]], (count, 1)),
        masks=masks,
    )


def png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0, path
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize("task_name", list(TASKS))
def test_every_picture_for_every_task_and_family(task_name, family, tmp_path):
    task = build_task(task_name, family)
    batch = batch_of(task)
    files = make_pictures(task, batch, plan(task, FAST), tmp_path)
    names = {path.relative_to(tmp_path).as_posix() for path in files}
    stages = stage_names(task.backbone)
    strides = task.backbone.feature_strides
    expected_activations = {f"activations/img{i}_{s}_stride{t}.png" for i in range(2) for s, t in zip(stages, strides)}
    assert expected_activations <= names
    assert {"filters/first_conv.png", "filters/patterns.png"} <= names
    assert {f"cam/{method}_{stages[-1]}.png" for method in ("gradcam", "gradcampp")} <= names
    assert len(names) == len(expected_activations) + 4
    # each activation grid: the input image, then at most max_channels tiles of the stage
    grid = png(tmp_path / f"activations/img0_{stages[0]}_stride{strides[0]}.png")
    assert grid.ndim == 3 and grid.shape[1] > SIZE and grid.shape[2] == 3
    cam = png(tmp_path / f"cam/gradcam_{stages[-1]}.png")
    assert cam.shape[0] > 150 and cam.shape[1] > 150


@pytest.mark.parametrize("task_name", list(TASKS))
def test_maps_have_the_input_size_and_follow_the_class(task_name):
    task = build_task(task_name, "resnet")
    batch = batch_of(task)
    ref = resolve_layer(task.backbone, "stage3", "cam.layer")
    for method in ("gradcam", "gradcampp", "hirescam"):
        first = class_maps(task, batch.inputs, ref, torch.tensor([1, 1]), method)
        second = class_maps(task, batch.inputs, ref, torch.tensor([2, 2]), method)
        assert first.shape == (2, SIZE, SIZE)
        assert first.min() >= 0 and first.max() <= 1 + 1e-6
        assert not np.allclose(first, second)  # a different class, a different map


@pytest.mark.parametrize("family", ["lenet", "resnet"])
def test_smoothing_is_the_mean_of_the_mirrored_and_enlarged_views(family):
    """cam.smooth: the image and its mirror at 1, 1.25 and 1.5x, each map brought back onto the image;
    a head that fixes the input size (the Keras-book CNN's flatten) gets the mirror only."""
    task = build_task("classification", family)
    batch = batch_of(task)
    ref = resolve_layer(task.backbone, stage_names(task.backbone)[-1], "cam.layer")
    classes = torch.tensor([1, 2])
    smoothed = class_maps(task, batch.inputs, ref, classes, "gradcam", smooth=True)
    assert smoothed.shape == (2, SIZE, SIZE) and smoothed.dtype == np.float32
    peaks = smoothed.reshape(2, -1).max(1)
    assert smoothed.min() >= 0 and all(np.isclose(peak, 1.0) or peak == 0 for peak in peaks)  # 0: ReLU left no evidence
    plain = class_maps(task, batch.inputs, ref, classes, "gradcam")
    mirrored = class_maps(task, batch.inputs.flip(-1), ref, classes, "gradcam")[..., ::-1]
    two_views = plain + mirrored
    two_views /= two_views.reshape(2, -1).max(1).clip(min=1e-12)[:, None, None]
    if family == "lenet":
        assert np.allclose(smoothed, two_views, atol=1e-6)
    else:  # the enlarged views count too
        assert not np.allclose(smoothed, two_views, atol=1e-3) and not np.allclose(smoothed, plain, atol=1e-3)


def test_a_convolution_by_module_name_is_a_layer_too(tmp_path):
    task = build_task("classification", "resnet")
    settings = PictureSettings(
        pictures=["cam", "filters"],
        cam_layer="layer2.0.conv1",
        filter_layers=["stage2", "layer3.1.conv2"],
        filter_count=2,
        filter_steps=2,
        cam_methods=["gradcam"],
    )
    files = make_pictures(task, batch_of(task), plan(task, settings), tmp_path)
    assert {p.name for p in files} == {"gradcam_layer2.0.conv1.png", "first_conv.png", "patterns.png"}


def test_unknown_names_and_class_out_of_range_list_what_is_valid():
    task = build_task("classification", "resnet")
    with pytest.raises(
        ConfigError, match=r"cam.layer='layer9'.*valid stages: stage1 \(stride 1, 16 channels\).*layer4.1.conv2"
    ):
        plan(task, PictureSettings(cam_layer="layer9"))
    with pytest.raises(ConfigError, match=r"filters.layers='stage7'.*valid stages"):
        plan(task, PictureSettings(filter_layers=["stage2", "stage7"]))
    with pytest.raises(
        ConfigError, match=r"class_index=3 is out of range: this model has 3 classes \(0=bg, 1=circle, 2=square\)"
    ):
        plan(task, PictureSettings(class_index=3))
    with pytest.raises(ConfigError, match="valid methods: gradcam, gradcampp, hirescam"):
        plan(task, PictureSettings(cam_methods=["scorecam"]))
