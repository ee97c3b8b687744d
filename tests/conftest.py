"""Shared fixtures: a throwaway project root with its own MLflow store, and a CLI runner."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from importlib.metadata import entry_points
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
    shutil.copytree(
        REPO / "data" / "raw", destination / "data" / "raw", dirs_exist_ok=True
    )  # the prepare stage depends on it
    shutil.copytree(REPO / "pipelines", destination / "pipelines", dirs_exist_ok=True)  # the other pipelines
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
    env = cli_env(root, DVC_NO_ANALYTICS="1")  # no usage report (a background process per command) from a test
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def pipeline_stages(pipeline: str) -> set[str]:
    """The stage names `dvc stage list` gives for a pipeline folder of this repository (train@<recipe>-<seed>, ...)."""
    done = subprocess.run(
        [str(BIN / "dvc"), "stage", "list", "--name-only", "-R", pipeline],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return {line.split(":")[-1] for line in done.stdout.split()}


def stages_ran(output: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return set(re.findall(r"Running stage '(\w+)'", output))


def train_in_process(overrides: list[str], output_dir: Path, conf_dir: Path = REPO / "conf"):
    """What `cnnlab-train <overrides> hydra.run.dir=<output_dir>` does, in this process, from `conf_dir`;
    returns (run.json, the composed config). The store is $MLFLOW_TRACKING_URI (or logger.tracking_uri)."""
    import json

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from cnnlab.config import register_configs
    from cnnlab.training import train

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(output_dir)  # what @hydra.main sets before calling the task function
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    train(cfg)
    record = Path(output_dir) / "run.json"
    return (json.loads(record.read_text()) if record.is_file() else {}), cfg


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

    def run(
        command: str,
        *args: str,
        check: bool = True,
        cwd: Path | None = None,
        root: Path | None = None,
        timeout: int = 600,
    ) -> subprocess.CompletedProcess:
        root = root or project
        done = subprocess.run(
            [str(BIN / command), *args],
            cwd=cwd or root,
            env=cli_env(root),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{command} {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
            )
        return done

    return run


def call_in_process(
    command: str, args: list[str], root: Path, cwd: Path | None = None, **extra_env: str
) -> subprocess.CompletedProcess:
    """What `<command> <args>` does as a process, in this one: the console script's `main` with sys.argv,
    cwd and the environment of `cli_env(root)`; its output and exit status as a CompletedProcess.

    Saves each command start-up (torch, Lightning, MLflow: seconds) for tests of outputs, MLflow
    contents and error messages. Global state a run changes is put back afterwards: environment
    (PL_GLOBAL_SEED, CNNLAB_PARENT_RUN_ID...), Hydra's singletons, logging handlers and loggers, warning filters,
    torch's deterministic-algorithms switch and MLflow's tracking URI.
    """
    (script,) = entry_points(group="console_scripts", name=command)
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv[:], os.getcwd()
    root_logger = logging.getLogger()
    saved_handlers, saved_level = root_logger.handlers[:], root_logger.level
    # Hydra's `disabled` logging (explain, predict, compare) is dictConfig(disable_existing_loggers=True):
    # it would silence every logger that exists now for the rest of this test process
    saved_loggers = {
        name: (logger.disabled, logger.level)
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    torch = sys.modules.get("torch")
    deterministic = (
        (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        if torch
        else None
    )
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    saved_uris = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    tracking_utils._tracking_uri = registry_utils._registry_uri = None  # as in a new process: the environment decides
    from hydra.core.global_hydra import GlobalHydra

    out, err = tempfile.TemporaryFile("w+", encoding="utf-8"), tempfile.TemporaryFile("w+", encoding="utf-8")
    try:
        environment = cli_env(root, **extra_env)  # from the test's environment, before it is cleared
        os.environ.clear()
        os.environ.update(environment)
        sys.argv = [str(BIN / command), *args]
        os.chdir(cwd or root)
        GlobalHydra.instance().clear()
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                # imported again: @hydra.main binds the config dir of $CNNLAB_ROOT at import
                main = getattr(importlib.reload(importlib.import_module(script.module)), script.attr)
                main()
                returncode = 0
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    returncode = exit_.code or 0
                else:
                    print(exit_.code, file=sys.stderr)
                    returncode = 1
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                returncode = 1
        out.flush(), err.flush()
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(sys.argv, returncode, out.read(), err.read())
    finally:
        GlobalHydra.instance().clear()
        for handler in root_logger.handlers:
            if handler not in saved_handlers:
                handler.close()
        root_logger.handlers[:], root_logger.level = saved_handlers, saved_level
        for name, (disabled, level) in saved_loggers.items():
            logger = logging.getLogger(name)
            logger.disabled, logger.level = disabled, level
        if deterministic is not None or "torch" in sys.modules:
            import torch

            enabled, warn_only = deterministic or (False, False)
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved_uris
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        out.close(), err.close()


@pytest.fixture(autouse=True)
def _mlflow_process_uris():
    """MLflow's process-wide tracking and registry URIs as they were before each test: one that sets
    them (or code under test that does) must not send a later test's runs or models to its store."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    yield
    tracking_utils._tracking_uri, registry_utils._registry_uri = saved


@pytest.fixture(scope="session")
def call_cli(project: Path):
    """`run_cli`'s twin that runs the entry point in this process (see `call_in_process`): for tests
    of what a command writes, logs and says. Start-up, signals and relaunches need `run_cli`."""

    def call(
        command: str,
        *args: str,
        check: bool = True,
        cwd: Path | None = None,
        root: Path | None = None,
        **extra_env: str,
    ) -> subprocess.CompletedProcess:
        done = call_in_process(command, list(args), root or project, cwd, **extra_env)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{command} {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
            )
        return done

    return call


# Few enough batches that a CLI training run costs seconds; still several logged steps.
# Model logging (an export, ~5 s) is left to the tests that check it.
# a run long enough to interrupt in the middle (3 epochs of 8 steps): resume and SLURM requeue tests
INTERRUPTIBLE_RUN = (
    "experiment=none",  # on the plain defaults of conf/
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=3",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=2",
    "logger.log_model=false",
    "logger.system_metrics=false",
    "callbacks.early_stopping=null",
)


QUICK = (
    "trainer=debug",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=2",
    "logger.log_model=false",
    "experiment=none",  # the plain defaults of conf/, not the default recipe (last: QUICK[1:] drops trainer=debug)
)


def quick_run(tmp_path: Path, out_name: str = "train") -> tuple[Path, Path]:
    """A project copy under tmp_path and one QUICK training of it into tmp_path/<out_name>: (root, output dir)."""
    root = copy_project(tmp_path / "project")
    out = tmp_path / out_name
    done = call_in_process("cnnlab-train", [*QUICK, f"hydra.run.dir={out}"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, out


def pytest_collection_modifyitems(config, items) -> None:
    """Files of `slow` tests first (the longest, end-to-end runs), the quick ones after.

    With `--dist loadfile --no-loadscope-reorder` (the Makefile's) the two workers take files in this
    order, so the long files start at once and the many short ones even out the end; xdist's default
    order (most tests first) would leave a one-test `dvc repro` file to run alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file keeps its order
