"""hydra/launcher=slurm: hydra-submitit-launcher's SLURM launcher, with a scheduler's answers as one clear line.

submitit raises what sbatch printed, or a job's missing result, as a traceback through Hydra; a
user needs the line that says what SLURM refused (a partition, a node configuration) or why a job
ended (its state and the error it printed) and where its logs are.
"""

from __future__ import annotations

import re
from typing import Sequence

from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmJobError(CompactHydraException):
    """SLURM refused a sweep's jobs, or one ended without a result: Hydra prints the message alone, exit 1."""


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import UncompletedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)
        except UncompletedJobError as err:
            text = str(err)
            if "sbatch: error" in text:
                asked = ", ".join(
                    f"{key}={self.params.get(key)}"
                    for key in (
                        "partition",
                        "account",
                        "nodes",
                        "tasks_per_node",
                        "cpus_per_task",
                        "gpus_per_node",
                        "mem_gb",
                        "timeout_min",
                    )
                )
                reason = " ".join(line.strip() for line in text.splitlines() if "error" in line)
                raise SlurmJobError(f"SLURM refused the sweep's jobs (hydra.launcher: {asked}): {reason}") from None
            # "Job <id> (task: n) with path <dir>/<id>_<n>_result.pkl\nhas not produced any output (state: FAILED)
            # Error stream produced: ...": the job, its state, its log, and its own error line (cnnlab
            # prints "error: ..." for a user error)
            found = re.search(r"Job (\S+) \(task: (\d+)\) with path (\S+)_result\.pkl.*?state: (\w+)", text, re.S)
            errors = [line.strip() for line in text.splitlines() if line.strip().startswith("error:")]
            if not found:
                raise
            job, task, stem, state = found.groups()
            raise SlurmJobError(
                f"SLURM job {job} (task {task}) ended {state} without a result: "
                f"{errors[-1] if errors else 'see its log'} (log: {stem}_log.err)"
            ) from None
