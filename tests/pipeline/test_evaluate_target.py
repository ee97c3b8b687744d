"""`cnnlab-evaluate` alone scores the run just trained, into that run's own directory (never artifacts/)."""

from __future__ import annotations

import json
import os
import time

import pytest
from mlflow.tracking import MlflowClient

from cnnlab.evaluation import training_directory
from tests.conftest import QUICK


def test_latest_is_the_training_whose_run_json_changed_last(tmp_path):
    older, newer = tmp_path / "outputs" / "2026-01-01" / "10-00-00", tmp_path / "multirun" / "2026-01-02" / "0"
    for directory, mtime in ((older, time.time() - 60), (newer, time.time())):
        directory.mkdir(parents=True)
        (directory / "run.json").write_text("{}")
        os.utime(directory / "run.json", (mtime, mtime))
    (tmp_path / "outputs" / "2026-01-03").mkdir()  # cnnlab-evaluate's own Hydra dir: no run.json
    assert training_directory("latest", tmp_path) == newer
    assert training_directory(str(older), tmp_path) == older
    with pytest.raises(FileNotFoundError, match="evaluate.train_dir=latest: no cnnlab-train output directory"):
        training_directory("latest", tmp_path / "empty")


def test_a_run_id_names_its_output_directory(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"), tags={"cnnlab.output_dir": str(tmp_path / "out")})
    assert training_directory(run.info.run_id, tmp_path, uri) == tmp_path / "out"
    assert training_directory(f"runs:/{run.info.run_id}/model", tmp_path, uri) == tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="no cnnlab-train run 0{32}"):
        training_directory("0" * 32, tmp_path, uri)


@pytest.mark.slow
def test_train_then_evaluate_scores_the_run_just_trained(call_cli, project, tracking_uri):
    pipeline = project / "artifacts" / "evaluate" / "metrics.json"
    before = pipeline.read_bytes() if pipeline.exists() else None
    earlier = set((project / "outputs").glob("**/run.json"))  # the session's project: other tests' runs
    call_cli("cnnlab-train", *QUICK)  # Hydra's default output directory, outputs/<date>/<time>
    (out,) = [p.parent for p in set((project / "outputs").glob("**/run.json")) - earlier]
    call_cli("cnnlab-evaluate")  # the README's `cnnlab-train register=true && cnnlab-evaluate`
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert (pipeline.read_bytes() if pipeline.exists() else None) == before  # the pipeline's outputs untouched
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    assert MlflowClient(tracking_uri).get_run(run_id).data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    (out / "evaluate" / "metrics.json").unlink()
    call_cli("cnnlab-evaluate", f"evaluate.train_dir={run_id}")
    assert (out / "evaluate" / "metrics.json").is_file()
