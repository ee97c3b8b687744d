"""What a job reads from SLURM's environment, without a cluster: ids, restarts, the allocation check."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cnnlab import slurm
from cnnlab.config import ConfigError


@pytest.fixture
def in_job(monkeypatch):
    """The environment srun gives task 0 of job 41 (2 tasks on 1 node)."""
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    values = {
        "SLURM_JOB_ID": "41",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_PARTITION": "test",
        "SLURM_JOB_NODELIST": "vm",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def _trainer(**values):
    return OmegaConf.create({"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", **values})


def test_ranks_matching_the_allocation_pass(in_job):
    slurm.check_allocation(_trainer(devices=2, strategy="ddp"))


def test_a_mismatch_names_the_trainer_and_the_allocation(in_job):
    with pytest.raises(ConfigError) as raised:
        slurm.check_allocation(_trainer(devices=4, num_nodes=1))
    message = str(raised.value)
    assert (
        "trainer.devices=4 x trainer.num_nodes=1 = 4 DDP rank(s), but SLURM job 41 runs 2 task(s) on 1 node(s)"
        in message
    )
    assert "(SLURM_NTASKS=2, SLURM_NNODES=1)" in message and "hydra.launcher.tasks_per_node" in message


def test_nodes_must_match_too(in_job):
    with pytest.raises(ConfigError, match=r"trainer.num_nodes=2 .* on 1 node\(s\)"):
        slurm.check_allocation(_trainer(devices=1, num_nodes=2))


def test_ntasks_without_tasks_per_node_is_refused_before_lightning_does(in_job):
    in_job.delenv("SLURM_NTASKS_PER_NODE")
    with pytest.raises(ConfigError, match="--ntasks=2 without --ntasks-per-node"):
        slurm.check_allocation(_trainer(devices=2, strategy="ddp"))


def test_outside_slurm_or_in_an_interactive_shell_nothing_is_checked(in_job):
    in_job.setenv("SLURM_JOB_NAME", "bash")  # salloc + a shell: Lightning does not treat it as SLURM's tasks
    slurm.check_allocation(_trainer(devices=4))
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS"):
        in_job.delenv(name)
    slurm.check_allocation(_trainer(devices=4))
    assert slurm.tags() == {} and slurm.log_files() == []


def test_array_tasks_and_restarts_in_the_tags(in_job):
    in_job.setenv("SLURM_ARRAY_JOB_ID", "40")
    in_job.setenv("SLURM_ARRAY_TASK_ID", "1")
    in_job.setenv("SLURM_RESTART_COUNT", "2")
    assert slurm.job_id() == "40_1" and slurm.restarts() == 2
    assert slurm.tags() == {
        "slurm.job_id": "40_1",
        "slurm.partition": "test",
        "slurm.nodes": "vm",
        "slurm.ntasks": "2",
        "slurm.restarts": "2",
    }
