"""`dvc repro` in a temporary copy of the repo: builds, then does nothing, then re-runs only what changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import dvc_project, run_dvc, stages_ran

pytestmark = pytest.mark.slow


def _digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    def one_epoch(params: dict) -> None:
        params["overrides"] = "trainer.max_epochs=1"  # the pipeline's shape, not its accuracy, is under test

    return dvc_project(tmp_path_factory.mktemp("dvcrepo"), one_epoch)


def test_repro_builds_then_skips_then_reruns_only_dependants(repo: Path, tmp_path: Path):
    first = run_dvc(repo, "repro")
    assert stages_ran(first) == {"configure", "prepare", "train", "evaluate"}
    test_metrics = json.loads((repo / "artifacts/evaluate/metrics.json").read_text())
    assert 0.0 <= test_metrics["test/acc"] <= 1.0
    assert (repo / "artifacts/evaluate/plots/confusion_matrix.png").is_file()
    run_id = json.loads((repo / "artifacts/train/run.json").read_text())["run_id"]

    second = run_dvc(repo, "repro")
    assert stages_ran(second) == set()
    assert "Data and pipelines are up to date" in second

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["overrides"] += " optimizer.lr=0.002 data.batch_size=32"  # the loader's batch size: not prepare's
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run_dvc(repo, "repro")
    assert stages_ran(third) == {"configure", "train", "evaluate"}
    assert json.loads((repo / "artifacts/train/run.json").read_text())["run_id"] != run_id  # a new MLflow run

    # a conf file the train stage reads re-runs it too; one it does not read re-runs only the composing
    # stage (a fraction of a second), which writes the same config: nothing after it runs
    model_conf = repo / "conf/model/lenet5.yaml"
    model_conf.write_text(model_conf.read_text().replace("dropout: 0.0", "dropout: 0.1"))
    assert stages_ran(run_dvc(repo, "repro")) == {"configure", "train", "evaluate"}
    (repo / "conf/model/simple_cnn.yaml").write_text((repo / "conf/model/simple_cnn.yaml").read_text() + "\n# note\n")
    assert stages_ran(run_dvc(repo, "repro")) == {"configure"}
    # a data key prepare reads re-runs it and what follows
    digits_conf = repo / "conf/data/digits.yaml"
    digits_conf.write_text(digits_conf.read_text().replace("val_fraction: 0.1", "val_fraction: 0.15"))
    assert stages_ran(run_dvc(repo, "repro")) == {"configure", "prepare", "train", "evaluate"}

    # push to a local remote, lose the outputs and the cache, pull them back identical
    prepared, checkpoints = repo / "data/prepared/pipeline", repo / "artifacts/train/checkpoints"
    before = (_digest(prepared), _digest(checkpoints))
    run_dvc(repo, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    run_dvc(repo, "push")
    shutil.rmtree(prepared)
    shutil.rmtree(checkpoints)
    shutil.rmtree(repo / ".dvc/cache")
    run_dvc(repo, "pull")
    assert (_digest(prepared), _digest(checkpoints)) == before
    assert stages_ran(run_dvc(repo, "repro")) == set()
