"""The Fashion-MNIST table: per recipe of a pipeline's params.yaml, test accuracy min / mean / max over its seeds
and the mean fit time, from each seed's evaluate/metrics.json and metrics.json. A recipe with a test-accuracy
target (params.yaml `targets`, as pipelines/speedrun/ has) also gets its target, how many seeds reached it and
the fit time min / max: the speedrun's time to target, a miss counted as a miss. A recipe with a time budget
(`budgets`, seconds of fit) gets its budget and how many seeds trained within it: the best accuracy in 10 minutes.

    python pipelines/fashion/table.py artifacts/fashion artifacts/fashion_table.json [pipelines/<name>/params.yaml]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import yaml

PARAMS = Path(__file__).with_name("params.yaml")


def table(runs: Path, params_file: Path | None = None) -> dict:
    params = yaml.safe_load((params_file or PARAMS).read_text())
    targets = params.get("targets") or {}
    budgets = params.get("budgets") or {}
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
        if experiment in targets:
            rows[experiment].update(
                target=targets[experiment], seeds_reaching_target=sum(a >= targets[experiment] for a in accuracy)
            )
        if experiment in budgets:
            rows[experiment].update(
                budget_seconds=budgets[experiment], seeds_within_budget=sum(s <= budgets[experiment] for s in fit)
            )
        if experiment in targets or experiment in budgets:
            rows[experiment].update(fit_seconds_min=round(min(fit), 1), fit_seconds_max=round(max(fit), 1))
    return rows


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    result = table(Path(sys.argv[1]), Path(sys.argv[3]) if len(sys.argv) == 4 else None)
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2) + "\n")
    for name, row in result.items():
        reached = (
            f", {row['seeds_reaching_target']}/{len(row['seeds'])} seeds >= {row['target']}" if "target" in row else ""
        )
        if "budget_seconds" in row:
            reached += f", {row['seeds_within_budget']}/{len(row['seeds'])} seeds within {row['budget_seconds']} s"
        print(
            f"{name}: test accuracy {row['test_acc_min']:.4f} / {row['test_acc_mean']:.4f} / {row['test_acc_max']:.4f}"
            f"{reached}, fit {row['fit_seconds_mean']:.1f} s"
        )
