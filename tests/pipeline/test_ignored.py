"""What the README's commands leave behind is ignored by git: a walk-through leaves `git status` clean."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    "path", ["dvc_plots/index.html", "compare.png", "predictions/a.csv", "explain/a.png", "pipelines/transfer/dvc.lock"]
)
def test_leftovers_of_documented_commands_are_ignored(path):
    done = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO)
    assert done.returncode == 0, f"{path} is not ignored by .gitignore"
