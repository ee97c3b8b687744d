"""A cnnlab-train output directory read back: its config, its run record, its task from a checkpoint, its data.

Evaluation, cnnlab-explain and cnnlab-sync all restore a training this one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.config import check_targets
from cnnlab.data.datamodule import datamodule_from_config, network_normalization
from cnnlab.models.weights import load_data_only
from cnnlab.paths import from_root
from cnnlab.tasks import task_class
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
        """The training in `directory`; MissingTrainingFile when it holds no config.yaml.

        Its config is data (a shared store's run may hold anything): its callbacks, which nothing after training
        runs, are left out, and every other `_target_` must be one of conf/'s (ConfigError naming the file).
        """
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise MissingTrainingFile(config_file)
        config = OmegaConf.load(config_file)
        with open_dict(config):
            config.pop("callbacks", None)
        check_targets(config, str(config_file))
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
        load_data_only(path, f"checkpoint {path}")  # a crafted file: one line here, not a traceback in Lightning
        # the task's class by name from cnnlab's registry, and what it builds from the checked config: the
        # checkpoint's own copies of the model and optimizer settings are data too, and are not used
        built = {key: OmegaConf.to_container(self.config[key], resolve=True) for key in ("model", "optimizer")}
        scheduler = OmegaConf.to_container(self.config.scheduler, resolve=True)
        cls = task_class(str(self.config.task.name))
        return cls.load_from_checkpoint(path, map_location="cpu", scheduler=scheduler, **built)

    def datamodule(self, task):
        """The DataModule of the prepared data it trained on, normalised the way `task`'s network expects."""
        return datamodule_from_config(self.config, type(task).labels, normalization=network_normalization(task))
