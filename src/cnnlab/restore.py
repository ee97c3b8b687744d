"""A cnnlab-train output directory read back: its config, its run record, its task from a checkpoint, its data.

Evaluation, cnnlab-explain and cnnlab-sync all restore a training this one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from cnnlab.data.datamodule import datamodule_from_config, network_normalization
from cnnlab.paths import from_root
from cnnlab.tracking.run import read_run_record

CONFIG_FILE = "config.yaml"  # the resolved config cnnlab-train writes into its output directory


class MissingTrainingFile(FileNotFoundError):
    """A training output directory without the config or checkpoint asked of it; `path` is where it was looked for."""

    def __init__(self, path: Path):
        super().__init__(f"{path} not found")
        self.path = path


def checkpoint_path(directory: Path, checkpoint: str) -> Path:
    """best / last -> <directory>/checkpoints/<name>.ckpt; anything else is a path."""
    return directory / "checkpoints" / f"{checkpoint}.ckpt" if checkpoint in ("best", "last") else Path(checkpoint)


@dataclass
class TrainingDirectory:
    """What cnnlab-train left in one output directory: the resolved config and run.json ({} without one)."""

    directory: Path
    config: DictConfig
    record: dict

    @classmethod
    def open(cls, directory: Path) -> "TrainingDirectory":
        """The training in `directory`; MissingTrainingFile when it holds no config.yaml."""
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise MissingTrainingFile(config_file)
        config = OmegaConf.load(config_file)
        for key in ("data.prepared_dir", "data.root"):  # kept relative to the project root (cnnlab.paths.portable)
            if OmegaConf.select(config, key):
                OmegaConf.update(config, key, str(from_root(OmegaConf.select(config, key))))
        return cls(directory, config, read_run_record(directory))

    def load_task(self, checkpoint: str | Path = "best"):
        """The task (the class its config names) from `checkpoint`: best, last, or a path; on the CPU.

        MissingTrainingFile when the checkpoint is not there.
        """
        path = checkpoint_path(self.directory, str(checkpoint))
        if not path.is_file():
            raise MissingTrainingFile(path)
        return get_class(self.config.task.module._target_).load_from_checkpoint(path, map_location="cpu")

    def datamodule(self, task):
        """The DataModule of the prepared data it trained on, normalised the way `task`'s network expects."""
        return datamodule_from_config(self.config, type(task).labels, normalization=network_normalization(task))
