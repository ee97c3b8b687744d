"""cnnlab-explain on a zoo network with published ImageNet weights, without training: CAMs on real photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cnnlab.explain.cam import class_maps
from cnnlab.explain.layers import resolve_layer, stage_names
from cnnlab.explain.source import file_images
from cnnlab.models import hub
from cnnlab.pretrained import imagenet_task
from tests.imagenet import copy_photos, needs_photos, needs_weights

pytestmark = needs_photos


@pytest.fixture
def photos(tmp_path) -> Path:
    return copy_photos(tmp_path / "photos", "coffee.png", "chelsea.png")


@needs_weights
def test_cams_of_the_predicted_class_on_real_photos(call_cli, photos, tmp_path):
    out = tmp_path / "explain"
    done = call_cli(
        "cnnlab-explain",
        "model=mobilenet_v2",
        "model.weights=imagenet",
        f"images={photos}",
        "pictures=[cam]",
        "cam.smooth=false",
        f"output_dir={out}",
    )
    assert sorted(p.name for p in (out / "cam").iterdir()) == ["gradcam_stage4.png", "gradcampp_stage4.png"]
    assert "2 pictures of 2 images" in done.stdout and "centre-cropped" in done.stderr
    assert "has no MLflow run" not in done.stderr  # a pretrained network has none, and that is no warning


@needs_weights
def test_the_espresso_map_sits_on_the_cup(photos):
    """The coffee photo's cup fills the middle of the frame: Grad-CAM for 'espresso' peaks there."""
    task = imagenet_task(OmegaConf.create({"name": "mobilenet_v2", "weights": "imagenet"}))
    batch = file_images(task, str(photos / "coffee.png"), 1, hub.IMAGENET_CROP)
    with torch.no_grad():
        predicted = task.network.predict(batch.inputs).argmax(1)
    assert task.hparams.class_names[int(predicted)] == "espresso"
    deepest = stage_names(task.backbone)[-1]
    cam = class_maps(task, batch.inputs, resolve_layer(task.backbone, deepest, "cam.layer"), predicted, "gradcam")[0]
    side = cam.shape[0]
    middle = cam[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4]
    assert middle.mean() > 2 * cam.mean() - middle.mean()  # more evidence inside the central half than around it


@pytest.mark.parametrize(
    "args, expected",
    [
        (("model=mobilenet_v2", "model.weights=imagenet"), "images=test: model=mobilenet_v2 model.weights=imagenet"),
        (("model=mobilenet_v2", "model.weights=imagenet", "run=outputs/x", "images=x"), "give one of them"),
        (("model=mobilenet_v2", "images=x"), "needs published weights"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(call_cli, tmp_path, args, expected):
    done = call_cli("cnnlab-explain", *args, f"output_dir={tmp_path / 'out'}", check=False)
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
