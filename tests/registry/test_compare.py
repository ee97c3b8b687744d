"""cnnlab-compare: runs ranked best first in a table, a chart of the metric against a param."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from cnnlab.tracking.comparison import RunRow, compare

EXPERIMENT = "compare-test"
RUNS = {  # run name: (optimizer.lr, model.name, best/val/acc, test/acc)
    "low-lr": ("0.0001", "lenet5", 0.70, None),
    "mid-lr": ("0.01", "lenet5", 0.90, 0.88),
    "high-lr": ("0.1", "simple_cnn", 0.80, 0.79),
}


@pytest.fixture(scope="module")
def logged(tracking_uri):
    """Three training runs, a run without the metric and a sweep parent, logged straight through MlflowClient."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    for name, (lr, model, val_acc, test_acc) in RUNS.items():
        run_id = client.create_run(experiment_id, run_name=name).info.run_id
        for key, value in {
            "optimizer.lr": lr,
            "model.name": model,
            "task.monitor": "val/acc",
            "task.mode": "max",
        }.items():
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "best/val/acc", val_acc)
        if test_acc is not None:
            client.log_metric(run_id, "test/acc", test_acc)
        client.set_terminated(run_id)
    crashed = client.create_run(experiment_id, run_name="crashed").info.run_id
    client.log_param(crashed, "optimizer.lr", "1.0")
    client.set_terminated(crashed, "FAILED")
    sweep = client.create_run(experiment_id, run_name="sweep-12-00-00", tags={"cnnlab.role": "sweep"}).info.run_id
    client.log_metric(sweep, "best/val/acc", 0.99)
    client.set_terminated(sweep)
    return tracking_uri


def test_table_is_sorted_best_first_and_chart_is_written(logged, call_cli, tmp_path):
    chart = tmp_path / "charts" / "lr.png"
    done = call_cli("cnnlab-compare", f"experiment={EXPERIMENT}", "params=[model.name,optimizer.lr]", f"output={chart}")
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"experiment {EXPERIMENT}: 3 runs ranked by best/val/acc (highest first)")
    assert "1 sweep parent runs left out" in lines[0]
    header = lines[1].split()
    assert header == ["rank", "run", "run_id", "model.name", "optimizer.lr", "best/val/acc", "test/acc", "status"]
    rows = [line.split() for line in lines[3:7]]
    assert [row[1] for row in rows] == ["mid-lr", "high-lr", "low-lr", "crashed"]  # unranked last, never hidden
    assert [row[0] for row in rows] == ["1", "2", "3", "-"]
    assert rows[0][3:7] == ["lenet5", "0.01", "0.9000", "0.8800"]
    assert rows[2][6] == "-" and rows[3][-1] == "FAILED"
    assert "sweep-12-00-00" not in done.stdout
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
    assert f"chart: {chart}" in done.stdout


def test_min_mode_and_top_limit():
    runs = [
        RunRow(f"id{i}", f"run{i}", "FINISHED", {"optimizer.lr": str(lr)}, {"val/loss": loss})
        for i, (lr, loss) in enumerate([(0.1, 0.5), (0.01, 0.2), (0.001, 0.9)])
    ]
    ranked = compare(runs, "e", metric="val/loss", mode="min", top=2).ranked
    assert [r.name for r in ranked] == ["run1", "run0"]
    assert [r.name for r in compare(runs, "e", metric="val/loss", mode="max").ranked] == ["run2", "run0", "run1"]


def test_unknown_experiment_and_metric_are_named(logged, run_cli):
    done = run_cli("cnnlab-compare", "experiment=no-such-experiment", "output=null", check=False)
    assert done.returncode == 2
    assert "experiment='no-such-experiment' is not in the MLflow store" in done.stderr and EXPERIMENT in done.stderr
    with pytest.raises(ValueError, match="metric='val/miou' is logged by none"):
        compare([RunRow("a", "a", "FINISHED", {}, {"best/val/acc": 1.0})], "e", metric="val/miou")
