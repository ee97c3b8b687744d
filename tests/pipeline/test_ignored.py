"""What the README's commands leave behind is ignored by git: a walk-through leaves `git status` clean."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("path", ["dvc_plots/index.html", "compare.png", "predictions/a.csv", "explain/a.png"])
def test_leftovers_of_documented_commands_are_ignored(path):
    done = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO)
    assert done.returncode == 0, f"{path} is not ignored by .gitignore"


@pytest.mark.parametrize(
    "path", ["dvc.lock", "pipelines/transfer/dvc.lock", "pipelines/fashion/dvc.lock", "pipelines/speedrun/dvc.lock"]
)
def test_no_dvc_lock_is_ignored(path):
    """DVC refuses every command ("'.../dvc.lock' is git-ignored") in a repository that ignores a lock file."""
    done = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO)
    assert done.returncode == 1, f"{path} is ignored by .gitignore"


def test_metrics_show_loads_every_declared_metric_before_the_optional_pipelines_ran():
    """`dvc metrics show` in a checkout: no "failed to load" and no empty rows for pipelines/transfer."""
    import os
    import sys
    from pathlib import Path

    dvc = Path(sys.executable).parent / "dvc"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([str(dvc), "metrics", "show"], cwd=REPO, capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "failed to load" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert "artifacts/transfer" not in done.stdout
