"""cnnlab-summary: print a Keras-style table of a model's layers, output shapes, parameters and MACs."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cnnlab.cli.app import run_app
from cnnlab.config import register_configs
from cnnlab.paths import config_dir

USAGE = """\
usage: cnnlab-summary [model=NAME] [data.image_size=N] [data.channels=C] [num_classes=K]

Print every layer of a model with its output shape, parameters and multiply-accumulates (MACs,
per image), then the totals. The model is built on PyTorch's meta device: no weights are allocated,
so even VGG-19 is summarised in about a second.

examples:
  cnnlab-summary                                    # lenet5 on 32x32x1 digits, 10 classes
  cnnlab-summary model=vgg16 data.image_size=224 data.channels=3 num_classes=1000
  cnnlab-summary model=resnet18 model.small_input=true data.image_size=32 data.channels=3
"""

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="summary")
def _summary(cfg: DictConfig) -> None:
    # the work is imported when the command runs: --help stays instant without torch
    from cnnlab.cli.app import exit_on_user_error
    from cnnlab.models.summary import summary_text

    with exit_on_user_error():
        print(summary_text(cfg))


def main() -> None:
    run_app(_summary, USAGE)


if __name__ == "__main__":
    main()
