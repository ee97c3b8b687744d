"""unsent_metrics.json, the metric points a killed training had not sent, waits beside the checkpoints: it is
written whole at each checkpoint, read back on resume as data (only well-formed points are sent), and removed
when the fit ends."""

from __future__ import annotations

import json
from types import SimpleNamespace

from cnnlab.tracking.lightning_logger import UnsentMetrics


class Logger:
    def __init__(self, unsent=()):
        self._unsent, self.sent = list(unsent), []

    def unsent(self):
        return self._unsent

    def send_missing(self, points):
        self.sent += points
        return len(points)


TRAINER = SimpleNamespace(is_global_zero=True)


def test_points_are_saved_beside_the_checkpoint_and_removed_when_the_fit_ends(tmp_path):
    callback = UnsentMetrics(Logger([["val/acc", 0.5, 1700000000000, 8]]), tmp_path)
    checkpoint = {}
    callback.on_save_checkpoint(TRAINER, None, checkpoint)
    assert checkpoint == {}  # the checkpoint stays the same bytes for the same training
    assert json.loads((tmp_path / "unsent_metrics.json").read_text()) == [["val/acc", 0.5, 1700000000000, 8]]
    assert not list(tmp_path.glob(".*tmp"))
    callback.on_fit_end(TRAINER, None)
    assert not (tmp_path / "unsent_metrics.json").exists()


def test_a_resume_sends_only_well_formed_points_of_the_file_and_of_older_checkpoints(tmp_path, caplog):
    (tmp_path / "unsent_metrics.json").write_text(
        json.dumps([["val/acc", 0.5, 1, 2], ["bad key!", 1, 1, 1], ["x", "1", 1, 1], ["y", True, 1, 1], "z"])
    )
    logger = Logger()
    UnsentMetrics(logger, tmp_path).on_load_checkpoint(
        TRAINER,
        None,
        {UnsentMetrics.KEY: [["train/loss", 0.1, 1, 1]]},  # where cnnlab kept them before
    )
    assert logger.sent == [["train/loss", 0.1, 1, 1], ["val/acc", 0.5, 1, 2]]
    assert "4 entries are not metric points and were left out" in caplog.text


def test_an_unreadable_file_is_a_warning_not_a_failed_resume(tmp_path, caplog):
    (tmp_path / "unsent_metrics.json").write_text("{not json")
    logger = Logger()
    UnsentMetrics(logger, tmp_path).on_load_checkpoint(TRAINER, None, {})
    assert logger.sent == [] and "is unreadable" in caplog.text
