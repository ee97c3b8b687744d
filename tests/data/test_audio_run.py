"""Audio end to end, in this process: generated sounds -> prepare -> train two epochs -> the MLflow run
with its preview and a logged model that knows it reads audio -> predictions for .wav files that
see exactly the training transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from tests.conftest import train_in_process

# 120 clips of 0.5 s at 8 kHz, 32 mel bands, 32 px: a second of preparing, a few of training
QUICK = [
    "experiment=sounds_classification",
    "data.source.num_samples=120",
    "data.image_size=32",
    "data.source.n_mels=32",
    "data.source.sample_rate=8000",
    "data.source.clip_seconds=0.5",
    "data.source.n_fft=256",
    "data.source.hop_length=80",
    "data.batch_size=32",
    "trainer.max_epochs=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger.log_checkpoint=false",
    "logger.system_metrics=false",
    "register=true",
]


@pytest.mark.slow
def test_sounds_train_log_and_predict_wav_files(tmp_path, monkeypatch):
    import mlflow
    import torch

    from cnnlab.data.prepared import PreparedDataset
    from cnnlab.data.sources.sounds import SoundsSource
    from cnnlab.prediction import open_model, predict, preprocess, read_image

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run, _ = train_in_process([*QUICK, f"paths.data_dir={tmp_path / 'data'}"], tmp_path / "run")

    client = mlflow.MlflowClient(uri)
    logged = client.get_run(run["run_id"])
    assert logged.info.status == "FINISHED" and "val/acc" in logged.data.metrics
    assert logged.data.params["data.name"] == "sounds"
    assert "augmentation_preview.png" in {Path(a.path).name for a in client.list_artifacts(run["run_id"])}

    prepared = PreparedDataset(run["prepared_dir"])
    assert prepared.images.shape[1:] == (32, 32, 1)
    spec = prepared.meta["input"]
    assert spec["kind"] == "audio" and spec["sample_rate"] == 8000 and spec["n_mels"] == 32

    # test clips as WAV files (32-bit float: the very samples the generator made), plus one broken file
    source = SoundsSource(**{k: v for k, v in spec.items() if k != "kind"}, num_samples=120, seed=0)
    picks = prepared.splits["test"][:6]
    inputs = tmp_path / "clips"
    inputs.mkdir()
    for index in picks:
        soundfile.write(inputs / f"clip{index:03d}.wav", source.waveform(int(index)), 8000, subtype="FLOAT")
    (inputs / "broken.wav").write_text("not audio")
    (inputs / "README.txt").write_text("not an input: left out of the listing")

    model_uri = "models:/cnnlab-classification-simple_cnn/1"
    with open_model(model_uri, uri) as model:
        assert model.info["input"] == spec  # the prepared meta's settings, carried by the logged model
        for index in picks:  # the prediction transform reproduces the prepared image bit for bit
            image = read_image(inputs / f"clip{index:03d}.wav", model)
            assert torch.equal(
                preprocess(image, model, "clip"), model.normalize(np.array(prepared.images[index : index + 1]))[0]
            )
        with torch.no_grad():
            expected = model.network(model.normalize(np.array(prepared.images[picks]))).argmax(dim=1).tolist()

    result = predict(model_uri, inputs, tmp_path / "predictions", tracking_uri=uri)
    rows = {row["file"]: row for row in result.rows}
    assert sorted(rows) == ["broken.wav", *sorted(f"clip{i:03d}.wav" for i in picks)]
    assert "not an audio file" in rows["broken.wav"]["error"]
    assert [rows[f"clip{i:03d}.wav"]["label"] for i in picks] == [prepared.classes[k] for k in expected]
