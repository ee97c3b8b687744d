"""cnnlab-evaluate: score a training's checkpoint on the test split (also the DVC `evaluate` stage)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cnnlab.cli.app import run_app
from cnnlab.config import register_configs
from cnnlab.paths import config_dir

USAGE = """\
usage: cnnlab-evaluate [evaluate.train_dir=latest|DIR|RUN_ID] [evaluate.checkpoint=best|last|PATH]

Load a checkpoint written by cnnlab-train (default: the latest training under outputs/), score the
test split of the data it was trained on, write metrics.json and plots into the training's own
directory (<train_dir>/evaluate, or evaluate.output_dir) and log both into the training's MLflow run.

examples:
  cnnlab-train && cnnlab-evaluate                                   # the run just trained
  cnnlab-evaluate evaluate.train_dir=0f3c9a...                      # an MLflow run id (runs:/<id> too)
  cnnlab-evaluate evaluate.train_dir=outputs/2026-01-31/12-00-00 evaluate.checkpoint=last
  cnnlab-evaluate evaluate.train_dir=artifacts/train evaluate.output_dir=artifacts/evaluate   # the pipeline's
"""

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _evaluate(cfg: DictConfig) -> None:
    # the work is imported when the command runs: --help stays instant without torch, Lightning and MLflow
    from cnnlab.cli.app import exit_on_user_error
    from cnnlab.evaluation import evaluate

    with exit_on_user_error():
        metrics = evaluate(cfg)
    print("\n".join(f"{key}: {value:.4f}" for key, value in metrics.items() if "/acc_class/" not in key))


def main() -> None:
    run_app(_evaluate, USAGE)


if __name__ == "__main__":
    main()
