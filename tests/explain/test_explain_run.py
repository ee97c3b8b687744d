"""cnnlab-explain on a real (tiny, quickly trained) run: pictures logged into its MLflow run only when
all are made, files converted as training data was, the model randomisation sanity check, and the
user errors (one line on stderr, exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict
from PIL import Image

from cnnlab.config import ConfigError, register_configs

pytestmark = pytest.mark.slow  # end to end: run by `make test-slow` and CI, not by `make test`

CONF = Path(__file__).resolve().parents[2] / "conf"
QUICK = [  # 300 shapes at 32 px, 5 epochs of the Keras-book CNN with BatchNorm: a few seconds
    "experiment=none",  # on the plain defaults of conf/
    "task=classification",
    "data=shapes",
    "model=simple_cnn",
    "model.batch_norm=true",
    "augment=none",
    "data.source.num_samples=300",
    "data.image_size=32",
    "data.batch_size=32",
    "trainer.max_epochs=5",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger.log_model=false",
    "logger.log_checkpoint=false",
    "optimizer.lr=0.003",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained run for the module: (output dir, run.json, tracking URI)."""
    from cnnlab.training import train

    root = tmp_path_factory.mktemp("explain_run")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    output_dir = root / "train"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        register_configs()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[*QUICK, f"paths.data_dir={root / 'data'}"], return_hydra_config=True)
        cfg.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        train(cfg)
        yield output_dir, json.loads((output_dir / "run.json").read_text()), uri


def explain_cfg(run: str, tmp_path: Path, uri: str, **overrides):
    """cnnlab-explain's config (conf/explain.yaml and its schema) with overrides, as the command composes it."""
    import cnnlab.cli.explain  # noqa: F401  (registers explain_schema)

    base = {"filters": {"count": 2, "steps": 4}, "activations": {"max_channels": 8}, "num_images": 4}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("explain", overrides=[f"run={run}", f"output_dir={tmp_path / 'explain'}", f"tracking_uri={uri}"])
    return OmegaConf.merge(cfg, base, overrides)


def artifacts(uri: str, run_id: str, path: str = "explain") -> list[str]:
    from mlflow import MlflowClient

    client, found, pending = MlflowClient(uri), [], [path]
    while pending:
        for item in client.list_artifacts(run_id, pending.pop()):
            (pending if item.is_dir else found).append(item.path)
    return sorted(found)


def test_a_failure_logs_nothing_and_keeps_earlier_pictures(trained, tmp_path, monkeypatch):
    from cnnlab.explain import report

    output_dir, run, uri = trained
    earlier = tmp_path / "explain" / "cam" / "earlier.png"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"x")

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(report, "_cams", broken)  # the last kind of picture: the others are made by then
    with pytest.raises(RuntimeError, match="drawing failed"):
        report.explain_run(explain_cfg(str(output_dir), tmp_path, uri))
    assert artifacts(uri, run["run_id"]) == []
    assert earlier.is_file() and not (tmp_path / "explain" / "activations").exists()


def test_explain_by_run_id_logs_every_picture_into_the_run(trained, tmp_path):
    from cnnlab.explain.report import explain_run

    output_dir, run, uri = trained
    result = explain_run(explain_cfg(run["run_id"], tmp_path, uri))
    assert result.run_id == run["run_id"] and result.images == 4
    logged = artifacts(uri, run["run_id"])
    expected = {
        f"explain/activations/test{i:04d}_stage{s}_stride{t}.png" for i in range(4) for s, t in ((1, 2), (2, 4), (3, 4))
    }
    expected |= {
        "explain/filters/first_conv.png",
        "explain/filters/patterns.png",
        "explain/cam/gradcam_stage3.png",
        "explain/cam/gradcampp_stage3.png",
    }
    assert set(logged) == expected
    assert {p.relative_to(tmp_path).as_posix() for p in result.files} == {name for name in expected}
    cam = np.asarray(Image.open(tmp_path / "explain" / "cam" / "gradcam_stage3.png"))
    assert cam.shape[0] > 4 * 100 and cam.shape[1] > 3 * 80  # a row per image, input + predicted + true


