"""Shared fixtures: a throwaway project root with its own MLflow store, and a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
