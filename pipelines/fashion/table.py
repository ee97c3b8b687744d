"""The Fashion-MNIST table: per recipe of pipelines/fashion/params.yaml, test accuracy min / mean / max over its
seeds and the mean fit time, from each seed's evaluate/metrics.json and metrics.json.

    python pipelines/fashion/table.py artifacts/fashion artifacts/fashion_table.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import yaml

PARAMS = Path(__file__).with_name("params.yaml")


def table(runs: Path) -> dict:
    params = yaml.safe_load(PARAMS.read_text())
    rows = {}
    for experiment in params["experiments"]:
        accuracy, fit = [], []
        for seed in params["seeds"]:
            directory = runs / experiment / f"seed{seed}"
            try:
                accuracy.append(json.loads((directory / "evaluate" / "metrics.json").read_text())["test/acc"])
                fit.append(json.loads((directory / "metrics.json").read_text())["train_seconds"])
            except (OSError, KeyError, ValueError) as err:
                raise SystemExit(f"error: {directory}: no test accuracy or fit time to tabulate ({err})") from None
        rows[experiment] = {
            "seeds": list(params["seeds"]),
            "test_acc_min": round(min(accuracy), 4),
            "test_acc_mean": round(statistics.mean(accuracy), 4),
            "test_acc_max": round(max(accuracy), 4),
            "fit_seconds_mean": round(statistics.mean(fit), 1),
        }
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    result = table(Path(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2) + "\n")
    for name, row in result.items():
        print(
            f"{name}: test accuracy {row['test_acc_min']:.4f} / {row['test_acc_mean']:.4f} / {row['test_acc_max']:.4f}"
        )
