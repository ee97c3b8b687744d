"""A DVC experiment states what it runs beyond its baseline commit's params.yaml (issue: values a workspace
`dvc exp run -S` left in params.yaml leak silently into later queued and --temp experiments)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from cnnlab.dvc_experiment import describe_changes, params_changed_from_baseline, warn_about_changes

COMMITTED = {"experiment": "digits_lenet5", "overrides": "trainer.max_epochs=1 seed=0"}


def test_changes_are_listed_override_by_override():
    current = {"experiment": "shapes_classification", "overrides": "trainer.max_epochs=1 seed=1 model.dropout=0.25"}
    assert describe_changes(COMMITTED, current) == [
        "experiment: 'digits_lenet5' -> 'shapes_classification'",
        "overrides: seed=0 -> seed=1",
        "overrides: +model.dropout=0.25",
    ]
    assert describe_changes(COMMITTED, {**COMMITTED, "overrides": "trainer.max_epochs=1"}) == ["overrides: -seed=0"]
    assert describe_changes(COMMITTED, dict(COMMITTED)) == []
    assert describe_changes({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ["a.c: 2 (new)"]
    # quoted overrides stay one item; unbalanced quotes are compared as text, not a crash
    assert describe_changes({"overrides": ""}, {"overrides": "'tags=[a, b]' x=1"}) == [
        "overrides: +tags=[a, b]",
        "overrides: +x=1",
    ]
    assert describe_changes({"overrides": ""}, {"overrides": "x='1"}) == ["overrides: +x='1"]


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    for folder in (root, root / "sub"):
        (folder / "params.yaml").write_text(yaml.safe_dump(COMMITTED))
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "params"]):
        subprocess.run(["git", *args], cwd=root, check=True, env={**env, "PATH": "/usr/bin:/bin"})
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    return root, rev


def test_the_stage_folders_params_are_compared_with_the_baselines(repo, monkeypatch, caplog):
    root, rev = repo
    assert params_changed_from_baseline(root) is None  # not in a DVC experiment
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", rev)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("DVC_EXP_NAME", "leaky")
    assert params_changed_from_baseline(root) == []
    (root / "sub" / "params.yaml").write_text(yaml.safe_dump({**COMMITTED, "overrides": "trainer.max_epochs=3"}))
    assert params_changed_from_baseline(root / "sub") == [
        "overrides: trainer.max_epochs=1 -> trainer.max_epochs=3",
        "overrides: -seed=0",
    ]
    assert params_changed_from_baseline(root) == []  # the root's own file is unchanged
    warn_about_changes(params_changed_from_baseline(root / "sub"))
    (message,) = [r.getMessage() for r in caplog.records if r.name == "cnnlab.dvc_experiment"]
    assert message.startswith(f"DVC experiment leaky runs with params.yaml changed from its baseline {rev[:7]}: ")
    assert "trainer.max_epochs=1 -> trainer.max_epochs=3; overrides: -seed=0" in message
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0" * 40)  # a baseline git cannot show: nothing claimed
    assert params_changed_from_baseline(root / "sub") is None
