"""Bad config values fail before any MLflow run opens, naming the key and what was expected (exit 2)."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from cnnlab.config import ConfigError, validate_config
from cnnlab.data.prepare import prepare_from_config
from tests.conftest import BIN, call_in_process, cli_env, copy_project

BAD = [
    ("data.batch_size=0", r"data.batch_size=0 is not valid; expected an integer >= 1"),
    ("data.batch_size=-1", r"data.batch_size=-1 is not valid; expected an integer >= 1"),
    ("optimizer.lr=-1", r"optimizer.lr=-1(\.0)? is not valid; expected a learning rate > 0"),
    ("data.image_size=0", r"data.image_size=0 is not valid; expected an integer >= 1"),
    ("data.val_fraction=1.5", r"data.val_fraction=1.5 is not valid; expected a fraction in \[0, 1\)"),
    ("data.on_bad_sample=ignore", r"data.on_bad_sample='ignore' is not valid; expected one of: error, skip"),
    (
        "+trainer.max_epoch=3",
        r"trainer.max_epoch is not a Trainer setting cnnlab knows; did you mean trainer.max_epochs\?",
    ),
    ("trainer.max_epochs=0", r"trainer.max_epochs=0 is not valid; expected at least 1"),
    ("data.channels=2", r"data.channels=2 is not valid; expected one of: 1, 3"),
    ("data.val_fraction=0.5", r"leave no training data"),  # with the default test_fraction 0.5 below
    # appended keys (Hydra's + passes a structured config's struct flag): refused with a did-you-mean
    ("+bogus_key=1", r"^bogus_key is not a setting cnnlab knows; expected one of: task, model, data"),
    ("+data.batchsize=3", r"^data.batchsize is not a setting cnnlab knows; did you mean data.batch_size\?$"),
    (
        "+optimizer.momentum=0.9",
        r"^optimizer.momentum is not an argument of torch.optim.AdamW; expected one of: params, lr, betas",
    ),
    ("+data.source.num_sample=3", r"^data.source.num_sample is not an argument of .*ShapesSource; did you mean "),
]


@pytest.mark.parametrize("override, message", BAD, ids=[o for o, _ in BAD])
def test_bad_value_is_named_before_anything_runs(compose_config, override, message):
    extra = ["data.test_fraction=0.5"] if override == "data.val_fraction=0.5" else []
    extra += ["data=shapes"] if override.startswith("+data.source") else []
    cfg = compose_config(override, *extra)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


@pytest.mark.parametrize("override", ["data.image_size=-5", "data.val_fraction=1.5", "data.on_bad_sample=ignore"])
def test_prepare_checks_the_data_keys_first(compose_config, override, tmp_path):
    cfg = compose_config(override, f"paths.data_dir={tmp_path}")
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        prepare_from_config(cfg.data)
    assert not (tmp_path / "prepared").exists()


def test_the_command_exits_2_with_one_line_and_opens_no_run(tmp_path):
    root = copy_project(tmp_path / "project")
    done = subprocess.run(
        [str(BIN / "cnnlab-train"), "+trainer.max_epoch=3", "trainer.max_epochs=0"],
        cwd=root,
        env=cli_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: trainer.max_epoch is not a Trainer setting" in done.stderr and "Traceback" not in done.stderr
    if (root / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


LEGITIMATE_APPENDS = [
    ("optimizer=sgd", "+optimizer.dampening=0.1"),  # an argument SGD takes
    ("+callbacks.extra._target_=pytorch_lightning.callbacks.Timer",),  # a callback of one's own
    ("+logger.tags.team=vision",),  # a run tag
    ("optimizer=sgd", "optimizer.momentum=0.5"),
]


@pytest.mark.parametrize("overrides", LEGITIMATE_APPENDS, ids=[o[-1] for o in LEGITIMATE_APPENDS])
def test_the_keys_users_are_told_to_add_still_pass(compose_config, overrides):
    validate_config(compose_config(*overrides))


@pytest.mark.parametrize("override", ["+bogus_key=1", "+data.batchsize=3", "+optimizer.momentum=0.9"])
def test_an_unknown_key_stops_the_command_before_data_or_a_run(override, tmp_path, project):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = call_in_process(
        "cnnlab-train",
        [
            override,
            "debug=fast",
            f"paths.data_dir={tmp_path / 'data'}",
            f"logger.tracking_uri={store}",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        project,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    key = override.lstrip("+").split("=")[0]
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {key} is not ")
    assert "Traceback" not in done.stderr and not (tmp_path / "data").exists()
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(store).search_runs(
        [e.experiment_id for e in MlflowClient(store).search_experiments()]
    )
