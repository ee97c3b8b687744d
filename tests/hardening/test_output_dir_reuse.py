"""A second training into a directory that holds another run is refused before anything is written."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from tests.conftest import QUICK, call_in_process, quick_run


def test_a_directory_holding_a_run_is_refused_unless_resumed(tmp_path):
    root, out = quick_run(tmp_path, "out")
    record = (out / "run.json").read_text()
    run_id = json.loads(record)["run_id"]
    before = _files(out)

    again = call_in_process("cnnlab-train", [*QUICK, "model=simple_cnn", f"hydra.run.dir={out}"], root)

    assert again.returncode == 2, again.stderr[-3000:]
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert str(out) in errors[0] and run_id in errors[0] and "resume=true" in errors[0]
    assert _files(out) == before  # no best-v1.ckpt, run.json and config.yaml untouched
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [run_id]


def _files(directory):
    """cnnlab's files in a training directory and when each was last written. Hydra's own (.hydra/, and
    train.log, which the refusal's line is appended to) are written before cnnlab runs."""
    return {
        p.relative_to(directory): p.stat().st_mtime_ns
        for p in directory.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.name != "train.log"
    }
