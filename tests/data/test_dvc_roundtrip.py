"""The DVC data loop of docs/data.md: add a raw folder, push to a remote, lose it, pull it back intact."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from data_writers import image_array, write_image

DVC = Path(sys.executable).with_name("dvc")


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run(command: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_dvc_add_push_pull_round_trip(tmp_path):
    project, remote = tmp_path / "project", tmp_path / "remote"
    project.mkdir()
    raw = project / "data" / "raw" / "pets"
    for i, name in enumerate(("cat", "dog")):
        for j in range(3):
            write_image(raw / name / f"{name}.{j}.jpg", image_array(24, 24, seed=10 * i + j), quality=90)
    (raw / "labels.csv").write_text("path,label\ncat/cat.0.jpg,cat\n")
    (raw / "weights.bin").write_bytes(np.random.default_rng(0).bytes(70_000))
    before = digest(raw)

    run(["git", "init", "-q"], project)
    run([str(DVC), "init", "-q"], project)
    run([str(DVC), "add", "-q", "data/raw/pets"], project)
    run([str(DVC), "remote", "add", "-d", "local", str(remote)], project)
    run([str(DVC), "push", "-q"], project)
    assert (project / "data" / "raw" / "pets.dvc").is_file()
    assert any(remote.rglob("*"))  # the remote holds the content

    shutil.rmtree(raw)
    shutil.rmtree(project / ".dvc" / "cache")
    run([str(DVC), "pull", "-q"], project)
    assert digest(raw) == before
