"""A checkpoint or weights file that is a pickle naming code is refused by cnnlab's own check: one line
that quotes no advice to load it with weights_only=False, no traceback, nothing run."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest

from tests.conftest import QUICK, call_in_process, quick_run


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return quick_run(tmp_path_factory.mktemp("payload"))


def _one_clean_line(done, marker):
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "refused" in errors[0] and "weights_only=False" not in done.stderr and errors[0].endswith("pass that file")
    assert not marker.exists()
    return errors[0]


@pytest.mark.parametrize("command", ["cnnlab-evaluate", "cnnlab-explain"])
def test_a_payload_checkpoint_is_refused_by_cnnlab(trained, tmp_path, command):
    root, out = trained
    crafted, marker = tmp_path / "train", tmp_path / "pwned"
    shutil.copytree(out, crafted)
    with open(crafted / "checkpoints" / "best.ckpt", "wb") as handle:
        pickle.dump({"state_dict": Payload(marker)}, handle)
    args = (
        [f"evaluate.train_dir={crafted}", f"evaluate.output_dir={tmp_path / 'evaluate'}"]
        if command == "cnnlab-evaluate"
        else [f"run={crafted}", f"output_dir={tmp_path / 'explain'}"]
    )
    line = _one_clean_line(call_in_process(command, args, root), marker)
    assert "best.ckpt" in line


def test_payload_weights_are_refused_in_one_whole_sentence(trained, tmp_path):
    root, _ = trained
    weights, marker = tmp_path / "weights.pth", tmp_path / "pwned"
    with open(weights, "wb") as handle:
        pickle.dump({"conv.weight": Payload(marker)}, handle)
    done = call_in_process(
        "cnnlab-train", [*QUICK, f"model.weights={weights}", f"hydra.run.dir={tmp_path / 'run'}"], root
    )
    _one_clean_line(done, marker)
