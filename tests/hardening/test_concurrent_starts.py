"""Eight processes starting runs at once on a fresh SQLite store all succeed (MLflow creates its
tables on first use; concurrent creators collided)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # end to end: run by `make test-slow` and CI, not by `make test`

START = """
import sys
from cnnlab.tracking.run import TrackedRun
run = TrackedRun.start(sys.argv[1], "concurrent", f"start-{sys.argv[2]}", {"cnnlab.probe": sys.argv[2]})
run.log_params({"job": sys.argv[2]})
run.end()
"""


def test_eight_concurrent_starts_on_a_fresh_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}?timeout=60"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", START, uri, str(i)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    failures = []
    for process in processes:
        _, err = process.communicate(timeout=300)
        if process.returncode != 0:
            failures.append(err[-1500:])
    assert not failures, "\n\n".join(failures)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert sorted(r.data.params["job"] for r in runs) == [str(i) for i in range(8)]
    assert all(r.info.status == "FINISHED" for r in runs)
