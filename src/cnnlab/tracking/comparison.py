"""Compare the runs of an MLflow experiment: a ranked table of params and metrics, and a chart.

For people who prefer a terminal and a picture to the MLflow UI. Runs are ranked by one metric
(by default the best value of the metric the runs monitored, e.g. best/val/acc); runs without it
are listed after the ranked ones, never hidden.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt

from cnnlab.config import ConfigError
from cnnlab.tracking.store import client, with_retry

DEFAULT_METRIC = "best/val/acc"
LOG_SCALE_SPAN = 10.0  # numeric params whose values span more than this factor get a log axis


@dataclass
class RunRow:
    run_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]

    def metric(self, key: str) -> Optional[float]:
        value = self.metrics.get(key)
        return None if value is None or math.isnan(value) else value


@dataclass
class Comparison:
    experiment: str
    metric: str
    mode: str
    params: list[str]
    metrics: list[str]  # further metric columns
    ranked: list[RunRow]  # best first
    unranked: list[RunRow] = field(default_factory=list)  # runs without the metric
    skipped_sweeps: int = 0


def fetch_runs(
    tracking_uri: str, experiment: str, include_children: bool = True, include_sweeps: bool = False
) -> tuple[list[RunRow], int]:
    """(runs of `experiment`, number of sweep parent runs left out); ConfigError for an unknown experiment."""
    mlflow_client = client(tracking_uri)
    found = with_retry(lambda: mlflow_client.get_experiment_by_name(experiment), what="get experiment")
    if found is None:
        names = sorted(e.name for e in with_retry(mlflow_client.search_experiments, what="search experiments"))
        raise ConfigError(
            f"experiment={experiment!r} is not in the MLflow store {tracking_uri}; experiments there: "
            f"{', '.join(names) or 'none'}"
        )
    runs, token = [], None
    while True:
        page = with_retry(
            lambda: mlflow_client.search_runs([found.experiment_id], max_results=1000, page_token=token),
            what="search runs",
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    rows, sweeps = [], 0
    for run in runs:
        tags = run.data.tags
        if tags.get("cnnlab.role") == "sweep" and not include_sweeps:
            sweeps += 1
            continue
        if "mlflow.parentRunId" in tags and not include_children:
            continue
        rows.append(
            RunRow(
                run.info.run_id, run.info.run_name or "", run.info.status, dict(run.data.params), dict(run.data.metrics)
            )
        )
    return rows, sweeps


def _most_common(values: Sequence[str]) -> Optional[str]:
    return Counter(values).most_common(1)[0][0] if values else None


def default_metric(runs: Sequence[RunRow]) -> tuple[str, str]:
    """(metric, mode) the runs were selected by: best/<task.monitor> and task.mode from their params."""
    monitor = _most_common([r.params["task.monitor"] for r in runs if "task.monitor" in r.params])
    mode = _most_common([r.params["task.mode"] for r in runs if "task.mode" in r.params])
    return (f"best/{monitor}" if monitor else DEFAULT_METRIC), (mode if mode in ("min", "max") else "max")


def compare(
    runs: Sequence[RunRow],
    experiment: str,
    metric: Optional[str] = None,
    mode: Optional[str] = None,
    params: Sequence[str] = (),
    metrics: Sequence[str] = (),
    top: Optional[int] = None,
    skipped_sweeps: int = 0,
) -> Comparison:
    """Rank `runs` by `metric` (best first); None metric/mode: what the runs monitored."""
    if not runs:
        raise ConfigError(f"experiment={experiment!r} has no runs to compare")
    auto_metric, auto_mode = default_metric(runs)
    metric = metric or auto_metric
    mode = mode or (auto_mode if metric == auto_metric else "max")
    if mode not in ("min", "max"):
        raise ConfigError(f"mode={mode!r} is not valid; expected one of: min, max")
    scored = [r for r in runs if r.metric(metric) is not None]
    if not scored:
        available = sorted({key for r in runs for key in r.metrics})
        raise ConfigError(
            f"metric={metric!r} is logged by none of the {len(runs)} runs of {experiment!r}; "
            f"metrics there: {', '.join(available[:30]) or 'none'}"
        )
    ranked = sorted(scored, key=lambda r: r.metric(metric), reverse=mode == "max")
    unranked = [r for r in runs if r.metric(metric) is None]
    extra = [
        m
        for m in dict.fromkeys([*metrics, _test_counterpart(metric)])
        if m and m != metric and any(r.metric(m) is not None for r in runs)
    ]
    if top is not None and top > 0:
        ranked = ranked[:top]
        unranked = unranked[: max(0, top - len(ranked))]
    return Comparison(experiment, metric, mode, list(params), extra, ranked, unranked, skipped_sweeps)


def _test_counterpart(metric: str) -> Optional[str]:
    """best/val/acc -> test/acc: the held-out score of a validation-ranked metric, if evaluated."""
    name = metric.removeprefix("best/")
    return f"test/{name[4:]}" if name.startswith("val/") else None


def _format(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(comparison: Comparison) -> str:
    """The printed table: rank, run, params, the ranking metric, other metrics, status."""
    header = ["rank", "run", "run_id", *comparison.params, comparison.metric, *comparison.metrics, "status"]
    lines = []
    for rank, run in [(str(i), r) for i, r in enumerate(comparison.ranked, 1)] + [
        ("-", r) for r in comparison.unranked
    ]:
        lines.append(
            [
                rank,
                run.name,
                run.run_id[:8],
                *(run.params.get(p, "-") for p in comparison.params),
                _format(run.metric(comparison.metric)),
                *(_format(run.metric(m)) for m in comparison.metrics),
                run.status,
            ]
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    order = "highest" if comparison.mode == "max" else "lowest"
    title = (
        f"experiment {comparison.experiment}: {len(comparison.ranked)} runs ranked by {comparison.metric} "
        f"({order} first)"
    )
    notes = []
    if comparison.unranked:
        notes.append(f"{len(comparison.unranked)} without {comparison.metric} listed last")
    if comparison.skipped_sweeps:
        notes.append(f"{comparison.skipped_sweeps} sweep parent runs left out (include_sweeps=true shows them)")
    if notes:
        title += "; " + "; ".join(notes)
    return "\n".join([title, render(header), render(["-" * w for w in widths]), *map(render, lines)])


def _numeric(values: Sequence[str]) -> Optional[list[float]]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def plot_metric_against_param(comparison: Comparison, param: str, output: Path) -> Path:
    """A PNG of the ranking metric against `param` (log x axis when its values span more than 10x)."""
    matplotlib.use("Agg")  # pyplot picks its backend at the first figure: a headless one
    runs = [r for r in comparison.ranked if param in r.params]
    if not runs:
        available = sorted({key for r in comparison.ranked for key in r.params})
        raise ConfigError(
            f"param={param!r} is set by none of the ranked runs; params there include: "
            f"{', '.join(available[:40]) or 'none'}"
        )
    values = [r.params[param] for r in runs]
    scores = [r.metric(comparison.metric) for r in runs]
    numbers = _numeric(values)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    if numbers is not None:
        axes.scatter(numbers, scores, color="tab:blue", zorder=3)
        positive = [n for n in numbers if n > 0]
        if len(positive) == len(numbers) and max(positive) / min(positive) > LOG_SCALE_SPAN:
            axes.set_xscale("log")
        best_x = numbers[0]
    else:
        categories = sorted(set(values))
        positions = [categories.index(v) for v in values]
        axes.scatter(positions, scores, color="tab:blue", zorder=3)
        axes.set_xticks(
            range(len(categories)),
            categories,
            rotation=30 if len(categories) > 4 else 0,
            ha="right" if len(categories) > 4 else "center",
        )
        best_x = positions[0]
    xs = numbers if numbers is not None else positions
    if len(runs) <= 15:  # names beside the points while they stay readable
        for x, y, run in zip(xs, scores, runs):
            axes.annotate(
                run.name or run.run_id[:8], (x, y), xytext=(4, 4), textcoords="offset points", fontsize="x-small"
            )
    axes.scatter(
        [best_x],
        [scores[0]],
        s=160,
        facecolors="none",
        edgecolors="tab:red",
        linewidths=2,
        zorder=4,
        label=f"best: {runs[0].name or runs[0].run_id[:8]} ({scores[0]:.4f})",
    )
    axes.set_xlabel(param)
    axes.set_ylabel(comparison.metric)
    axes.set_title(f"{comparison.experiment}: {comparison.metric} against {param} ({len(runs)} runs)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output
