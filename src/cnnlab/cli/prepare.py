"""cnnlab-prepare: read the raw data once and write the prepared dataset (the DVC `prepare` stage)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cnnlab.cli.app import run_app
from cnnlab.config import register_configs
from cnnlab.paths import config_dir

USAGE = """\
usage: cnnlab-prepare [data=option] [data.key=value ...]

Read the raw data once (embedded, generated, or data.root=<dir> in the dataset's own layout),
validate it, resize to data.image_size, split by data.split_seed, compute the train split's
mean/std, and write the prepared dataset to data.prepared_dir (atomically: a failed run leaves
the previous one intact). data.on_bad_sample=skip leaves bad samples out, listed in skipped.csv.

data.storage=shards keeps the images encoded instead (their original JPEG/PNG bytes, or re-encoded at
data.shards.max_side), data.shards.samples_per_shard to a LitData shard, streamed and decoded at training
time: datasets larger than memory or disk, random resized crops of the original (README "Large datasets").

examples:
  cnnlab-prepare data=digits
  cnnlab-prepare data=shapes data.image_size=64
  cnnlab-prepare data=image_folder data.root=/data/photos data.storage=shards data.image_size=224
  python -m cnnlab.data.shards upload data/prepared/image_folder-224 s3://bucket/photos   # then train with
      # data.storage=shards data.shards.url=s3://bucket/photos (endpoint, keys: AWS_* as for the team server)
"""

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _prepare(cfg: DictConfig) -> None:
    # the work is imported when the command runs: --help stays instant without the readers and scikit-learn
    from cnnlab.cli.app import exit_on_user_error
    from cnnlab.data.prepare import prepare_from_config

    with exit_on_user_error():
        meta = prepare_from_config(cfg.data)
    sizes = ", ".join(f"{k} {v}" for k, v in meta["split_sizes"].items())
    print(
        f"prepared {meta['name']}: {meta['num_samples']} samples ({sizes}), {meta['num_skipped']} skipped -> "
        f"{cfg.data.prepared_dir}"
    )


def main() -> None:
    run_app(_prepare, USAGE)


if __name__ == "__main__":
    main()
