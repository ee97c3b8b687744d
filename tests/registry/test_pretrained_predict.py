"""cnnlab-predict with a zoo network and published ImageNet weights, used as it is: real photos, names, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cnnlab.models import hub
from tests.imagenet import copy_photos, needs_photos, needs_weights

pytestmark = needs_photos


@pytest.fixture
def photos(tmp_path) -> Path:
    return copy_photos(tmp_path / "photos", "coffee.png", "chelsea.png", "rocket.jpg")


def rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def test_the_class_names_are_imagenets_thousand_in_order():
    names = hub.imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[967] == "espresso" and names[281] == "tabby"


@needs_weights
def test_top5_imagenet_classes_by_name_on_real_photos(call_cli, photos, tmp_path):
    out = tmp_path / "out"
    done = call_cli(
        "cnnlab-predict",
        "model=mobilenet_v2",
        "model.weights=imagenet",
        f"input={photos}",
        "top_k=5",
        f"output_dir={out}",
    )
    predicted = rows(out / "predictions.csv")
    coffee = predicted["coffee.png"]
    assert coffee["label"] == "espresso" and float(coffee["score"]) > 0.9  # scikit-image's coffee is an espresso
    assert predicted["chelsea.png"]["label"] in {"Egyptian cat", "tabby", "tiger cat"}  # Chelsea the cat
    top5 = [entry.split(":")[0] for entry in predicted["rocket.jpg"]["top_k"].split(";")]
    assert len(top5) == 5 and "space shuttle" in top5
    assert "coffee.png: espresso:0.99" in done.stdout  # printed, Keras's decode_predictions way
    assert "3 images predicted" in done.stdout


@needs_weights
def test_a_file_that_is_not_an_image_is_listed_and_the_rest_predicted(call_cli, photos, tmp_path):
    (photos / "notes.jpg").write_text("not a photo")
    done = call_cli(
        "cnnlab-predict", "model=mobilenet_v2", "model.weights=imagenet", f"input={photos}", f"output_dir={tmp_path}"
    )
    predicted = rows(tmp_path / "predictions.csv")
    assert "not an image file" in predicted["notes.jpg"]["error"] and predicted["coffee.png"]["label"] == "espresso"
    assert "3 images predicted" in done.stdout and "1 unreadable" in done.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (("model=zfnet", "model.weights=imagenet"), "model=zfnet has no published IMAGENET1K_V1 weights; it has: none"),
        (("model=mobilenet_v2",), "model=mobilenet_v2 without a trained run needs published weights"),
        (
            ("model=mobilenet_v2", "model.weights=imagenet", "model_uri=models:/x@champion"),
            "give one of them",
        ),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(call_cli, photos, tmp_path, args, expected):
    done = call_cli("cnnlab-predict", *args, f"input={photos}", f"output_dir={tmp_path / 'out'}", check=False)
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_weights_missing_offline_name_the_file_and_the_cache(call_cli, photos, tmp_path):
    done = call_cli(
        "cnnlab-predict",
        "model=resnet18",
        "model.weights=imagenet",
        f"input={photos}",
        check=False,
        TORCH_HOME=str(tmp_path / "torch"),
        CNNLAB_WEIGHTS_URL="http://127.0.0.1:9/",
    )
    assert done.returncode == 2
    assert f"resnet18-f37072fd.pth (model=resnet18) is not in the weights cache {tmp_path / 'torch'}" in done.stderr
