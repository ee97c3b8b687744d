"""Shared fixtures: a throwaway project root with its own MLflow store, and a CLI runner."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_project(destination: Path) -> Path:
    """The parts of the repo a cnnlab command reads (configs, pipeline files, sources)."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "conf", destination / "conf")
    shutil.copytree(REPO / "src", destination / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, destination / name)
    return destination


def cli_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CNNLAB_"))}
    env.update(
        CNNLAB_ROOT=str(root),
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


def dvc_project(destination: Path, edit_params) -> Path:
    """A copy of the project as its own git + DVC repo, params.yaml changed in place by `edit_params(params)`."""
    root = copy_project(destination)
    params = yaml.safe_load((root / "params.yaml").read_text())
    edit_params(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run_dvc(root, "init", "-q")
    return root


def run_dvc(root: Path, *args: str) -> str:
    """`dvc <args>` in `root` with the project's environment; its output, or a failure showing it."""
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=cli_env(root), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def stages_ran(output: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return set(re.findall(r"Running stage '(\w+)'", output))


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A project root shared by the session's CLI tests (prepared data is reused between them)."""
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def tracking_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


@pytest.fixture(scope="session")
def run_cli(project: Path):
    """Run a cnnlab entry point in the test project; returns the CompletedProcess."""

    def run(command: str, *args: str, check: bool = True, cwd: Path | None = None, root: Path | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:  # fmt: skip
        root = root or project
        done = subprocess.run(
            [str(BIN / command), *args], cwd=cwd or root, env=cli_env(root), capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{command} {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        return done

    return run


# Few enough batches that a CLI training run costs seconds; still several logged steps.
# Model logging (an export, ~5 s) is left to the tests that check it.
QUICK = ("trainer=debug", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2", "trainer.max_epochs=2",
         "trainer.log_every_n_steps=2", "logger.log_model=false")  # fmt: skip