def test_files_of_another_size_and_channel_count_are_converted_and_said(trained, tmp_path, capsys):
    from cnnlab.explain.report import explain_run

    output_dir, run, uri = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray((np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8)).save(folder / "gray.png")
    cfg = explain_cfg(
        str(output_dir), tmp_path, uri, images=str(folder), log=False, pictures=["cam"], cam={"class_index": 2}
    )
    result = explain_run(cfg)
    assert result.images == 1 and result.run_id is None
    assert "gray.png: resized from 70x50 to 32x32 and converted from 1 to 3 channels" in capsys.readouterr().err
    assert {p.name for p in result.files} == {"gradcam_stage3.png", "gradcampp_stage3.png"}


def test_errors_in_process(trained, tmp_path):
    from cnnlab.explain.report import explain_run

    output_dir, run, uri = trained
    with pytest.raises(ConfigError, match=r"run='models:/cnnlab-classification-nope@champion' does not resolve"):
        explain_run(explain_cfg("models:/cnnlab-classification-nope@champion", tmp_path, uri))
    no_checkpoint = tmp_path / "copy"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.yaml").write_text((output_dir / "config.yaml").read_text())
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*best.ckpt"):
        explain_run(explain_cfg(str(no_checkpoint), tmp_path, uri))
    with pytest.raises(ConfigError, match=r"class_index=6 is out of range: this model has 6 classes \(0=circle"):
        explain_run(explain_cfg(str(output_dir), tmp_path, uri, cam={"class_index": 6}))


def test_a_wrong_layer_is_one_line_on_stderr_and_exit_2(trained, tmp_path):
    output_dir, run, uri = trained
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab.cli.explain",
            f"run={output_dir}",
            "cam.layer=layer9",
            f"output_dir={tmp_path / 'x'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: cam.layer='layer9' is not a stage or convolution of this SimpleCNN"
    )
    assert "valid stages: stage1 (stride 2, 32 channels)" in lines[0] and "features.0" in lines[0]
    assert not (tmp_path / "x").exists()


def test_maps_fail_the_model_randomisation_sanity_check(trained):
    """Adebayo et al. 2018: maps of a network whose weights are re-initialised from the top down must
    change; a method that kept them would be showing the image, not the model."""
    from cnnlab.explain.cam import cascading_randomisation, class_maps, rank_correlation
    from cnnlab.explain.layers import resolve_layer
    from cnnlab.explain.source import open_source, test_images

    output_dir, run, uri = trained
    with open_source(str(output_dir), uri) as source:
        task = source.task
        batch = test_images(source, 16)
        classes = batch.labels
        ref = resolve_layer(task.backbone, "stage3", "layer")
        for method, smooth in (("gradcam", False), ("gradcam", True), ("gradcampp", False), ("hirescam", False)):
            maps = class_maps(task, batch.inputs, ref, classes, method, smooth)
            again = rank_correlation(maps, class_maps(task, batch.inputs, ref, classes, method, smooth))
            assert again.mean() > 0.999  # two runs of the trained model: the same maps
            steps = cascading_randomisation(task, batch.inputs, "stage3", classes, method, smooth=smooth)
            blocks = [block for block, _ in steps]
            assert blocks[0] == "backbone.classifier.4" and blocks[-1] == "backbone.features.0"  # from the top
            correlations = [value for _, value in steps]
            assert min(correlations) < 0.5, steps
            # everything random: well below the trained model's agreement with itself (the criterion).
            # Not near 0: a random convolutional network still responds to the image's edges (Adebayo et al.)
            assert correlations[-1] < again.mean() - 0.3, steps


def test_evaluate_can_add_the_pictures_to_its_plots_and_run(trained, tmp_path):
    from cnnlab.evaluation import evaluate

    output_dir, run, uri = trained
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"evaluate.train_dir={output_dir}",
                f"evaluate.output_dir={tmp_path / 'eval'}",
                "evaluate.explain=true",
                "evaluate.explain_images=2",
                f"logger.tracking_uri={uri}",
            ],
        )
    evaluate(cfg)
    pictures = {
        p.relative_to(tmp_path / "eval" / "plots" / "explain").as_posix()
        for p in (tmp_path / "eval" / "plots" / "explain").rglob("*.png")
    }
    assert {
        "cam/gradcam_stage3.png",
        "cam/gradcampp_stage3.png",
        "filters/patterns.png",
        "activations/test0001_stage3_stride4.png",
    } <= pictures
    logged = set(artifacts(uri, run["run_id"], "explain"))
    assert {f"explain/{name}" for name in pictures} <= logged
    assert (tmp_path / "eval" / "plots" / "test_predictions.png").is_file()  # the evaluation's own plots as before
