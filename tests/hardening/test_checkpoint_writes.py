"""Checkpoints are written to a temporary file beside them and renamed: a full disk is one line naming
the directory and the space needed, the run ends FAILED with its last complete checkpoint, and no
`last.ckpt.link-<pid>` or temporary file is left behind (on tmpfs, where the old writer left them)."""

from __future__ import annotations

import contextlib
import json
import subprocess

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK, call_in_process, copy_project


@contextlib.contextmanager
def tmpfs(path, size):
    """A tmpfs of `size` bytes at `path` (root only: the test is skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _train(root, out, *extra):
    return call_in_process(
        "cnnlab-train",
        [*QUICK, "trainer.max_epochs=4", "callbacks.early_stopping=null", *extra, f"hydra.run.dir={out}"],
        root,
    )


def test_checkpoints_on_tmpfs_then_on_a_full_one(tmp_path):
    root = copy_project(tmp_path / "project")
    with tmpfs(tmp_path / "roomy", 64 * 2**20) as roomy:
        done = _train(root, roomy / "run")
        assert done.returncode == 0, done.stderr[-3000:]
        names = sorted(p.name for p in (roomy / "run" / "checkpoints").iterdir())
        assert names == ["best.ckpt", "last.ckpt"]  # no last.ckpt.link-<pid>, no temporaries
        for name in names:
            torch.load(roomy / "run" / "checkpoints" / name, weights_only=False)  # noqa: S614  (our own file)
        size = (roomy / "run" / "checkpoints" / "best.ckpt").stat().st_size
        others = sum(p.stat().st_size for p in (roomy / "run").rglob("*") if p.is_file() and p.suffix != ".ckpt")

    # room for the first epoch's checkpoint, not for a second one beside it
    with tmpfs(tmp_path / "full", int(1.6 * size) + others + 64 * 2**10) as full:
        out = full / "run"
        done = _train(root, out)
        assert done.returncode != 0
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert str(out / "checkpoints") in errors[0] and "MiB" in errors[0], errors[0]
        names = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert names == ["best.ckpt", "last.ckpt"], names
        checkpoint = torch.load(out / "checkpoints" / "best.ckpt", weights_only=False)  # noqa: S614
        assert checkpoint["epoch"] == 0  # the last good one, whole
        run_id = json.loads((out / "run.json").read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FAILED"

    # no room for even the first: no truncated best.ckpt under its final name
    with tmpfs(tmp_path / "tiny", int(0.5 * size) + others + 64 * 2**10) as tiny:
        done = _train(root, tiny / "run")
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert not list((tiny / "run").rglob("*.ckpt*")) and not list((tiny / "run").rglob(".*.tmp-*"))
        assert client.get_run(json.loads((tiny / "run" / "run.json").read_text())["run_id"]).info.status == "FAILED"
