"""cnnlab-compare: the runs of an experiment as a ranked table, and a chart of a metric against a param."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from cnnlab.cli.app import run_app
from cnnlab.config import check_bounds, minimum, register_configs
from cnnlab.paths import config_dir

USAGE = """\
usage: cnnlab-compare [experiment=NAME] [metric=KEY] [mode=max|min] [param=KEY] [params=[K1,K2]] [top=N] [output=PNG]

Print the runs of an MLflow experiment best first, key params next to key metrics, and write a
PNG chart of the ranking metric against one param (log axis when its values span more than 10x).
By default runs are ranked by what they monitored (best/val/acc for classification); sweep parent
runs are left out, their child runs are in.

examples:
  cnnlab-compare
  cnnlab-compare experiment=cnnlab-segmentation param=model.name
  cnnlab-compare metric=test/acc params=[model.name,optimizer.lr,scheduler.name] top=10 output=lr.png
"""


@dataclass
class CompareConfig:
    experiment: str = "cnnlab-classification"
    metric: Optional[str] = None  # None: best/<task.monitor> of the runs (best/val/acc for classification)
    mode: Optional[str] = None  # max or min; None: the runs' task.mode
    param: str = "optimizer.lr"  # x axis of the chart
    params: List[str] = field(default_factory=lambda: ["model.name", "optimizer.lr", "data.batch_size", "augment.name"])
    metrics: List[str] = field(default_factory=list)  # more metric columns (test/<metric> is added when logged)
    top: Optional[int] = minimum(20, 1)  # rows printed; None: all
    output: Optional[str] = "compare.png"  # the chart; None: no chart
    include_children: bool = True  # runs inside sweeps
    include_sweeps: bool = False  # the sweep parent runs themselves (tag cnnlab.role=sweep)
    tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else the project's SQLite file


def store_configs() -> None:
    """conf/compare.yaml and its schema, in Hydra's ConfigStore.

    The app does not search conf/ itself: there `experiment` is a config group (named recipes), so
    `experiment=<name>` would look for conf/experiment/<name>.yaml instead of setting the value.
    """
    store = ConfigStore.instance()
    store.store(name="compare_schema", node=CompareConfig)
    store.store(name="compare", node=OmegaConf.load(config_dir() / "compare.yaml"))


register_configs()
store_configs()


@hydra.main(version_base="1.3", config_path=None, config_name="compare")
def _compare(cfg: DictConfig) -> None:
    # the work is imported when the command runs: --help stays instant without MLflow and matplotlib
    from cnnlab.cli.app import exit_on_user_error

    with exit_on_user_error():
        check_bounds(cfg, CompareConfig)
        # after the checks: a bad value is one line in a second
        from cnnlab.tracking.comparison import compare, fetch_runs, format_table, plot_metric_against_param
        from cnnlab.tracking.store import resolve_tracking_uri

        uri = resolve_tracking_uri(cfg.tracking_uri)
        runs, sweeps = fetch_runs(uri, cfg.experiment, cfg.include_children, cfg.include_sweeps)
        comparison = compare(
            runs, cfg.experiment, cfg.metric, cfg.mode, list(cfg.params), list(cfg.metrics), cfg.top, sweeps
        )
        print(format_table(comparison))
        if cfg.output:
            print(f"chart: {plot_metric_against_param(comparison, cfg.param, cfg.output)}")


def main() -> None:
    run_app(_compare, USAGE)


if __name__ == "__main__":
    main()
