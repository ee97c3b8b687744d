"""pipelines/fashion: the recipes it trains exist, its committed table is what table.py makes of the
committed runs, and table.py names a run it cannot read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import pipeline_stages

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "pipelines" / "fashion"
PARAMS = yaml.safe_load((PIPELINE / "params.yaml").read_text())


def _table_module():
    spec = importlib.util.spec_from_file_location("fashion_table", PIPELINE / "table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_of_the_table_is_a_named_experiment():
    assert {"fashion_lenet5", "fashion_resnet18", "fashion_mobilenet_v2"} <= set(PARAMS["experiments"])
    for name in PARAMS["experiments"]:
        recipe = yaml.safe_load((REPO / "conf" / "experiment" / f"{name}.yaml").read_text())
        assert {"override /data": "fashion_mnist"} in recipe["defaults"], name
    assert len(PARAMS["seeds"]) >= 3  # min / mean / max over at least 3 seeds


def test_the_committed_table_is_made_of_the_committed_runs():
    rows = _table_module().table(REPO / "artifacts" / "fashion")
    assert rows == json.loads((REPO / "artifacts" / "fashion_table.json").read_text())
    for name, row in rows.items():
        assert row["test_acc_min"] <= row["test_acc_mean"] <= row["test_acc_max"], name
    # the README's claims: every recipe beats the tutorial's 0.916, ImageNet MobileNetV2 is the best of them
    assert min(row["test_acc_min"] for row in rows.values()) >= 0.916
    assert max(rows, key=lambda name: rows[name]["test_acc_mean"]) == "fashion_mobilenet_v2"


def test_a_run_without_its_test_accuracy_is_named(tmp_path, monkeypatch):
    table = _table_module()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"experiments": ["a"], "seeds": [1, 2]}))
    monkeypatch.setattr(table, "PARAMS", params)
    for seed, accuracy in ((1, 0.9), (2, 0.8)):
        run = tmp_path / "runs" / "a" / f"seed{seed}"
        (run / "evaluate").mkdir(parents=True)
        (run / "evaluate" / "metrics.json").write_text(json.dumps({"test/acc": accuracy}))
        (run / "metrics.json").write_text(json.dumps({"train_seconds": 10.0 * seed}))
    assert table.table(tmp_path / "runs")["a"] == {
        "seeds": [1, 2],
        "test_acc_min": 0.8,
        "test_acc_mean": 0.85,
        "test_acc_max": 0.9,
        "fit_seconds_mean": 15.0,
    }
    (tmp_path / "runs" / "a" / "seed2" / "evaluate" / "metrics.json").unlink()
    with pytest.raises(SystemExit, match=r"seed2: no test accuracy or fit time to tabulate"):
        table.table(tmp_path / "runs")


def test_dvc_lists_a_train_and_evaluate_stage_per_recipe_and_seed():
    stages = pipeline_stages("pipelines/fashion")
    for name in PARAMS["experiments"]:
        for seed in PARAMS["seeds"]:
            assert {f"train@{name}-{seed}", f"evaluate@{name}-{seed}"} <= stages
    assert "table" in stages
