"""Where the project lives: the root that anchors configs, data, artifacts and the MLflow store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_SOURCE_CHECKOUT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The project root: $CNNLAB_ROOT, else the nearest ancestor of the cwd holding conf/config.yaml.

    Resolved from the working directory rather than the installed package so that a copy of the
    repository (a DVC experiment workspace, a test's temporary clone) uses its own configs and store.
    """
    if env := os.environ.get("CNNLAB_ROOT"):
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "conf" / "config.yaml").is_file():
            return candidate
    return _SOURCE_CHECKOUT


def config_dir() -> Path:
    """The Hydra config tree of the project root."""
    return project_root() / "conf"


def source_config_dir() -> Path:
    """cnnlab's own conf/ tree, beside its sources (a checkout or an editable install)."""
    return _SOURCE_CHECKOUT / "conf"


def store_root() -> Path:
    """Where the embedded MLflow store lives: $CNNLAB_ROOT, else $DVC_ROOT, else the project root.

    DVC runs queued and temporary experiments (`dvc exp run --queue` / `--temp`) in a copy under
    .dvc/tmp/exps/ that it deletes afterwards, and names the original repository in $DVC_ROOT:
    their runs must land in that repository's store, not the copy's.
    """
    if os.environ.get("CNNLAB_ROOT"):
        return project_root()
    if env := os.environ.get("DVC_ROOT"):
        return Path(env).resolve()
    return project_root()


def default_tracking_uri() -> str:
    """The embedded MLflow store: a SQLite file at the store root (see `store_root`), as an absolute URI.

    Absolute so that Hydra run dirs, DVC workspaces and DDP ranks all reach the same file; the
    busy timeout lets parallel sweep jobs wait for the write lock instead of failing.
    """
    return f"sqlite:///{store_root() / 'mlflow.db'}?timeout=60"


def portable(value: Any) -> Any:
    """`value` with every absolute path inside the project root made relative to it ("." for the root):
    what run.json and a run's config.yaml keep, so they are the same in every clone. Walks dicts and lists."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        for root in (str(project_root()), str(store_root())):
            if value == root or value.startswith(root + os.sep):
                return os.path.relpath(value, root)
    return value


def from_root(path: str | Path) -> Path:
    """A path that run.json or config.yaml keeps relative to the project root (see `portable`), absolute again."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path
