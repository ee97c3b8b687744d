"""What a DVC experiment runs beyond the commit it started from.

`dvc exp run --queue` and `--temp` start from a copy of the workspace, uncommitted params.yaml included, and
a workspace `dvc exp run -S ...` leaves its values in params.yaml: a later experiment silently runs with an
earlier one's values as well as its own. DVC records neither which values came from `-S`, nor offers a hook at
queue time, so the run itself states every difference from the committed params.yaml of its baseline
(`$DVC_EXP_BASELINE_REV`): printed as a warning and kept as the MLflow tag `cnnlab.dvc_params_changed`.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any, Optional

import yaml

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
OVERRIDES_KEY = "overrides"  # params.yaml's free Hydra overrides: compared override by override


def _git(cwd: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _flat(params: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(params, dict):
        return {prefix.rstrip("."): params} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in params.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def _overrides(value: Any) -> list[str]:
    try:
        return shlex.split(str(value or ""))
    except ValueError:  # unbalanced quotes: compare the text as a whole
        return [str(value)]


def _key(override: str) -> str:
    """The config key an override sets (`a.b=1`, `+a.b=1`, `~a.b` -> a.b)."""
    return override.split("=", 1)[0].lstrip("+~")


def describe_changes(committed: dict, current: dict) -> list[str]:
    """One line per difference between two params.yaml contents; the free overrides by override."""
    before, after = _flat(committed or {}), _flat(current or {})
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key == OVERRIDES_KEY:
            old_items, new_items = _overrides(old), _overrides(new)
            added = [item for item in new_items if item not in old_items]
            removed = [item for item in old_items if item not in new_items]
            replaced = {_key(item): item for item in removed}
            for item in added:
                was = replaced.pop(_key(item), None)
                lines.append(f"{key}: {was} -> {item}" if was else f"{key}: +{item}")
            lines += [f"{key}: -{item}" for item in removed if _key(item) in replaced]
        else:
            lines.append(f"{key}: {old!r} -> {new!r}" if key in before else f"{key}: {new!r} (new)")
    return lines


def params_changed_from_baseline(cwd: Optional[Path] = None) -> Optional[list[str]]:
    """In a DVC experiment: the differences of the stage's params.yaml from the baseline commit's, one line
    each ([] if none); None outside an experiment or where git cannot show the baseline's file."""
    baseline, root = os.environ.get("DVC_EXP_BASELINE_REV"), os.environ.get("DVC_ROOT")
    cwd = Path(cwd or os.getcwd())
    if not baseline or not root or not (cwd / PARAMS_FILE).is_file():
        return None
    prefix = _git(cwd, "rev-parse", "--show-prefix")  # the stage's folder inside the git tree (a copy's too)
    committed_text = _git(Path(root), "show", f"{baseline}:{(prefix or '').strip()}{PARAMS_FILE}")
    if prefix is None or committed_text is None:
        log.debug("no committed %s at %s to compare the experiment with", PARAMS_FILE, baseline)
        return None
    try:
        committed = yaml.safe_load(committed_text) or {}
        current = yaml.safe_load((cwd / PARAMS_FILE).read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    return describe_changes(committed, current)


def warn_about_changes(changes: Optional[list[str]]) -> None:
    if changes:
        log.warning(
            "DVC experiment %s runs with params.yaml changed from its baseline %s: %s. Values you did not give "
            "with -S this time come from the workspace's params.yaml (a workspace `dvc exp run -S` leaves its "
            "values there): `git checkout params.yaml` before queueing",
            os.environ.get("DVC_EXP_NAME", "?"),
            os.environ.get("DVC_EXP_BASELINE_REV", "?")[:7],
            "; ".join(changes),
        )
