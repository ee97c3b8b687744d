"""cnnlab-train: train one configuration (or sweep many with -m), logging each job to MLflow."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cnnlab.cli.app import run_app
from cnnlab.config import register_configs, validate_config
from cnnlab.paths import config_dir
from cnnlab.resume import resume_arguments

USAGE = """\
usage: cnnlab-train [group=option ...] [key=value ...] [-m]

Train a CNN on a prepared dataset (prepared on first use) and log the run to MLflow: flattened
config as params, per-step and per-epoch metrics, the resolved config, the best checkpoint.

examples:
  cnnlab-train model=lenet5 data=digits
  cnnlab-train model=simple_cnn data=digits data.image_size=28 trainer.max_epochs=5
  cnnlab-train -m model=lenet5,simple_cnn optimizer.lr=0.01,0.001   # one parent run, a child per job
  cnnlab-train debug=fast logger=none                                # a quick smoke run
  cnnlab-train -m hydra/launcher=slurm hydra.launcher.partition=gpu optimizer.lr=0.01,0.001   # SLURM job array
  srun cnnlab-train trainer=ddp trainer.devices=2 hydra.run.dir=outputs/slurm-$SLURM_JOB_ID   # in an sbatch script
  cnnlab-train model=resnet18 model.weights=resnet18.pth finetune.freeze=backbone   # transfer learning:
      # weights from a .pth/.pt, a .ckpt or run directory, runs:/<id>/model or models:/<name>@<alias>;
      # finetune.freeze=none|backbone|stageK, finetune.unfreeze_at_epoch=N, finetune.backbone_lr(_mult)=
  cnnlab-train data=image_folder data.root=/data/photos data.storage=shards data.image_size=224
      # shards: decoded on the fly; data.shards.random_resized_crop=[0.08,1.0] crops the original
  cnnlab-train data.storage=shards data.shards.url=s3://bucket/photos data.shards.cache_limit=50GB
      # streamed from S3; +callbacks.last_checkpoint.every_n_train_steps=500: resume=true mid-epoch
"""

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _train(cfg: DictConfig) -> float:
    from cnnlab.cli.app import exit_on_user_error

    with exit_on_user_error():
        validate_config(cfg)  # a bad value is one line in a second, before the heavy imports below
        # heavy imports (torch, Lightning, MLflow) stay out of start-up so --help is instant
        from cnnlab.training import train

        return train(cfg)


def main() -> None:
    run_app(_train, USAGE, arguments=resume_arguments)


if __name__ == "__main__":
    main()
