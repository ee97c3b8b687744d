"""cnnlab-sync holds a pending file to its schema: a corrupt or crafted one is one line naming the file
(exit 2, no traceback), and a finished run never goes back to RUNNING."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import call_in_process, quick_run

POINT = {"key": "val/loss", "value": 0.5, "timestamp": 1, "step": 1}
BAD = {
    "truncated": '{"status": "FINISHED", "outputs_logged": tr',
    "a list": "[1, 2, 3]",
    "missing status": json.dumps({"outputs_logged": True, "metrics": []}),
    "RUNNING": json.dumps({"status": "RUNNING", "outputs_logged": True, "metrics": []}),
    "unknown status": json.dumps({"status": "DELETED", "outputs_logged": True, "metrics": []}),
    "metrics not a list": json.dumps({"status": "FINISHED", "outputs_logged": True, "metrics": {"a": 1}}),
    "a point without a value": json.dumps(
        {"status": "FINISHED", "outputs_logged": True, "metrics": [{"key": "a", "timestamp": 1, "step": 1}]}
    ),
    "a value as text": json.dumps(
        {"status": "FINISHED", "outputs_logged": True, "metrics": [{**POINT, "value": "high"}]}
    ),
    "a key MLflow refuses": json.dumps(
        {"status": "FINISHED", "outputs_logged": True, "metrics": [{**POINT, "key": "a/../../b"}]}
    ),
    "empty": "",
    "binary": "\x00\xff\x00",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root, out = quick_run(tmp_path_factory.mktemp("sync"))
    return root, out, json.loads((out / "run.json").read_text())["run_id"]


@pytest.mark.parametrize("name", BAD)
def test_a_bad_pending_file_is_one_line_and_the_run_stays_finished(finished, name):
    root, out, run_id = finished
    pending = out / "mlflow_pending.json"
    pending.write_text(BAD[name])
    done = call_in_process("cnnlab-sync", [str(out)], root)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(pending) in errors[0], done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FINISHED"
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_a_corrupt_run_record_is_one_line(finished):
    root, out, _ = finished
    record = out / "run.json"
    saved = record.read_text()
    try:
        record.write_text('{"run_id": ')
        done = call_in_process("cnnlab-sync", [str(out)], root)
    finally:
        record.write_text(saved)
    assert done.returncode == 2 and "Traceback" not in done.stderr and str(record) in done.stderr, done.stderr[-3000:]
