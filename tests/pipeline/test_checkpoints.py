"""best.ckpt and last.ckpt of one epoch: the same state written once (cnnlab.checkpointing.Checkpoint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cnnlab.checkpointing import Checkpoint

VAL_LOSS = [3.0, 2.0, 2.5, 1.0]  # epochs 0, 1 and 3 improve on the best; epoch 2 does not


class Scripted(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", VAL_LOSS[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.01)


def loader():
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(32, 4, generator=generator), torch.randint(0, 2, (32,), generator=generator)
    )
    return torch.utils.data.DataLoader(data, batch_size=8)


class Files(pl.Callback):
    """Each finished epoch's (same file?, best epoch, last epoch), seen when the next epoch starts or the fit ends."""

    def __init__(self, dirpath: Path):
        self.dirpath, self.seen = dirpath, []

    def look(self):
        best, last = self.dirpath / "best.ckpt", self.dirpath / "last.ckpt"
        epoch = lambda path: torch.load(path, weights_only=False)["epoch"]  # noqa: E731
        self.seen.append((os.path.samefile(best, last), epoch(best), epoch(last)))

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self.look()

    def on_fit_end(self, trainer, pl_module):
        self.look()


def fit(dirpath: Path, kind=Checkpoint, ckpt_path=None, epochs=len(VAL_LOSS), look=True, plugins=None):  # noqa: B008
    pl.seed_everything(0)
    best = kind(dirpath=dirpath, filename="best", monitor="val/loss", mode="min", save_top_k=1)
    last = kind(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    files = Files(dirpath)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[best, last] + ([files] if look else []),
        num_sanity_val_steps=0,
        plugins=plugins,
    )
    trainer.fit(Scripted(), loader(), loader(), ckpt_path=ckpt_path)
    return best, last, files


def test_last_links_to_best_in_an_improving_epoch_and_is_written_otherwise(tmp_path):
    best, last, files = fit(tmp_path)
    # (same file, best.ckpt's epoch, last.ckpt's epoch) after each epoch
    assert files.seen == [(True, 0, 0), (True, 1, 1), (False, 1, 2), (True, 3, 3)]
    assert last.linked == 3 and best.linked == 0
    assert not list(tmp_path.glob("*.link-*"))  # no temporary left behind


def test_a_linked_last_checkpoint_holds_what_lightning_would_have_written(tmp_path):
    fit(tmp_path / "linked")
    fit(tmp_path / "written", kind=ModelCheckpoint)
    linked = torch.load(tmp_path / "linked" / "last.ckpt", weights_only=False)
    written = torch.load(tmp_path / "written" / "last.ckpt", weights_only=False)
    assert (linked["epoch"], linked["global_step"]) == (written["epoch"], written["global_step"]) == (3, 16)
    assert all(torch.equal(linked["state_dict"][k], written["state_dict"][k]) for k in written["state_dict"])
    assert linked["loops"] == written["loops"]
    assert linked["optimizer_states"][0]["state"][0]["step"] == written["optimizer_states"][0]["state"][0]["step"]
    # the same callback keys as Lightning's ModelCheckpoint (old checkpoints resume, and back)
    assert linked["callbacks"].keys() == written["callbacks"].keys()
    for key, state in written["callbacks"].items():
        assert linked["callbacks"][key]["best_model_score"] == state["best_model_score"]
        assert Path(linked["callbacks"][key]["best_model_path"]).name == Path(state["best_model_path"]).name


def test_resume_from_a_linked_last_checkpoint_continues_from_its_epoch(tmp_path):
    fit(tmp_path, epochs=2)  # epoch 1 improves: last.ckpt is a link to best.ckpt
    assert os.path.samefile(tmp_path / "best.ckpt", tmp_path / "last.ckpt")
    best, last, files = fit(tmp_path, ckpt_path=str(tmp_path / "last.ckpt"))
    assert files.seen == [(True, 1, 1), (False, 1, 2), (True, 3, 3)]  # the first: as the first fit left them
    assert best.best_model_score == pytest.approx(1.0)


def test_without_hard_links_last_is_written_as_before(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    best, last, files = fit(tmp_path)
    assert last.linked == 0
    assert files.seen == [(False, 0, 0), (False, 1, 1), (False, 1, 2), (False, 3, 3)]


def test_a_vanished_best_file_means_last_is_written(tmp_path, monkeypatch):
    real_link = os.link

    def source_gone(source, target):
        Path(source).unlink()  # best.ckpt removed between its save and the link (another process, a full disk)
        return real_link(source, target)

    monkeypatch.setattr(os, "link", source_gone)
    best, last, _ = fit(tmp_path, epochs=1, look=False)
    assert last.linked == 0
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 0
    assert not list(tmp_path.glob("*.link-*"))


def test_a_local_checkpoint_directory_costs_no_object_storage_import(tmp_path):
    """Lightning's "directory not empty" check imports s3fs to ask whether the filesystem is object storage
    (0.2 s of each fit where dvc-s3 is installed); a local directory skips it, a remote one keeps it."""
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.pipeline.test_checkpoints import fit
from pathlib import Path
from cnnlab.checkpointing import AtomicCheckpointIO
fit(Path({str(tmp_path / "ckpts")!r}), epochs=2, look=False, plugins=[AtomicCheckpointIO()])  # as cnnlab-train fits
print("s3fs" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "False"
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_remote_checkpoint_directory_keeps_lightnings_not_empty_check(monkeypatch):
    seen = []
    monkeypatch.setattr(ModelCheckpoint, "_ModelCheckpoint__warn_if_dir_not_empty", lambda self, d: seen.append(d))
    callback = Checkpoint(dirpath="s3://bucket/run/checkpoints", filename="best", monitor="val/loss")
    callback._ModelCheckpoint__warn_if_dir_not_empty("s3://bucket/run/checkpoints")
    callback._ModelCheckpoint__warn_if_dir_not_empty("/local/run/checkpoints")
    assert seen == ["s3://bucket/run/checkpoints"]
