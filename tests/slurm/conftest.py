"""A live SLURM cluster for the session (scripts/slurm-test-cluster) and helpers to submit and watch jobs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, cli_env

SCRIPT = REPO / "scripts" / "slurm-test-cluster"

# hydra/launcher=slurm on the test cluster: one node, 2 CPUs, no GPUs, 1 GB
LAUNCHER = (
    "hydra/launcher=slurm",
    "hydra.launcher.partition=test",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
    "hydra.launcher.timeout_min=10",
)


class Cluster:
    """The test cluster: its environment, and sbatch / scontrol / scancel on it."""

    def __init__(self, directory: Path):
        self.directory = directory

    def env(self, root: Path, **extra: str) -> dict[str, str]:
        """cli_env(root) plus the cluster (SLURM_CONF, its sacct stand-in) and the tests on PYTHONPATH (their
        callbacks).
        """
        env = cli_env(root, SLURM_CONF=str(self.directory / "slurm.conf"), PYTHONPATH=str(REPO), **extra)
        env = {k: v for k, v in env.items() if not (k.startswith("SLURM_") and k != "SLURM_CONF")}
        env["PATH"] = f"{self.directory / 'bin'}{os.pathsep}{env['PATH']}"
        return env

    def run(self, *args: str, root: Path, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), cwd=root, env=self.env(root), capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def sbatch(self, root: Path, script: str, *options: str) -> str:
        """Submit `script` (a bash body) from `root`; returns the job id."""
        for option in options:  # SLURM fails a job whose log file it cannot open, saying nothing
            if option.startswith("--output="):
                Path(option.split("=", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        path = root / f"job-{time.monotonic_ns()}.sh"
        path.write_text(f"#!/bin/bash\n{script}\n")
        done = self.run("sbatch", "--parsable", "-p", "test", *options, str(path), root=root)
        return done.stdout.strip().split(";")[0]

    def job(self, root: Path, job_id: str) -> dict[str, str]:
        shown = self.run("scontrol", "-o", "show", "job", job_id, root=root).stdout.split("\n")[0]
        return dict(item.split("=", 1) for item in shown.split() if "=" in item)

    def wait(
        self, root: Path, job_id: str, states: set[str], timeout: float = 300, release_requeued: bool = False
    ) -> dict[str, str]:
        """The job once its state is one of `states`. With release_requeued, a requeued job is made
        eligible at once (SLURM holds a requeued job two minutes before it may start again)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(root, job_id)
            if job["JobState"] in states:
                return job
            if (
                release_requeued
                and job["JobState"] == "PENDING"
                and int(job.get("Restarts", 0)) > 0
                and job.get("Reason") == "BeginTime"
            ):
                self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", root=root)
            time.sleep(1)
        raise AssertionError(f"job {job_id} still {job['JobState']} after {timeout} s; {self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted((self.directory / "log").glob("*.log")))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Cluster:
    """munged + slurmctld + slurmd on 127.0.0.1 for the session, stopped after it."""
    installed = subprocess.run([str(SCRIPT), "install"], capture_output=True, text=True, timeout=900)
    if installed.returncode != 0:
        pytest.skip(
            f"no SLURM test cluster: slurm-wlm and munge cannot be installed here ({installed.stderr.strip()[-300:]})"
        )
    # short path: munge's socket path must fit in a sockaddr_un
    directory = Path(tmp_path_factory.mktemp("slurm"))
    environment = {**os.environ, "SLURM_TEST_PORT": str(_free_port_pair())}
    started = subprocess.run(
        [str(SCRIPT), "start", str(directory)], env=environment, capture_output=True, text=True, timeout=180
    )
    assert started.returncode == 0, f"the SLURM test cluster did not start:\n{started.stdout}\n{started.stderr}"
    try:
        yield Cluster(directory)
    finally:
        subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=120)


def _free_port_pair() -> int:
    """A port p with p + 1 free too (slurmctld, slurmd): another cluster on this machine keeps its own."""
    import socket

    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def job_out(path: Path) -> str:
    return path.read_text() if path.is_file() else f"(no {path})"


def cnnlab_train(*args: str) -> str:
    """The command line of a cnnlab-train job (the venv's, whatever PATH the job has)."""
    quoted = " ".join(f"'{a}'" if re.search(r"[\s$*,]", a) else a for a in args)
    return f"{BIN / 'cnnlab-train'} {quoted}"


__all__ = ["Cluster", "LAUNCHER", "cnnlab_train", "job_out", "shutil"]
