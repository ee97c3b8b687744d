"""Any class name a folder or a CSV can hold trains, evaluates and predicts, with legal MLflow metric
keys, and no CSV cnnlab writes holds a cell a spreadsheet would run."""

from __future__ import annotations

import csv

import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image

from cnnlab.tables import write_csv
from tests.conftest import QUICK, call_in_process, copy_project

HOSTILE = [
    "C++",
    "cat's",
    '=HYPERLINK("http://evil","x")',
    "two words",
    "ünïcödé 猫",
    "@SUM(A1)",
    "-2+3",
    "a,b",
    "$x^2$",
    "a/../b",
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _manifest(root):
    """Eight 24x24 images a class, labelled with HOSTILE (quoted as CSV needs)."""
    rng = np.random.default_rng(0)
    rows = [["path", "label"]]
    for index, name in enumerate(HOSTILE):
        for i in range(8):
            path = root / "images" / f"{index}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(rng.normal(index * 25, 10, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path)
            rows.append([f"images/{index}-{i}.png", name])
    with open(root / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _cells(path):
    with open(path, newline="") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def test_hostile_class_names_train_evaluate_and_predict_end_to_end(tmp_path):
    root = copy_project(tmp_path / "project")
    _manifest(tmp_path / "data")
    data = ["data=manifest", f"data.root={tmp_path / 'data'}", "data.image_size=32", "data.test_fraction=0.4"]
    out, evaluated = tmp_path / "train", tmp_path / "evaluate"
    trained = call_in_process("cnnlab-train", [*QUICK, *data, "logger.log_model=true", f"hydra.run.dir={out}"], root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    done = call_in_process(
        "cnnlab-evaluate", [*data, f"evaluate.train_dir={out}", f"evaluate.output_dir={evaluated}"], root
    )
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    per_class = {k: v for k, v in run.data.metrics.items() if k.startswith("test/acc_class/")}
    assert len(per_class) == len(HOSTILE), sorted(run.data.metrics)
    assert "test/acc_class/C++" not in per_class  # sanitised: MLflow refuses +
    assert "test/acc_class/two words" in per_class  # a legal name stays as it is
    with open(evaluated / "plots" / "per_class_accuracy.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["metric"] for row in table] == [
        f"test/acc_class/{k.split('/', 2)[2]}" for k in _sorted(per_class, table)
    ]
    names = {row["class"].removeprefix("'") for row in table}
    assert names == set(HOSTILE)  # the true names, in the table

    for path in [evaluated / "plots" / "predictions.csv", evaluated / "plots" / "per_class_accuracy.csv"]:
        cells = _cells(path)
        assert not [c for c in cells if c.startswith(FORMULA_START) and not _number(c)], path
        assert '\'=HYPERLINK("http://evil","x")' in cells

    images = sorted((tmp_path / "data" / "images").glob("*-0.png"))
    predicted = call_in_process(
        "cnnlab-predict",
        [f"model_uri=runs:/{run.info.run_id}/model", f"input={images[0].parent}", f"output_dir={tmp_path / 'predict'}"],
        root,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    cells = _cells(tmp_path / "predict" / "predictions.csv")
    assert not [c for c in cells if c.startswith(FORMULA_START) and not _number(c)]


def _sorted(per_class, table):
    order = [row["metric"] for row in table]
    return sorted(per_class, key=order.index)


def _number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_the_shared_writer_escapes_formulas_and_keeps_numbers(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, ["name", "value"], [["=1+1", -0.5], ["+x", "-3"], ["@a", 2], ["\tb", "c,d"], ["-x", "\rq"]])
    assert _cells(path) == ["name", "value", "'=1+1", "-0.5", "'+x", "-3", "'@a", "2", "'\tb", "c,d", "'-x", "'\rq"]
    assert path.read_bytes().startswith(b"name,value\n")  # LF line ends: committed CSVs diff line by line
