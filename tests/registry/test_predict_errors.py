"""cnnlab-predict fails with one clear line and exit code 2 when the input or the model is not there."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_missing_input_is_named(run_cli, tmp_path):
    missing = tmp_path / "no-such-dir"
    done = run_cli(
        "cnnlab-predict", "model_uri=models:/cnnlab-classification-lenet5@champion", f"input={missing}", check=False
    )
    assert done.returncode == 2
    assert f"input={missing} does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_model_uri_is_named(call_cli, tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "blank.png")
    uri = "models:/cnnlab-classification-nosuchnet@champion"
    done = call_cli(
        "cnnlab-predict", f"model_uri={uri}", f"input={tmp_path}", f"output_dir={tmp_path / 'out'}", check=False
    )
    assert done.returncode == 2
    assert f"model_uri='{uri}' was not found in the MLflow store" in done.stderr
    assert "Registered models there:" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_model_uri_is_required(run_cli, tmp_path):
    done = run_cli("cnnlab-predict", f"input={tmp_path}", check=False)
    assert done.returncode == 2
    assert "model_uri required" in done.stderr
