"""Checkpoints that never write the same state twice: best.ckpt and last.ckpt of one epoch.

conf/callbacks has two checkpoint callbacks: `best.ckpt` (the lowest val/loss) and `last.ckpt`
(every epoch, what `resume=true` continues from). In an epoch that improves on the best, Lightning's
`ModelCheckpoint` serialised the same trainer state twice, one after the other: twice the time and
the disk writes (about 5 ms for LeNet-5, seconds for a full-width VGG-16). `Checkpoint` is Lightning's
`ModelCheckpoint`, same arguments, except that one without a monitor (last.ckpt) becomes a hard link
to the file another `Checkpoint` wrote in the same epoch-end pass.

Same bytes: both save at the end of the training epoch, back to back, after everything that changes
the state in that epoch (the module's epoch hook, early stopping), and a monitor-less callback's own
state is the same every epoch. A hard link, not a symlink: `last.ckpt` stays a regular file, and the
next save of either file writes a new one and renames it into place, leaving the other as it was.

That rename is `AtomicCheckpointIO`'s (the Trainer's checkpoint IO plugin): Lightning's own writer goes
through fsspec, which writes to a temporary file in $TMPDIR and, on another filesystem (a tmpfs output
directory), copies it over the final name in place: a full disk left a truncated best.ckpt, and a
hard-linked last.ckpt was overwritten with it. Here every checkpoint is written beside its final name and
renamed, so a reader sees the old file or the new one, and a full disk is one line (`CheckpointSpaceError`).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path
from typing import Optional
from weakref import proxy

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

RELATIVE = "."  # the saved dirpath of a state whose paths are relative to the directory it is loaded from
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class CheckpointSpaceError(OSError):
    """No room for a checkpoint: the message names the directory and the space it needs."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, writing `.<name>.tmp-<pid>` beside the checkpoint and renaming it."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Optional[object] = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote stores: Lightning's own way
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as handle:
                handle.write(buffer.getbuffer())
                handle.flush()
                os.fsync(handle.fileno())  # on disk before the rename makes it the checkpoint
            os.replace(temporary, path)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            free = shutil.disk_usage(path.parent).free
            raise CheckpointSpaceError(
                f"no space left in {path.parent} for {path.name}: it needs {buffer.tell() / 2**20:.1f} MiB, "
                f"{free / 2**20:.1f} MiB are free; the last complete checkpoint there is kept. Free some space "
                f"and continue with cnnlab-train resume=true hydra.run.dir={path.parent.parent}",
            ) from None


class Checkpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint`; with `monitor` null, a link to the same state when another
    `Checkpoint` has just written it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._in_train_epoch_end = False
        self.saved_in: Optional[tuple[int, int]] = None  # (epoch, global step) of a save at train epoch end
        self.linked = 0  # saves made as links (for tests and benchmarks)

    @property
    def state_key(self) -> str:
        # Lightning's ModelCheckpoint key: checkpoints written before this class resume with it, and back
        return "ModelCheckpoint" + super().state_key[len(type(self).__qualname__) :]

    def state_dict(self) -> dict:
        """Lightning's, with the file paths relative to `dirpath` (kept as "."): the checkpoint's bytes do
        not depend on where the clone is, and a checkpoint moved with its directory still resumes."""
        state = super().state_dict()
        base = state.get("dirpath")
        if not base or "://" in str(base):
            return state
        relative = lambda path: os.path.relpath(path, base) if path and os.path.isabs(path) else path  # noqa: E731
        return {
            **state,
            "dirpath": RELATIVE,
            **{key: relative(state[key]) for key in PATH_KEYS if key in state},
            "best_k_models": {relative(path): score for path, score in state.get("best_k_models", {}).items()},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("dirpath") == RELATIVE and self.dirpath:
            absolute = lambda path: os.path.join(self.dirpath, path) if path else path  # noqa: E731
            best_k = state_dict.get("best_k_models", {})
            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                **{key: absolute(state_dict[key]) for key in PATH_KEYS if key in state_dict},
                "best_k_models": {absolute(path): score for path, score in best_k.items()},
            }
        super().load_state_dict(state_dict)

    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath) -> None:
        """Lightning's "directory not empty" warning, for remote stores only. Its check asks whether the
        filesystem is object storage by importing s3fs: 0.2 s of every fit where dvc-s3 is installed, 3% of
        the default recipe's. A local directory needs no such check, and cnnlab has already refused an
        occupied output directory (or is resuming from the files in it)."""
        if "://" in str(dirpath):
            super()._ModelCheckpoint__warn_if_dir_not_empty(dirpath)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._in_train_epoch_end = True
        try:
            super().on_train_epoch_end(trainer, pl_module)
        finally:
            self._in_train_epoch_end = False

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        same = self._same_state_file(trainer)
        if same is not None and _link(same, filepath, trainer):
            self.linked += 1
            self._last_global_step_saved = trainer.global_step
            self._last_checkpoint_saved = filepath
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))
        else:
            super()._save_checkpoint(trainer, filepath)
        self.saved_in = self._pass(trainer)

    def _pass(self, trainer: pl.Trainer) -> Optional[tuple[int, int]]:
        return (trainer.current_epoch, trainer.global_step) if self._in_train_epoch_end else None

    def _same_state_file(self, trainer: pl.Trainer) -> Optional[str]:
        """The file another Checkpoint wrote of the full state in this epoch-end pass, if any.

        Decided from callback state that every DDP rank shares (not from the filesystem, which
        another node may not see), so all ranks take the same branch; `_link` checks the file."""
        here = self._pass(trainer)
        if self.monitor is not None or self.save_weights_only or here is None:
            return None
        for other in trainer.checkpoint_callbacks:
            if (
                isinstance(other, Checkpoint)
                and other is not self
                and other.saved_in == here
                and not other.save_weights_only
                and other._last_checkpoint_saved
                and "://" not in str(other._last_checkpoint_saved)
            ):
                return other._last_checkpoint_saved
        return None


def _link(source: str, target: str, trainer: pl.Trainer) -> bool:
    """Make `target` a hard link to `source` (rank zero; every rank learns the outcome). False where
    the filesystem has no hard links or `source` is gone: the caller then writes the checkpoint itself."""
    linked = True
    if trainer.is_global_zero:
        temporary = f"{target}.link-{os.getpid()}"
        try:
            os.link(source, temporary)
            os.replace(temporary, target)  # atomic: a reader sees the old last.ckpt or the new one
        except OSError:
            linked = False
        finally:  # rename(2) keeps both names when target is already a link to source
            Path(temporary).unlink(missing_ok=True)
    linked = trainer.strategy.broadcast(linked)
    trainer.strategy.barrier("Checkpoint._link")
    return linked
