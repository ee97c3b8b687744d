"""cnnlab on a live SLURM cluster (scripts/slurm-test-cluster): sweeps as job arrays, DDP over srun
tasks, pre-emption and requeue, cancellation, and what a scheduler refuses."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, QUICK, call_in_process
from tests.conftest import INTERRUPTIBLE_RUN as RUN
from tests.slurm.conftest import LAUNCHER, cnnlab_train, job_out

pytestmark = pytest.mark.slow


def _hold(marker: Path, step: int = 12) -> tuple[str, ...]:
    """Hold the job at step 12 (the middle of epoch 2) until the scheduler's SIGTERM: tests/slurm/hold.py."""
    return (
        "+callbacks.hold._target_=tests.slurm.hold.HoldAtStep",
        f"+callbacks.hold.step={step}",
        f"+callbacks.hold.marker={marker}",
    )


def _wait_for(path: Path, job_log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared; the job's output:\n{job_out(job_log)[-3000:]}"
        time.sleep(0.5)


def _train_multirun(slurm, project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "cnnlab-train"), "-m", *args],
        cwd=project,
        env=slurm.env(project),
        capture_output=True,
        text=True,
        timeout=420,
    )


def _sweep_runs(client: MlflowClient, sweep_dir: Path):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("cnnlab.sweep_dir") == str(sweep_dir)]
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_sweep_is_a_job_array_of_children_under_one_parent(slurm, project, tracking_uri, tmp_path):
    sweep_dir = project / "multirun" / "slurm-sweep"
    done = _train_multirun(
        slurm, project, *LAUNCHER, "optimizer.lr=0.01,0.003,0.001", *QUICK, f"hydra.sweep.dir={sweep_dir}"
    )
    assert done.returncode == 0, done.stderr[-4000:]
    client = MlflowClient(tracking_uri)
    parent, children = _sweep_runs(client, sweep_dir)
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert sorted(float(c.data.params["optimizer.lr"]) for c in children) == [0.001, 0.003, 0.01]
    # one array job, one task per sweep point
    array_ids = {c.data.tags["slurm.job_id"].split("_")[0] for c in children}
    assert len(array_ids) == 1 and sorted(c.data.tags["slurm.job_id"].split("_")[1] for c in children) == [
        "0",
        "1",
        "2",
    ]
    best = max(children, key=lambda c: c.data.metrics["best/val/acc"])
    assert parent.data.tags["best_child_run_id"] == best.info.run_id
    assert parent.data.metrics["best/val/acc"] == best.data.metrics["best/val/acc"]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["slurm.partition"] == "test"
        job_id = child.data.tags["slurm.job_id"]
        logs = sorted(a.path for a in client.list_artifacts(child.info.run_id, "slurm"))
        assert logs == [f"slurm/{job_id}_0_log.err", f"slurm/{job_id}_0_log.out"]
        # the job's own output: the log line naming this run
        text = Path(
            client.download_artifacts(child.info.run_id, f"slurm/{job_id}_0_log.out", str(tmp_path))
        ).read_text()
        assert f"MLflow run {child.info.run_id}" in text


