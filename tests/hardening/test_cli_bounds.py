"""Every numeric option of cnnlab's commands is checked against its bound before anything runs: one line, exit 2
(the bounds are declared on the options' schemas with `cnnlab.config.minimum`)."""

from __future__ import annotations

import dataclasses

import pytest

from cnnlab.cli.compare import CompareConfig
from cnnlab.cli.explain import ExplainConfig
from cnnlab.cli.predict import PredictConfig
from cnnlab.config import CnnlabConfig
from tests.conftest import call_in_process

BAD = [
    ("cnnlab-compare", ["top=-3"], "top=-3 is not valid; expected an integer >= 1"),
    ("cnnlab-compare", ["top=0"], "top=0 is not valid; expected an integer >= 1"),
    ("cnnlab-predict", ["model_uri=models:/x/1", "input=.", "top_k=0"], "top_k=0 is not valid"),
    ("cnnlab-predict", ["model_uri=models:/x/1", "input=.", "batch_size=-1"], "batch_size=-1 is not valid"),
    ("cnnlab-explain", ["run=x", "num_images=0"], "num_images=0 is not valid; expected an integer >= 1"),
    ("cnnlab-explain", ["run=x", "cam.class_index=-1"], "cam.class_index=-1 is not valid; expected an integer >= 0"),
    ("cnnlab-explain", ["run=x", "filters.count=-2"], "filters.count=-2 is not valid"),
    ("cnnlab-explain", ["run=x", "activations.max_channels=0"], "activations.max_channels=0 is not valid"),
    ("cnnlab-train", ["data.num_workers=-1"], "data.num_workers=-1 is not valid; expected an integer >= 0"),
    ("cnnlab-train", ["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is not valid"),
]


@pytest.mark.parametrize("command, args, message", BAD, ids=[f"{c} {a[-1]}" for c, a, _ in BAD])
def test_an_out_of_bounds_number_is_one_line_and_exit_2(command, args, message, project, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = [f"tracking_uri={store}"] if command != "cnnlab-train" else [f"logger.tracking_uri={store}"]
    done = call_in_process(command, [*args, *extra, f"hydra.run.dir={tmp_path / 'out'}"], project)
    assert done.returncode == 2, done.stdout[-1000:] + done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [f"error: {message}"] or done.stderr.strip().splitlines()[-1].startswith(
        f"error: {message}"
    )
    assert "Traceback" not in done.stderr and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("schema", [CompareConfig, PredictConfig, ExplainConfig, CnnlabConfig])
def test_every_count_a_command_takes_declares_its_bound(schema):
    """A new int option of a command (a count, a size) comes with its minimum, or this names it."""
    # checked elsewhere: choices (channels), epochs and steps (with their -1), seeds (any integer)
    exempt = {"seed", "split_seed", "channels", "max_steps", "max_epochs", "min_epochs", "unfreeze_at_epoch"}

    def unbounded(cls, prefix=""):
        hints = __import__("typing").get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            hint = hints[spec.name]
            if dataclasses.is_dataclass(hint):
                yield from unbounded(hint, f"{prefix}{spec.name}.")
            elif hint in (int, __import__("typing").Optional[int]) and "minimum" not in spec.metadata:
                if spec.name not in exempt:
                    yield f"{prefix}{spec.name}"

    assert not list(unbounded(schema))
