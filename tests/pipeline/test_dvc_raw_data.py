"""A raw dataset versioned with `dvc add data/raw/<name>`: one changed image re-runs prepare and what follows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import dvc_project, run_dvc, stages_ran

pytestmark = pytest.mark.slow


def write_pictures(root: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, colour in (("red", 0), ("blue", 2)):
        for i in range(10):
            pixels = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            pixels[..., colour] += 180
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def test_changing_one_raw_image_reruns_prepare_and_what_follows(tmp_path):
    def raw_pictures(params: dict) -> None:
        params["overrides"] = "data=image_folder data.image_size=16 data.root=data/raw/pictures trainer.max_epochs=1"

    repo = dvc_project(tmp_path / "repo", raw_pictures)
    write_pictures(repo / "data" / "raw" / "pictures")
    run_dvc(repo, "add", "data/raw/pictures")
    assert (repo / "data" / "raw" / "pictures.dvc").is_file()
    assert "/pictures" in (repo / "data" / "raw" / ".gitignore").read_text()  # git keeps the .dvc, not the files

    assert stages_ran(run_dvc(repo, "repro")) == {"configure", "prepare", "train", "evaluate"}
    hash_before = json.loads((repo / "data/prepared/pipeline/meta.json").read_text())["content_hash"]
    assert stages_ran(run_dvc(repo, "repro")) == set()

    changed = repo / "data" / "raw" / "pictures" / "red" / "3.png"
    Image.fromarray(np.full((20, 20, 3), 255, np.uint8)).save(changed)
    assert "data/raw" in run_dvc(repo, "status", "prepare")  # DVC sees the raw change before anything runs
    assert stages_ran(run_dvc(repo, "repro")) == {"prepare", "train", "evaluate"}
    assert json.loads((repo / "data/prepared/pipeline/meta.json").read_text())["content_hash"] != hash_before

    run_dvc(repo, "add", "data/raw/pictures")  # the new version of the dataset, as a user would commit it
    (repo / "data" / "raw" / "pictures" / "blue" / "9.png").unlink()  # removing one re-runs it too
    assert "prepare" in stages_ran(run_dvc(repo, "repro"))
    ignored = lambda path: subprocess.run(["git", "check-ignore", "-q", path], cwd=repo).returncode == 0  # noqa: E731
    assert ignored("data/raw/pictures/red/0.png") and not ignored("data/raw/pictures.dvc")
