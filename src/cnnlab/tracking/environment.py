"""What a run ran on: Python and package versions, CPU, GPU and driver, the determinism settings.

Results are deterministic on one machine only: another CPU (its BLAS and oneDNN kernels) or GPU gives
other digits. Every run records these facts as tags (`cnnlab.env.*`), and training runs the full
package list as the artifact `environment.json`, so a number in the UI says where it came from.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata

import torch

KEY_PACKAGES = {
    "torch": "torch",
    "lightning": "pytorch-lightning",
    "mlflow": "mlflow",
    "dvc": "dvc",
    "albumentations": "albumentations",
    "torchmetrics": "torchmetrics",
    "hydra": "hydra-core",
    "numpy": "numpy",
}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu() -> dict[str, str]:
    """GPU model, CUDA version and driver when a GPU is visible; nothing otherwise (no CUDA initialised otherwise)."""
    if not torch.cuda.is_available():
        return {}
    facts = {
        "gpu": torch.cuda.get_device_name(0),
        "gpu_count": str(torch.cuda.device_count()),
        "cuda": str(torch.version.cuda),
    }
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode == 0 and done.stdout.strip():
            facts["gpu_driver"] = done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return facts


def environment_tags() -> dict[str, str]:
    """`cnnlab.env.*` tags: versions of Python and the key packages, CPU, threads, GPU, determinism."""
    tags = {
        "python": platform.python_version(),
        **{name: _version(dist) for name, dist in KEY_PACKAGES.items()},
        "cpu": cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
        "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()).lower(),
        "cudnn_benchmark": str(torch.backends.cudnn.benchmark).lower(),
        **_gpu(),
    }
    return {f"cnnlab.env.{key}": value for key, value in tags.items()}


def environment_record() -> dict:
    """Everything above plus every installed distribution and its version: the artifact environment.json."""
    # each distribution's metadata parsed once (dist.version parses it again): a third of a second here
    packages = {
        meta["Name"]: meta["Version"] for meta in (dist.metadata for dist in metadata.distributions()) if meta["Name"]
    }
    return {
        "tags": environment_tags(),
        "executable": sys.executable,
        "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
        "env": {
            name: os.environ[name]
            for name in ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
            if name in os.environ
        },
    }
