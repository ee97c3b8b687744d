"""DVC's experiments (`dvc exp run`, its queue, --temp) land in the project's own MLflow store,
named and tagged as DVC names them, with the metrics `dvc exp show` lists; params.yaml's recipe
and free overrides follow their documented precedence."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, dvc_project

pytestmark = pytest.mark.slow

# a few batches of one epoch, through params.yaml's free overrides
QUICK = "trainer=debug trainer.max_epochs=1 logger.log_model=false logger.system_metrics=false"
GIT = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def user_env() -> dict[str, str]:
    """What a user's shell has: no MLFLOW_TRACKING_URI or CNNLAB_ROOT, so cnnlab finds the store itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CNNLAB_", "DVC_"))}
    return {
        **env,
        **GIT,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=root, env=user_env(), capture_output=True, text=True, timeout=900
    )
    if check:
        assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env=user_env(), capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A committed project whose pipeline trains a few batches, with its baseline results committed."""

    def quick(params: dict) -> None:
        params["overrides"] = QUICK

    root = dvc_project(tmp_path_factory.mktemp("dvcexp"), quick)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project")
    dvc(root, "repro")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "baseline results")
    committed = git(root, "ls-files").split()
    # what DVC expects in git: the lock file and the small cache: false files
    assert {
        "dvc.lock",
        "artifacts/train/metrics.json",
        "artifacts/evaluate/metrics.json",
        "artifacts/train/history.csv",
    } <= set(committed)
    assert not any(path.startswith(("artifacts/train/checkpoints", "data/prepared")) for path in committed)
    return root


def wait_for_queue(root: Path, timeout: float = 900) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = dvc(root, "queue", "status").stdout
        if not any(state in status for state in ("Running", "Queued")):
            return status
        time.sleep(3)
    raise AssertionError(f"the DVC queue did not finish in {timeout} s:\n{status}")


def test_workspace_queued_parallel_and_temp_experiments_land_in_the_projects_store(repo: Path):
    dvc(repo, "exp", "run", "-n", "ws-lr", "-S", f"overrides='{QUICK} optimizer.lr=0.002'")
    dvc(repo, "exp", "run", "--queue", "-n", "q-seed1", "-S", f"overrides='{QUICK} seed=1'")
    dvc(repo, "exp", "run", "--queue", "-n", "q-seed2", "-S", f"overrides='{QUICK} seed=2'")
    dvc(repo, "queue", "start", "-j", "2")  # two workers: the queued experiments run in parallel
    status = wait_for_queue(repo)
    assert status.count("Success") == 2, status
    dvc(repo, "exp", "run", "--temp", "-n", "tmp-seed3", "-S", f"overrides='{QUICK} seed=3'")

    names = {"ws-lr", "q-seed1", "q-seed2", "tmp-seed3"}
    assert not list((repo / ".dvc").rglob("mlflow.db"))  # nothing logged into DVC's temporary copies
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`cnnlab.dvc_experiment` != ''"
    )
    by_name = {run.data.tags["cnnlab.dvc_experiment"]: run for run in runs}
    assert set(by_name) == names and len(runs) == 4
    for name, run in by_name.items():
        assert run.info.run_name == name and run.info.status == "FINISHED"
        assert len(run.data.tags["cnnlab.dvc_baseline_rev"]) == 40
    assert by_name["q-seed1"].data.params["seed"] == "1" and by_name["ws-lr"].data.params["optimizer.lr"] == "0.002"

    # `dvc exp show` and MLflow list the same experiments with the same metrics
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    experiments = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                experiments[rev["name"]] = rev["data"]
    assert names <= set(experiments), sorted(experiments)
    for name in names:
        data = experiments[name]
        train_metrics = data["metrics"]["artifacts/train/metrics.json"]["data"]
        test_metrics = data["metrics"]["artifacts/evaluate/metrics.json"]["data"]
        run = by_name[name]
        assert train_metrics["best/val/acc"] == pytest.approx(run.data.metrics["best/val/acc"])
        assert test_metrics["test/acc"] == pytest.approx(run.data.metrics["test/acc"])

    # the workspace holds ws-lr's results: compared with the committed baseline
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    assert "test/acc" in diff["artifacts/evaluate/metrics.json"]
    # ws-lr's other learning rate moves the validation loss (train_seconds may round to the baseline's)
    assert "val/loss" in diff["artifacts/train/metrics.json"]
    dvc(repo, "plots", "diff", "HEAD", "-o", str(repo / "plots-html"))
    assert (repo / "plots-html" / "index.html").is_file()


def test_another_recipe_and_free_overrides_on_top_of_it(repo: Path):
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    git(repo, "checkout", "--", ".")
    shapes = f"{QUICK} data.source.num_samples=600"  # the recipe's data, fewer (the 5 batches of trainer=debug)
    dvc(repo, "exp", "run", "-n", "shapes", "-S", "experiment=shapes_classification", "-S", f"overrides='{shapes}'")
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`cnnlab.dvc_experiment` = 'shapes'"
    )
    assert (run.data.params["data.name"], run.data.params["model.name"]) == ("shapes", "resnet18")
    assert run.data.params["model.width_mult"] == "0.25"  # the recipe's own value
    assert run.data.params["trainer.max_epochs"] == "1" and run.info.status == "FINISHED"  # the overrides win
    assert run.data.tags["cnnlab.dvc_params_changed"] == (
        "experiment: 'digits_lenet5' -> 'shapes_classification'; overrides: +data.source.num_samples=600"
    )

    git(repo, "checkout", "--", ".")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    free = f"{params['overrides']} model.dropout=0.25"
    dvc(repo, "exp", "run", "-n", "wider", "-S", f"overrides='{free}'")
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`cnnlab.dvc_experiment` = 'wider'"
    )
    assert run.data.params["model.dropout"] == "0.25" and run.info.status == "FINISHED"
    # each run states what it changed from the committed params.yaml, override by override
    assert run.data.tags["cnnlab.dvc_params_changed"] == "overrides: +model.dropout=0.25"

    # "wider" left its values in the workspace's params.yaml (DVC keeps a workspace experiment there): a --temp
    # experiment that names only another recipe runs with them too, and says so loudly and in its run
    done = dvc(repo, "exp", "run", "--temp", "-n", "after-wider", "-S", "experiment=none")
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`cnnlab.dvc_experiment` = 'after-wider'"
    )
    assert run.data.params["model.dropout"] == "0.25"  # DVC's behaviour: the copy of the workspace
    assert run.data.tags["cnnlab.dvc_params_changed"] == (
        "experiment: 'digits_lenet5' -> 'none'; overrides: +model.dropout=0.25"
    )
    printed = done.stdout + done.stderr
    assert "runs with params.yaml changed from its baseline" in printed and "git checkout params.yaml" in printed
