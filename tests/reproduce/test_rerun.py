"""cnnlab-rerun: a tracked run trained again from its id gives identical metrics on this machine (a
resumed run too, a whole sweep too); it refuses what it cannot reproduce; every run records its environment."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, call_in_process, cli_env, copy_project

pytestmark = pytest.mark.slow

RUN = (
    "experiment=none",  # on the plain defaults of conf/
    "trainer=debug",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=2",
    "logger.log_model=false",
    "logger.system_metrics=false",
    "augment.preview=false",
)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A copy of the project as its own git repository, committed, with its own store."""
    root = copy_project(tmp_path_factory.mktemp("rerun") / "project")
    _git(root, "init", "-q")
    _git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "add", "-A")
    _git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "project")
    return root


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def _rerun(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "cnnlab-rerun"), *args], cwd=root, env=cli_env(root), capture_output=True, text=True, timeout=900
    )


def test_a_finished_and_evaluated_run_is_reproduced_exactly(repo):
    out = repo / "runs" / "original"
    assert call_in_process("cnnlab-train", [*RUN, f"hydra.run.dir={out}"], repo).returncode == 0
    assert (
        call_in_process(
            "cnnlab-evaluate", [*RUN, f"evaluate.train_dir={out}", f"evaluate.output_dir={out}/eval"], repo
        ).returncode
        == 0
    )
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    original = _client(repo).get_run(run_id)
    assert original.data.tags["cnnlab.env.torch"].startswith("2.13.0") and original.data.tags["cnnlab.env.cpu"]
    assert {
        "cnnlab.env.python",
        "cnnlab.env.lightning",
        "cnnlab.env.mlflow",
        "cnnlab.env.dvc",
        "cnnlab.env.albumentations",
        "cnnlab.env.torch_threads",
        "cnnlab.env.deterministic_algorithms",
    } <= set(original.data.tags)
    assert "environment.json" in {a.path for a in _client(repo).list_artifacts(run_id)}

    done = _rerun(repo, run_id)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "reproduced: run" in done.stdout and "test/acc" in done.stdout
    # what it applies from the store is shown first (those overrides were checked against conf/)
    assert done.stdout.startswith(f"re-running {run_id} with its overrides: {' '.join(RUN)}\n")
    reruns = _client(repo).search_runs([original.info.experiment_id], f"tags.`cnnlab.rerun_of` = '{run_id}'")
    assert len(reruns) == 1 and reruns[0].info.status == "FINISHED"
    new = reruns[0]
    for key in ("val/acc", "val/loss", "test/acc", "test/loss", "best/val/acc"):
        assert new.data.metrics[key] == original.data.metrics[key], key
    assert "cnnlab.registered_model" not in new.data.tags  # a re-run registers nothing


def test_a_resumed_run_is_reproduced_exactly(repo):
    out = repo / "runs" / "resumed"
    env = cli_env(repo)
    args = [
        str(BIN / "cnnlab-train"),
        *RUN,
        "trainer.max_epochs=3",
        "callbacks.early_stopping=null",
        f"hydra.run.dir={out}",
    ]
    process = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)  # what a scheduler does, from outside
    assert process.wait(timeout=300) == 143
    resumed = call_in_process(
        "cnnlab-train",
        [*RUN, "trainer.max_epochs=3", "callbacks.early_stopping=null", "resume=true", f"hydra.run.dir={out}"],
        repo,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    assert _client(repo).get_run(run_id).data.tags["cnnlab.resumed"] == "true"
    done = _rerun(repo, f"runs:/{run_id}/model")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "reproduced" in done.stdout


def test_a_sweep_reruns_as_a_new_parent_with_its_children(repo):
    sweep = call_in_process(
        "cnnlab-train",
        ["-m", *RUN, "trainer.max_epochs=1", "optimizer.lr=0.01,0.001", f"hydra.sweep.dir={repo}/multirun/original"],
        repo,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    parent = json.loads((repo / "multirun" / "original" / "mlflow_parent_run.json").read_text())["run_id"]
    done = _rerun(repo, parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client = _client(repo)
    experiment = client.get_run(parent).info.experiment_id
    new_parents = client.search_runs(
        [experiment], f"tags.`cnnlab.rerun_of` = '{parent}' and tags.`cnnlab.role` = 'sweep'"
    )
    assert len(new_parents) == 1
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{new_parents[0].info.run_id}'")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert new_parents[0].data.metrics["best/val/acc"] == client.get_run(parent).data.metrics["best/val/acc"]


def test_refusals_name_what_is_missing_and_open_no_run(repo):
    client = _client(repo)
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    unknown = _rerun(repo, "0123456789abcdef0123456789abcdef")
    assert (
        unknown.returncode == 2
        and "run '0123456789abcdef0123456789abcdef' is not in the MLflow store" in unknown.stderr
    )
    bad_model = _rerun(repo, "models:/no-such-model/1")
    assert bad_model.returncode == 2 and "models:/no-such-model/1 does not resolve" in bad_model.stderr

    experiment = client.create_experiment("foreign")
    foreign = client.create_run(experiment, tags={"mlflow.source.git.commit": "f" * 40})
    client.set_terminated(foreign.info.run_id)
    no_config = _rerun(repo, foreign.info.run_id)
    assert no_config.returncode == 2 and "not made by cnnlab-train" in no_config.stderr

    original = json.loads((repo / "runs" / "original" / "run.json").read_text())["run_id"]
    client.set_tag(foreign.info.run_id, "cnnlab.overrides", "")
    other_commit = _rerun(repo, foreign.info.run_id)
    assert (
        other_commit.returncode == 2 and f"the run's commit {'f' * 12} is not in this repository" in other_commit.stderr
    )

    (repo / "conf" / "optimizer" / "adamw.yaml").write_text("_target_: torch.optim.AdamW\nlr: 0.1\n")
    try:
        dirty = _rerun(repo, original)
        assert dirty.returncode == 2 and "uncommitted changes (conf/optimizer/adamw.yaml)" in dirty.stderr
    finally:
        _git(repo, "checkout", "--", "conf/optimizer/adamw.yaml")
    after = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(after) == before + 1 and not [r for r in after if r.info.status == "RUNNING"]  # only the hand-made one
