"""Outputs do not depend on where the clone is: the same run in two directories writes the same run.json,
config.yaml and checkpoints (issue 27, item 8), and what they name is found again from wherever they are read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import QUICK, call_in_process, copy_project

pytestmark = pytest.mark.slow  # two short trainings and an evaluation: about 40 s

# the pipeline's way: prepared data and the run directory inside the project, named relative to it
RUN = [*QUICK, "data.prepared_dir=data/prepared/here", "hydra.run.dir=artifacts/here", "trainer.deterministic=true"]
VOLATILE = ("run_id", "train_seconds")  # a new MLflow run each time; wall-clock time


@pytest.fixture(scope="module")
def clones(tmp_path_factory) -> list[Path]:
    roots = [copy_project(tmp_path_factory.mktemp("clone") / name) for name in ("first", "elsewhere/second")]
    for root in roots:
        done = call_in_process("cnnlab-train", RUN, root)
        assert done.returncode == 0, done.stderr[-3000:]
    return roots


def test_run_record_and_config_name_no_path_of_the_machine(clones: list[Path]):
    records = [json.loads((root / "artifacts/here/run.json").read_text()) for root in clones]
    assert [{k: v for k, v in r.items() if k not in VOLATILE} for r in records][0] == {
        k: v for k, v in records[1].items() if k not in VOLATILE
    }
    record = records[0]
    assert record["best_checkpoint"] == "artifacts/here/checkpoints/best.ckpt"  # relative to the project root
    assert record["prepared_dir"] == "data/prepared/here"
    assert record["tracking_uri"] is None  # the project's own store: found by default, wherever the clone is
    configs = [(root / "artifacts/here/config.yaml").read_text() for root in clones]
    assert configs[0] == configs[1]
    assert str(clones[0]) not in configs[0] and str(clones[0]) not in json.dumps(record)


def test_checkpoints_are_the_same_bytes(clones: list[Path]):
    """The same training gives the same checkpoint files wherever the clone is (DVC versions them): no path and
    no wall-clock time in them (the metric points not yet sent to MLflow wait beside them, and a finished fit
    removes that file)."""
    for name in ("best.ckpt", "last.ckpt"):
        first, second = ((root / "artifacts/here/checkpoints" / name).read_bytes() for root in clones)
        assert first == second, name
        state = torch.load(clones[0] / "artifacts/here/checkpoints" / name, map_location="cpu", weights_only=False)
        assert "cnnlab_unsent_metrics" not in state
        assert all(s["dirpath"] == "." for key, s in state["callbacks"].items() if "ModelCheckpoint" in key)
    assert not any((root / "artifacts/here/unsent_metrics.json").exists() for root in clones)


def test_a_moved_clone_evaluates_and_resumes_from_its_relative_paths(clones: list[Path], tmp_path: Path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(clones[0], moved)
    done = call_in_process("cnnlab-evaluate", ["evaluate.train_dir=artifacts/here", "logger=none"], moved)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (moved / "artifacts/here/evaluate/metrics.json").is_file()
    state = torch.load(moved / "artifacts/here/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    from cnnlab.checkpointing import Checkpoint

    callback = Checkpoint(dirpath=str(moved / "artifacts/here/checkpoints"), monitor="val/loss", filename="best")
    key = next(k for k in state["callbacks"] if k.startswith("ModelCheckpoint") and "val/loss" in k)
    callback.load_state_dict(state["callbacks"][key])
    assert callback.best_model_path == str(moved / "artifacts/here/checkpoints/best.ckpt")
