"""The DVC remote round trip (issue 27, item 7): one clone runs the pipeline, commits and pushes; another
clone of that git repository pulls, and has everything: `dvc status dvc.yaml` (the main pipeline) is
clean, `dvc repro` does nothing, and cnnlab-evaluate runs from the pulled outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import call_in_process, dvc_project, run_dvc, stages_ran

pytestmark = pytest.mark.slow

TINY = "trainer=debug trainer.max_epochs=1 logger.log_model=false logger.system_metrics=false"
GIT = ["git", "-c", "user.name=cnnlab", "-c", "user.email=cnnlab@example.org"]


def git(root: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True, text=True)


def test_push_from_one_clone_pull_into_another_and_nothing_is_left_to_do(tmp_path: Path):
    def tiny(params: dict) -> None:
        params["overrides"] = TINY

    first = dvc_project(tmp_path / "first", tiny)
    assert stages_ran(run_dvc(first, "repro")) == {"configure", "prepare", "train", "evaluate"}
    run_dvc(first, "remote", "add", "-d", "shared", str(tmp_path / "remote"))
    run_dvc(first, "push")
    git(first, "add", "-A")
    git(first, "commit", "-q", "-m", "a pipeline run")  # dvc.lock, the remote, and the small outputs

    second = tmp_path / "elsewhere" / "second"  # another place: nothing in the outputs may name the first
    git(tmp_path, "clone", "-q", str(first), str(second))
    committed = sorted(p.relative_to(second).as_posix() for p in (second / "artifacts").rglob("*") if p.is_file())
    assert committed == [
        "artifacts/configure/train.yaml",
        "artifacts/evaluate/metrics.json",
        "artifacts/evaluate/plots/confusion_matrix.png",
        "artifacts/evaluate/plots/per_class_accuracy.csv",
        "artifacts/evaluate/plots/predictions.csv",
        "artifacts/evaluate/plots/test_predictions.png",
        "artifacts/train/config.yaml",
        "artifacts/train/history.csv",
        "artifacts/train/metrics.json",
        "artifacts/train/run.json",
    ]
    run_dvc(second, "pull")  # the cached outputs: prepared data and checkpoints
    assert (second / "artifacts/train/checkpoints/best.ckpt").is_file()
    assert "up to date" in run_dvc(second, "status", "dvc.yaml")
    assert stages_ran(run_dvc(second, "repro")) == set()

    done = call_in_process(
        "cnnlab-evaluate",
        ["evaluate.train_dir=artifacts/train", f"evaluate.output_dir={tmp_path / 'evaluation'}"],
        second,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pulled = json.loads((second / "artifacts/evaluate/metrics.json").read_text())
    assert json.loads((tmp_path / "evaluation/metrics.json").read_text()) == pulled  # the same checkpoint, scored again
    assert "up to date" in run_dvc(second, "status", "dvc.yaml")