def test_optuna_sweeper_through_the_slurm_launcher(slurm, project, tracking_uri):
    sweep_dir = project / "multirun" / "slurm-optuna"
    done = _train_multirun(
        slurm,
        project,
        *LAUNCHER,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        *QUICK,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    parent, children = _sweep_runs(MlflowClient(tracking_uri), sweep_dir)
    assert parent.data.params["sweep.sweeper"] == "OptunaSweeper" and parent.info.status == "FINISHED"
    assert len(children) == 2 and all(c.info.status == "FINISHED" and "slurm.job_id" in c.data.tags for c in children)
    assert parent.data.tags["best_child_run_id"] in {c.info.run_id for c in children}


def test_ddp_over_two_srun_tasks_is_one_run_equal_to_the_local_two_rank_run(slurm, project, tracking_uri, run_cli):
    ddp = (
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *QUICK[1:],
        "trainer.enable_progress_bar=false",
    )
    local_dir, slurm_dir = project / "runs" / "ddp-local", project / "runs" / "ddp-slurm"
    run_cli("cnnlab-train", *ddp, "logger.run_name=ddp-local", f"hydra.run.dir={local_dir}")
    log = project / "runs" / "ddp-slurm.out"
    job = slurm.sbatch(
        project,
        "srun " + cnnlab_train(*ddp, "logger.run_name=ddp-slurm", f"hydra.run.dir={slurm_dir}"),
        "--nodes=1",
        "--ntasks-per-node=2",
        f"--output={log}",
    )
    state = slurm.wait(project, job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
    assert state["JobState"] == "COMPLETED", job_out(log)[-4000:]
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("cnnlab-classification")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.run_name = 'ddp-slurm'"
    )  # one run, not one per rank
    (local,) = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'ddp-local'")
    assert (
        run.info.status == "FINISHED" and run.data.tags["slurm.job_id"] == job and run.data.tags["slurm.ntasks"] == "2"
    )
    assert sorted(p.name for p in (slurm_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert json.loads((slurm_dir / "run.json").read_text())["run_id"] == run.info.run_id
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in job_out(log)  # rank 1 came from SLURM_PROCID
    for metric in ("val/loss", "val/acc", "best/val/acc"):
        assert run.data.metrics[metric] == pytest.approx(local.data.metrics[metric], abs=1e-6), metric
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val/acc")] == pytest.approx(
        [m.value for m in client.get_metric_history(local.info.run_id, "val/acc")], abs=1e-6
    )
    assert [a.path for a in client.list_artifacts(run.info.run_id, "slurm")] == ["slurm/ddp-slurm.out"]


def test_preempted_job_is_requeued_and_resumes_its_run_to_the_same_result(slurm, project, tracking_uri):
    straight_dir, out = project / "runs" / "slurm-straight", project / "runs" / "slurm-preempted"
    assert call_in_process("cnnlab-train", [*RUN, f"hydra.run.dir={straight_dir}"], project).returncode == 0
    marker, log = project / "runs" / "slurm-preempted.held", project / "runs" / "slurm-preempted.out"
    job = slurm.sbatch(
        project,
        "exec " + cnnlab_train(*RUN, *_hold(marker), f"hydra.run.dir={out}"),
        "--requeue",
        "--nodes=1",
        "--ntasks-per-node=1",
        f"--output={log}",
    )
    _wait_for(marker, log)
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    # what the scheduler sends before pre-empting (sbatch --signal=B:USR1@<s>): Lightning saves a
    # checkpoint and requeues the job (scontrol requeue)
    slurm.run("scancel", "--signal=USR1", "--batch", job, root=project)
    state = slurm.wait(project, job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, release_requeued=True)
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", job_out(log)[-4000:]
    assert (out / "hpc_ckpt_1.ckpt").is_file()  # saved on the signal
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    straight = client.get_run(json.loads((straight_dir / "run.json").read_text())["run_id"])
    assert (
        run.info.status == "FINISHED"
        and run.data.tags["cnnlab.resumed"] == "true"
        and run.data.tags["slurm.restarts"] == "1"
    )
    history, reference = (client.get_metric_history(r.info.run_id, "val/acc") for r in (run, straight))
    assert [m.step for m in history] == [m.step for m in reference] and len(history) == 3  # every epoch once
    assert [m.value for m in history] == pytest.approx([m.value for m in reference], abs=1e-6)
    assert run.data.metrics["val/loss"] == pytest.approx(straight.data.metrics["val/loss"], abs=1e-6)


def test_cancelled_job_ends_its_run_killed(slurm, project, tracking_uri):
    out, marker, log = (project / "runs" / f"slurm-cancelled{suffix}" for suffix in ("", ".held", ".out"))
    job = slurm.sbatch(project, "exec " + cnnlab_train(*RUN, *_hold(marker), f"hydra.run.dir={out}"), f"--output={log}")
    _wait_for(marker, log)
    slurm.run("scancel", job, root=project)
    assert slurm.wait(project, job, {"CANCELLED", "COMPLETED", "FAILED"})["JobState"] == "CANCELLED"
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    client, deadline = MlflowClient(tracking_uri), time.monotonic() + 30
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get_run(run_id).info.status == "KILLED", job_out(log)[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "killed"


def test_time_limit_without_requeue_ends_the_run_killed(slurm, project, tracking_uri):
    out, marker, log = (project / "runs" / f"slurm-timeout{suffix}" for suffix in ("", ".held", ".out"))
    job = slurm.sbatch(
        project,
        "exec " + cnnlab_train(*RUN, *_hold(marker), f"hydra.run.dir={out}"),
        "--time=1",
        "--no-requeue",
        f"--output={log}",
    )
    assert (
        slurm.wait(project, job, {"TIMEOUT", "COMPLETED", "FAILED", "CANCELLED"}, timeout=240)["JobState"] == "TIMEOUT"
    )
    text = job_out(log)
    assert "DUE TO TIME LIMIT" in text and "stopped by SIGTERM" in text, text[-3000:]
    run = MlflowClient(tracking_uri).get_run(json.loads((out / "run.json").read_text())["run_id"])
    assert run.info.status == "KILLED"


# ---- what a scheduler refuses -------------------------------------------------------------------
def _no_run_left_running(tracking_uri: str, sweep_dir: Path) -> None:
    """No run of this sweep (its parent, its children) is RUNNING."""
    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string="attributes.status = 'RUNNING'"
    )
    ours = [
        r
        for r in runs
        if str(sweep_dir)
        in (r.data.tags.get("cnnlab.sweep_dir", ""), str(Path(r.data.tags.get("cnnlab.output_dir", "/")).parent))
    ]
    assert not ours, [r.info.run_name for r in ours]


def test_a_sweep_slurm_refuses_is_one_line_and_a_failed_parent(slurm, project, tracking_uri):
    sweep_dir = project / "multirun" / "slurm-refused"
    done = _train_multirun(
        slurm,
        project,
        *LAUNCHER,
        "hydra.launcher.partition=nope",
        "optimizer.lr=0.01,0.003",
        *QUICK,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert done.returncode == 1
    assert (
        "SLURM refused the sweep's jobs (hydra.launcher: partition=nope, account=None, nodes=1, tasks_per_node=1"
        in done.stderr
    )
    assert "invalid partition specified: nope" in done.stderr and "Traceback" not in done.stderr
    parent, children = _sweep_runs(MlflowClient(tracking_uri), sweep_dir)
    assert parent.info.status == "FAILED" and children == []
    _no_run_left_running(tracking_uri, sweep_dir)


def test_more_tasks_than_the_allocation_has_is_slurms_error_and_no_run(slurm, project, tracking_uri):
    log = project / "runs" / "slurm-too-many.out"
    job = slurm.sbatch(
        project,
        "srun --ntasks=4 "
        + cnnlab_train(
            "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=4", *QUICK[1:], "logger.run_name=slurm-too-many"
        ),
        "--nodes=1",
        "--ntasks-per-node=2",
        f"--output={log}",
    )
    state = slurm.wait(project, job, {"COMPLETED", "FAILED", "CANCELLED"})
    text = job_out(log)
    assert state["JobState"] == "FAILED" and "More processors requested than permitted" in text, text[-3000:]
    client = MlflowClient(tracking_uri)
    assert not client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string="attributes.run_name = 'slurm-too-many'"
    )


def test_trainer_ranks_that_do_not_match_the_allocation_fail_before_training(slurm, project, tracking_uri):
    log = project / "runs" / "slurm-mismatch.out"
    job = slurm.sbatch(
        project,
        "srun " + cnnlab_train("trainer=cpu", *QUICK[1:], "logger.run_name=slurm-mismatch"),
        "--nodes=1",
        "--ntasks-per-node=2",
        f"--output={log}",
    )
    state = slurm.wait(project, job, {"COMPLETED", "FAILED", "CANCELLED"})
    text = job_out(log)
    assert state["JobState"] == "FAILED" and state["ExitCode"].startswith("2:"), text[-3000:]
    assert "error: trainer.devices=1 x trainer.num_nodes=1 = 1 DDP rank(s), but SLURM job" in text
    assert "(SLURM_NTASKS=2, SLURM_NNODES=1)" in text and "Traceback" not in text
    client = MlflowClient(tracking_uri)
    assert not client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string="attributes.run_name = 'slurm-mismatch'"
    )


def test_a_tracking_uri_the_jobs_cannot_reach_fails_them_fast_naming_it(slurm, project, tracking_uri):
    sweep_dir = project / "multirun" / "slurm-unreachable"
    started = time.monotonic()
    done = _train_multirun(
        slurm,
        project,
        *LAUNCHER,
        "logger.tracking_uri=http://127.0.0.1:9",
        "optimizer.lr=0.01",
        *QUICK,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert done.returncode == 1 and time.monotonic() - started < 120
    # the job's own one-line error, through the launcher: which job, its state, the URI
    said = done.stderr.split("MLflowSweepCallback")[-1]  # after the head's warning that it cannot reach it either
    assert re.search(
        r"SLURM job \d+ \(task 0\) ended FAILED without a result: error: the MLflow tracking server at "
        r"http://127.0.0.1:9 does not answer .* \(log: \S+_0_log.err\)",
        said,
    ), said[-3000:]
    assert "Traceback" not in done.stderr.split("MLflowSweepCallback")[-1]
    _no_run_left_running(tracking_uri, sweep_dir)


def test_ddp_over_srun_streams_each_shard_sample_to_one_rank(slurm, project, tmp_path):
    """data.storage=shards under SLURM: the two srun tasks split every epoch, each sample trained on once."""
    from collections import Counter

    from tests.data.shard_probe import read_ranks

    shards = ("data=digits", "data.storage=shards", "data.shards.samples_per_shard=50", "augment=none")
    common = (*shards, "trainer.accelerator=cpu", *QUICK[1:], "trainer.limit_train_batches=1.0")
    single, ranks_dir = tmp_path / "single", tmp_path / "ranks"
    probe = "+callbacks.probe._target_=tests.data.shard_probe.RecordSamples"
    done = call_in_process(
        "cnnlab-train", [*common, probe, f"+callbacks.probe.directory={single}", "logger=none"], project
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = project / "runs" / "ddp-shards.out"
    job = slurm.sbatch(
        project,
        "srun "
        + cnnlab_train(
            *common,
            "trainer=ddp",
            "trainer.devices=2",
            probe,
            f"+callbacks.probe.directory={ranks_dir}",
            "logger.run_name=ddp-shards",
            f"hydra.run.dir={project / 'runs' / 'ddp-shards'}",
        ),
        "--nodes=1",
        "--ntasks-per-node=2",
        f"--output={log}",
    )
    state = slurm.wait(project, job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
    assert state["JobState"] == "COMPLETED", job_out(log)[-4000:]
    (reference,) = read_ranks(single)
    ranks = read_ranks(ranks_dir)
    assert len(ranks) == 2
    for epoch in reference:
        assert ranks[0][epoch]["steps"] == ranks[1][epoch]["steps"]
        together = Counter(ranks[0][epoch]["samples"]) + Counter(ranks[1][epoch]["samples"])
        assert together == Counter(reference[epoch]["samples"])
