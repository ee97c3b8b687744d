"""What comes from a run, a model directory or a dataset is data: no class path or override read from one
decides what code cnnlab imports or runs (docs/security.md, "What is data").

Each attack is the one that worked before: Python's `this` module (it prints the Zen of Python when
imported) named as a class, or `touch <marker>` run through a Hydra callback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from cnnlab.config import ConfigError
from cnnlab.prediction import LoadedModel
from tests.conftest import call_in_process, copy_project

ZEN = "The Zen of Python"


@pytest.fixture
def this_unimported():
    """`this` is not imported when the test starts, and the test can ask whether it was since."""
    sys.modules.pop("this", None)
    yield lambda: "this" not in sys.modules
    sys.modules.pop("this", None)


def _model_info(**changes) -> dict:
    info = {"task": "classification", "class_names": ["a", "b"], "image_size": 8, "channels": 1}
    return {**info, **changes}


# ---- 1. cnnlab-predict: the task class comes from cnnlab's registry, by the metadata's task name ----------------
def test_a_task_class_path_in_model_metadata_is_never_imported(this_unimported):
    model = LoadedModel("crafted-model", None, _model_info(task_class="this.Anything"))
    assert model.task_class.name == "classification"  # by name, from the registry
    assert this_unimported()


def test_an_unknown_task_name_in_model_metadata_is_one_line_listing_the_known_ones(this_unimported):
    model = LoadedModel("crafted-model", None, _model_info(task="this.Anything"))
    with pytest.raises(ConfigError) as refused:
        _ = model.task_class
    message = str(refused.value)
    assert "model_uri='crafted-model'" in message and "'this.Anything'" in message
    known = message.split("known tasks: ", 1)[1].split(", ")  # other tests' tasks may be registered too
    assert {"classification", "localization", "segmentation"} <= set(known) and "\n" not in message
    assert this_unimported()


@pytest.mark.slow  # logs a real model (torch.export)
def test_cnnlab_predict_on_a_crafted_mlmodel_imports_nothing_from_it(tmp_path, this_unimported):
    from PIL import Image

    from cnnlab.tasks.classification import ClassificationTask
    from cnnlab.tracking.model_registry import log_model, use_tracking_uri
    from cnnlab.tracking.run import TrackedRun
    from tests.tasks.conftest import task_arguments

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    task = ClassificationTask(**task_arguments("simple_cnn", num_classes=3, image_size=28, in_channels=1))
    run = TrackedRun.start(store, "crafted", "crafted", {})
    model_uri = log_model(store, run.run_id, task)
    run.end()
    import mlflow

    with use_tracking_uri(store):
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp_path / "m")))
    image = tmp_path / "a.png"
    Image.new("L", (28, 28), 128).save(image)
    mlmodel = model_dir / "MLmodel"
    spec = yaml.safe_load(mlmodel.read_text())

    root = copy_project_root(tmp_path)
    spec["metadata"]["cnnlab"]["task_class"] = "this.Anything"  # the attack as it worked before
    mlmodel.write_text(yaml.safe_dump(spec))
    done = call_in_process(
        "cnnlab-predict", [f"model_uri={model_dir}", f"input={image}", f"output_dir={tmp_path / 'out'}"], root
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ZEN not in done.stdout + done.stderr and this_unimported()

    spec["metadata"]["cnnlab"]["task"] = "this.Anything"
    mlmodel.write_text(yaml.safe_dump(spec))
    done = call_in_process(
        "cnnlab-predict", [f"model_uri={model_dir}", f"input={image}", f"output_dir={tmp_path / 'out2'}"], root
    )
    assert done.returncode == 2 and ZEN not in done.stdout + done.stderr and this_unimported()
    assert "unknown task 'this.Anything'; known tasks: classification" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out2" / "predictions.csv").exists()


# ---- 2. cnnlab-explain: a run's logged config.yaml may only build what conf/ names -----------------------------
def _crafted_run(store: str, tmp_path: Path, config: dict, tags: dict | None = None) -> str:
    """A run made through MLflow's client, as anyone who can write to a shared store can: config.yaml and a
    (dummy) checkpoint as artifacts."""
    client = MlflowClient(store)
    experiment = client.create_experiment(f"crafted-{len(client.search_experiments())}")
    run = client.create_run(experiment, tags=tags or {})
    files = tmp_path / f"artifacts-{run.info.run_id}"
    (files / "checkpoints").mkdir(parents=True)
    (files / "config.yaml").write_text(yaml.safe_dump(config))
    (files / "checkpoints" / "best.ckpt").write_bytes(b"not a checkpoint")
    client.log_artifact(run.info.run_id, str(files / "config.yaml"))
    client.log_artifacts(run.info.run_id, str(files / "checkpoints"), "checkpoints")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.mark.parametrize(
    "key, config",
    [
        ("task.module._target_", {"task": {"name": "classification", "module": {"_target_": "this.Anything"}}}),
        (
            "data.source._target_",
            {
                "task": {
                    "name": "classification",
                    "module": {"_target_": "cnnlab.tasks.classification.ClassificationTask"},
                },
                "data": {"source": {"_target_": "this.Anything"}},
            },
        ),
        ("augment.train.0._target_", {"augment": {"train": [{"_target_": "this.Anything"}]}}),
    ],
    ids=["task", "data-source", "augment-list"],
)
def test_cnnlab_explain_builds_no_class_a_run_config_names_outside_conf(tmp_path, this_unimported, key, config):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _crafted_run(store, tmp_path, config)
    done = call_in_process(
        "cnnlab-explain",
        [f"run={run_id}", f"tracking_uri={store}", f"output_dir={tmp_path / 'explain'}"],
        copy_project_root(tmp_path),
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert ZEN not in done.stdout + done.stderr and this_unimported()
    error = done.stderr.strip().splitlines()[-1]
    assert f"{key}='this.Anything' is not a class cnnlab's conf/ names" in error and "config.yaml" in error
    assert "Traceback" not in done.stderr


def copy_project_root(tmp_path: Path) -> Path:
    """A project root whose conf/ is cnnlab's (explain needs no data)."""
    root = tmp_path / "project"
    if not root.exists():
        import shutil

        from tests.conftest import REPO

        root.mkdir()
        shutil.copytree(REPO / "conf", root / "conf")
    return root


