"""What a training job knows about the SLURM job it runs in: ids, allocation, requeues, log files.

Lightning does the rest itself: ranks come from SLURM's environment (SLURMEnvironment), and the
requeue signal (SIGUSR1, `sbatch --signal=USR1@<seconds>`) saves a checkpoint and requeues the job.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

from cnnlab.config import ConfigError


def job_id() -> Optional[str]:
    """This job's id as `squeue` shows it (<array job>_<task> inside an array), None outside SLURM."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def restarts() -> int:
    """How often SLURM requeued this job (pre-emption, `scontrol requeue`): 0 on its first start."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def manages_tasks() -> bool:
    """Whether SLURM launched this process as one task of a job (Lightning's SLURMEnvironment then
    takes ranks from it and launches no processes of its own)."""
    # lazy: Lightning's import costs a second, and this runs only when a job starts
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def tags() -> dict[str, str]:
    """The job's ids and place, as run tags (empty outside SLURM)."""
    if not job_id():
        return {}
    names = {
        "slurm.job_id": job_id(),
        "slurm.partition": os.environ.get("SLURM_JOB_PARTITION"),
        "slurm.nodes": os.environ.get("SLURM_JOB_NODELIST"),
        "slurm.ntasks": os.environ.get("SLURM_NTASKS"),
        "slurm.restarts": str(restarts()),
    }
    return {key: value for key, value in names.items() if value}


def check_allocation(trainer_cfg) -> None:
    """ConfigError naming both sides when the trainer's ranks (devices x num_nodes) are not the
    SLURM tasks this job was given: checked before any work, where Lightning would check after the
    run opened (or, with a launcher of its own, start ranks SLURM never allocated)."""

    if not manages_tasks():
        return
    devices, num_nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    ntasks, nnodes = int(os.environ["SLURM_NTASKS"]), int(os.environ.get("SLURM_NNODES") or 1)
    if ntasks > 1 and not os.environ.get("SLURM_NTASKS_PER_NODE"):
        raise ConfigError(
            f"SLURM job {job_id()} was given --ntasks={ntasks} without --ntasks-per-node, which Lightning "
            f"needs to place DDP ranks: submit with --nodes=N --ntasks-per-node=M (hydra/launcher=slurm does)"
        )
    if not isinstance(devices, int) or not isinstance(num_nodes, int):
        return  # "auto" or a list of devices: Lightning decides, and checks itself
    if devices * num_nodes != ntasks or num_nodes != nnodes:
        raise ConfigError(
            f"trainer.devices={devices} x trainer.num_nodes={num_nodes} = {devices * num_nodes} DDP rank(s), but "
            "SLURM job "
            f"{job_id()} runs {ntasks} task(s) on {nnodes} node(s) (SLURM_NTASKS={ntasks}, SLURM_NNODES={nnodes}): set "
            f"trainer.devices to the tasks per node and trainer.num_nodes to the nodes (with hydra/launcher=slurm: "
            "hydra.launcher.tasks_per_node and hydra.launcher.nodes), or srun/sbatch with "
            f"--ntasks-per-node={devices} --nodes={num_nodes}"
        )


def log_files() -> list[Path]:
    """The job's stdout and stderr files (as `scontrol show job` names them) that exist, else []."""
    if not job_id():
        return []
    try:  # <array job>_<task>: `scontrol show job <array job>` would list every task of the array
        shown = subprocess.run(["scontrol", "show", "job", job_id()], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    fields = dict(item.split("=", 1) for item in shown.split() if "=" in item)
    paths = []
    for key in ("StdOut", "StdErr"):
        value = fields.get(key, "")
        # submitit's per-task files: %t is this task (scontrol expands %j and the array's %A/%a only)
        value = value.replace("%t", os.environ.get("SLURM_PROCID", "0"))
        if value and Path(value).is_file() and Path(value) not in paths:
            paths.append(Path(value))
    return paths
