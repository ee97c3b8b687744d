"""`dvc repro` in a temporary copy of the repo: builds, then does nothing, then re-runs only what changed."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, cli_env, copy_project

pytestmark = pytest.mark.slow


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=cli_env(root), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def _digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("dvcrepo"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["max_epochs"] = 1  # the pipeline's shape, not its accuracy, is under test
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    return root


def test_repro_builds_then_skips_then_reruns_only_dependants(repo: Path, tmp_path: Path):
    first = _dvc(repo, "repro")
    assert _ran(first) == {"prepare", "train", "evaluate"}
    test_metrics = json.loads((repo / "artifacts/evaluate/metrics.json").read_text())
    assert 0.0 <= test_metrics["test/acc"] <= 1.0
    assert (repo / "artifacts/evaluate/plots/confusion_matrix.png").is_file()
    run_id = json.loads((repo / "artifacts/train/run.json").read_text())["run_id"]

    second = _dvc(repo, "repro")
    assert _ran(second) == set()
    assert "Data and pipelines are up to date" in second

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = 0.002
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _dvc(repo, "repro")
    assert _ran(third) == {"train", "evaluate"}
    assert json.loads((repo / "artifacts/train/run.json").read_text())["run_id"] != run_id  # a new MLflow run

    # a conf file the train stage reads re-runs it too; one it does not read changes nothing
    model_conf = repo / "conf/model/lenet5.yaml"
    model_conf.write_text(model_conf.read_text().replace("dropout: 0.0", "dropout: 0.1"))
    assert _ran(_dvc(repo, "repro")) == {"train", "evaluate"}
    (repo / "conf/model/simple_cnn.yaml").write_text((repo / "conf/model/simple_cnn.yaml").read_text() + "\n# note\n")
    assert _ran(_dvc(repo, "repro")) == set()

    # push to a local remote, lose the outputs and the cache, pull them back identical
    prepared, checkpoints = repo / "data/prepared/digits-32", repo / "artifacts/train/checkpoints"
    before = (_digest(prepared), _digest(checkpoints))
    _dvc(repo, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    _dvc(repo, "push")
    shutil.rmtree(prepared)
    shutil.rmtree(checkpoints)
    shutil.rmtree(repo / ".dvc/cache")
    _dvc(repo, "pull")
    assert (_digest(prepared), _digest(checkpoints)) == before
    assert _ran(_dvc(repo, "repro")) == set()
