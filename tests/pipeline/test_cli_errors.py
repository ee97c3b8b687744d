"""Bad configurations fail before training, with the key and the valid choices, leaving no open run.

Errors Hydra reports while composing are checked through a real process (exit status and stderr of
the console script, cheap: no torch import); the ones found after the heavy imports in this process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import QUICK, cli_env


def _runs(uri: str):
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10000)


def test_help_lists_groups_and_is_fast(run_cli):
    started = time.perf_counter()
    done = run_cli("cnnlab-train", "--help")
    elapsed = time.perf_counter() - started
    assert "usage: cnnlab-train" in done.stdout
    assert "model: " in done.stdout and "lenet5" in done.stdout and "data: " in done.stdout
    assert "hydra/launcher: joblib, slurm" in done.stdout  # installed Hydra plugins too, not conf/ alone
    assert elapsed < 5  # generous for a loaded CI box; benchmarks/pipeline.py measures the real figure
    for command in ("cnnlab-prepare", "cnnlab-evaluate"):
        assert f"usage: {command}" in run_cli(command, "--help").stdout


def _one_error_line(done) -> str:
    """A bad config's answer: exit 2 and one `error:` line on stderr, like cnnlab's own ConfigErrors."""
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "srun" not in line]  # Lightning's hint
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_unknown_model_names_the_valid_ones(run_cli):
    line = _one_error_line(run_cli("cnnlab-train", "model=lenet6", check=False))
    assert "Could not find 'model/lenet6'" in line
    assert "lenet5" in line and "simple_cnn" in line


def test_typo_in_key_is_named(run_cli):
    assert "trainer.max_epoch" in _one_error_line(run_cli("cnnlab-train", "trainer.max_epoch=3", check=False))


def test_wrong_type_is_named(run_cli):
    line = _one_error_line(run_cli("cnnlab-train", "trainer.max_epochs=many", check=False))
    assert "max_epochs" in line and "many" in line


def test_bad_override_syntax_is_one_line(run_cli):
    line = _one_error_line(run_cli("cnnlab-evaluate", "model.dropout=[1,", check=False))
    assert "[1," in line


def test_a_cnnlab_config_error_is_printed_once(run_cli):
    """Once on the terminal (the log file keeps it too), not also through the console log handler."""
    done = run_cli("cnnlab-train", "task=segmentation", "data=digits", "hydra.run.dir=runs/twice", check=False)
    assert "task=segmentation needs labels" in _one_error_line(done)


# runs a console script as its process does, then says which heavy packages the run had imported
IMPORT_PROBE = (
    "import atexit, sys; from importlib.metadata import entry_points; "
    "atexit.register(lambda: print('heavy:', [m for m in ('torch', 'pytorch_lightning', 'mlflow') if m in sys.modules],"
    " file=sys.stderr)); (script,) = entry_points(group='console_scripts', name=sys.argv[1]); "
    "sys.argv = sys.argv[1:]; script.load()()"
)


@pytest.mark.parametrize(
    "command, argument, message",
    [
        ("cnnlab-train", "data.image_size=-3", "data.image_size=-3 is not valid; expected an integer >= 1"),
        ("cnnlab-train", "optimizer.lr=-1", "optimizer.lr=-1 is not valid; expected a learning rate > 0"),
        ("cnnlab-predict", "top_k=0", "top_k=0 is not valid; expected an integer >= 1"),
        ("cnnlab-explain", "num_images=-1", "num_images=-1 is not valid; expected an integer >= 1"),
        ("cnnlab-compare", "top=-1", "top=-1 is not valid; expected an integer >= 1"),
    ],
)
def test_a_bad_value_is_reported_before_the_heavy_imports(project, command, argument, message):
    """A typo'd value answers in a second, not after torch, Lightning and MLflow load (5-12 s)."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, command, argument],
        cwd=project,
        env=cli_env(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: {message}", "heavy: []"], lines


def test_invalid_choice_lists_the_allowed_values(call_cli):
    done = call_cli("cnnlab-train", "task.mode=maximum", check=False)
    assert done.returncode == 2
    assert "task.mode='maximum' is not valid; expected one of: min, max" in done.stderr


def test_task_without_labels_in_data_fails_at_config_time(call_cli, tracking_uri, project):
    (project / "conf" / "task" / "segmentation_probe.yaml").write_text(
        "name: segmentation\nmonitor: val/miou\nmode: max\nmodule:\n  _target_: builtins.dict\n"
    )
    before = len(_runs(tracking_uri)) if (project / "mlflow.db").exists() else 0
    done = call_cli("cnnlab-train", "task=segmentation_probe", "data=digits", check=False)
    assert done.returncode == 2
    assert "task=segmentation needs labels that data=digits does not have" in done.stderr
    after = len(_runs(tracking_uri)) if (project / "mlflow.db").exists() else 0
    assert after == before  # nothing was started


def test_crash_after_start_marks_the_run_failed(call_cli, tracking_uri):
    done = call_cli(
        "cnnlab-train", *QUICK, "trainer.precision=not-a-precision", "logger.run_name=crash-probe", check=False
    )
    assert done.returncode != 0
    crashed = [r for r in _runs(tracking_uri) if r.info.run_name == "crash-probe"]
    assert len(crashed) == 1 and crashed[0].info.status == "FAILED"
    assert not [r for r in _runs(tracking_uri) if r.info.status == "RUNNING"]


def test_a_one_cycle_warm_up_shorter_than_a_step_is_named(call_cli, tmp_path):
    """4 steps at pct_start=0.25 made OneCycleLR divide by zero in the first step: now one line, exit 2."""
    done = call_cli(
        "cnnlab-train",
        "experiment=none",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "this run has 4 optimizer steps, and a warm-up of pct_start=0.25 of them is exactly one step" in done.stderr