# ---- 3. cnnlab-rerun: overrides read back from a run only set keys of conf/ ------------------------------------
def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A committed copy of the project: the crafted runs name its HEAD, so only the overrides stand in the way."""
    root = copy_project(tmp_path_factory.mktemp("rerun") / "project")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "project")
    return root


ATTACKS = [
    ("+hydra.callbacks.x._target_=subprocess.call +hydra.callbacks.x._args_=[[touch,{marker}]]", "may not add keys"),
    ("hydra.callbacks.mlflow_sweep._target_=subprocess.call", "may not name classes"),
    ("data.source={{_target_:subprocess.call,_args_:[[touch,{marker}]]}}", "may not name classes"),
    ("hydra/launcher=slurm", "Hydra's own settings"),
    ("+bogus_key=1", "may not add keys"),
    ("data.batchsize=3", "data.batchsize is not a key of cnnlab's config tree"),
    ("logger.tags.home=${{oc.env:HOME}}", "may not be an interpolation"),
    ("model=../../etc/passwd", "model has no option ../../etc/passwd"),
]


@pytest.mark.parametrize("tag, reason", ATTACKS, ids=[a.split("=")[0] for a, _ in ATTACKS])
def test_cnnlab_rerun_refuses_overrides_outside_conf(repo, tmp_path, tag, reason):
    marker = tmp_path / "pwned"
    tag = tag.format(marker=marker)
    store = f"sqlite:///{repo / 'mlflow.db'}"
    head = _git(repo, "rev-parse", "HEAD")
    run_id = _crafted_run(store, tmp_path, {"seed": 1}, {"cnnlab.overrides": tag, "mlflow.source.git.commit": head})
    done = call_in_process("cnnlab-rerun", [run_id], repo)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert not marker.exists()
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: refusing to re-run: run {run_id}'s overrides include") and reason in error
    assert repr(tag.split()[0]) in error and "Traceback" not in done.stderr
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r for r in runs if r.data.tags.get("cnnlab.rerun_of") == run_id]  # nothing was trained
    assert not [r for r in runs if r.info.status == "RUNNING"]
