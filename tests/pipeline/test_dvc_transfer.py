"""pipelines/transfer/dvc.yaml: a fine-tune stage on the pretrain stage's checkpoint; repro re-runs what changed."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import dvc_project, run_dvc

pytestmark = pytest.mark.slow
PIPELINE = "pipelines/transfer/dvc.yaml"


def stages_ran(output: str) -> set[str]:
    """The stages of this pipeline a `dvc repro` output says it ran ('pipelines/transfer/dvc.yaml:pretrain')."""
    return set(re.findall(r"Running stage '(?:[\w/.]+:)?(\w+)'", output))


def edit(repo: Path, change) -> None:
    path = repo / "pipelines" / "transfer" / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_finetune_depends_on_pretrain_and_reruns_only_what_changed(tmp_path):
    repo = dvc_project(tmp_path / "repo", lambda params: None)

    def quick(params):
        params["pretrain"]["max_epochs"] = 1
        params["finetune"]["max_epochs"] = 1

    edit(repo, quick)
    assert stages_ran(run_dvc(repo, "repro", PIPELINE)) == {"pretrain", "finetune", "evaluate"}
    pretrained = repo / "artifacts/transfer/pretrain/checkpoints/best.ckpt"
    finetune_run = json.loads((repo / "artifacts/transfer/finetune/run.json").read_text())
    params = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").get_run(finetune_run["run_id"]).data.params
    assert params["weights.source"] == "artifacts/transfer/pretrain/checkpoints/best.ckpt"
    assert params["weights.sha256"] == hashlib.sha256(pretrained.read_bytes()).hexdigest()
    assert params["weights.channel_rule"] == "features.0.weight: summed 3 -> 1 channels"  # shapes RGB -> digits grey
    assert 0 <= json.loads((repo / "artifacts/transfer/evaluate/metrics.json").read_text())["test/acc"] <= 1

    assert stages_ran(run_dvc(repo, "repro", PIPELINE)) == set()
    edit(repo, lambda p: p["finetune"].update(freeze="backbone"))
    assert stages_ran(run_dvc(repo, "repro", PIPELINE)) == {"finetune", "evaluate"}
    edit(repo, lambda p: p["pretrain"].update(lr=0.002))
    assert stages_ran(run_dvc(repo, "repro", PIPELINE)) == {"pretrain", "finetune", "evaluate"}
