"""data.image_size is checked against the model's smallest input and against memory before anything is
prepared: one line, exit 2, no prepared data, no MLflow run."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK, call_in_process, copy_project


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("image_size") / "project")


def _one_line(done):
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize(
    "size, expected",
    [
        (5, r"model=lenet5 .*needs inputs of at least 16x16 px, but data.image_size=5"),
        (100000, r"data.image_size=100000: .*1797 x 100000 x 100000 x 1 bytes = .* GiB.*available"),
    ],
)
def test_a_size_the_model_or_memory_cannot_take_is_refused_first(root, tmp_path, size, expected):
    done = call_in_process(
        "cnnlab-train",
        [*QUICK, f"data.image_size={size}", f"paths.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"],
        root,
    )
    line = _one_line(done)
    assert re.search(expected, line), line
    assert not (tmp_path / "prepared").exists()
    if (root / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_prepare_alone_checks_memory(root, tmp_path):
    done = call_in_process(
        "cnnlab-prepare", ["experiment=none", "data.image_size=100000", f"paths.data_dir={tmp_path}"], root
    )
    assert "GiB" in _one_line(done)
    assert not (tmp_path / "prepared").exists()
