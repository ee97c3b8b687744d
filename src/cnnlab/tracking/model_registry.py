"""The model registry: a run's best network as an MLflow model, its registered versions and aliases.

A cnnlab model is the task's plain network (`task.network`, backbone + head, cnnlab.models.networks)
in eval mode behind `Predictor`, which gives every task one output tensor, the network's `predict`
(what MLflow's pyfunc serves; each task declares it in words as `output`, e.g. "N x K class
probabilities"). Nothing of the LightningModule (metrics, hyperparameters) is in it.

It is saved with torch.export (MLflow's "pt2" format: a traced graph, no pickle, loadable without
cnnlab) and carries what prediction needs in its MLmodel metadata under "cnnlab": the task's name (prediction
looks its class up in cnnlab's registry of tasks), class names, image size, channels and the
normalisation of the data it was trained on,
and "input": what the images were made from (an audio model's spectrogram settings).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from typing import Iterator, Optional

import mlflow
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils
from torch import nn

from cnnlab.tracking.run import TrackedRun
from cnnlab.tracking.store import client as tracking_client
from cnnlab.tracking.store import restored_environment, with_retry

log = logging.getLogger(__name__)

GENERIC_NAME = "model"  # what runs:/<id>/model means: the one model a cnnlab run logs, whatever its name
METADATA_KEY = "cnnlab"
METADATA_VERSION = 1
SERIALIZATION_FORMAT = "pt2"  # torch.export: safe to load (no pickle), needs no cnnlab code
EXAMPLE_BATCH = 2  # torch.export fixes a size-1 dimension: two images keep the batch dynamic


def registered_model_name(task: str, model: str) -> str:
    """The registry name of a task x model: cnnlab-<task>-<model>."""
    return f"cnnlab-{task}-{model}"


def logged_model_name(task: str, model: str, data: Optional[str] = None) -> str:
    """The name a run's model has in MLflow (the LoggedModel's, and the path in runs:/<id>/<name>): what it is,
    <model>-<task>[-<data>], e.g. resnet18-classification-digits. runs:/<id>/model still finds it."""
    parts = [model, task, *([data] if data else [])]
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", str(part)) for part in parts)


class Predictor(nn.Module):
    """A task network's `predict` as its `forward`: what torch.export (the pt2 format) records and serves."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.predict(images)


def model_metadata(task: nn.Module) -> dict:
    """What prediction needs besides the weights; stored in the MLmodel file under "cnnlab"."""
    hp = task.hparams
    channels = int(hp.in_channels)
    return {
        "format_version": METADATA_VERSION,
        "task": task.name,
        "model": str(hp.model.get("name", "unknown")),
        "class_names": task.class_names,  # the network's output classes: the mask classes for segmentation
        "image_size": int(hp.image_size),
        "channels": channels,
        "mean": [float(v) for v in (hp.get("mean") or [0.0] * channels)],
        "std": [float(v) for v in (hp.get("std") or [1.0] * channels)],
        "output": task.output,
        "input": dict(hp.get("input_spec") or {"kind": "image"}),  # how files become images (see Source.input_spec)
        **task.model_metadata(),
    }


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking and registry URIs at `uri` for a moment, then restore them exactly.

    Some MLflow 3 paths ignore a client's own URI and read the global one (logging a model,
    registering a LoggedModel, resolving models:/ URIs). mlflow.set_tracking_uri also writes
    $MLFLOW_TRACKING_URI (and unsetting clears it), so the variables are restored by hand: cnnlab
    reads them to find the store.
    """
    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    with restored_environment("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved[0])
            registry_utils._registry_uri = saved[1]


def example_inputs(dataset, count: int = EXAMPLE_BATCH) -> Optional[torch.Tensor]:
    """The first `count` images of a dataset of {"image": tensor} items (e.g. the unaugmented val split), or None if
    empty.
    """
    count = min(count, len(dataset))
    return torch.stack([dataset[i]["image"] for i in range(count)]) if count else None


def log_model(
    uri: str,
    run_id: str,
    task_module: nn.Module,
    register_name: Optional[str] = None,
    example: Optional[torch.Tensor] = None,
    data_name: Optional[str] = None,
) -> str:
    """Log `task_module`'s network as an MLflow model of run `run_id`, named by `logged_model_name` (model, task
    and `data_name`); returns the model URI.

    `example` is a batch of normalised network inputs (N x C x H x W); its first two images become
    the input example the signature is inferred from. Without it, a batch of zeros (the training
    mean after normalisation) stands in. With `register_name`, the model is also registered under
    that name (a new version) and the run is tagged `cnnlab.registered_model` / `cnnlab.model_version`.
    """
    task_module = task_module.cpu().eval()
    network = Predictor(task_module.network).eval()
    metadata = model_metadata(task_module)
    if example is None:
        example = torch.zeros(EXAMPLE_BATCH, metadata["channels"], metadata["image_size"], metadata["image_size"])
    example = example[:EXAMPLE_BATCH].detach().cpu().float()
    if len(example) < EXAMPLE_BATCH:
        example = example.repeat(EXAMPLE_BATCH, 1, 1, 1)[:EXAMPLE_BATCH]
    with torch.no_grad():
        output = network(example)
    example_array = example.numpy()
    signature = infer_signature(example_array, output.numpy())  # batch dimension -1: any batch size

    mlflow_client = tracking_client(uri)
    run = with_retry(lambda: mlflow_client.get_run(run_id), what="get run")
    tags = {"cnnlab.task": metadata["task"], "cnnlab.model": metadata["model"]}
    name = logged_model_name(metadata["task"], metadata["model"], data_name)
    with use_tracking_uri(uri):
        # MLflow 3 files a LoggedModel under the *active* experiment (the Default one, artifacts in
        # ./mlruns of the cwd) unless it exists already: create it in the run's experiment first
        logged = with_retry(
            lambda: mlflow.initialize_logged_model(
                name=name,
                source_run_id=run_id,
                tags=tags,
                params=run.data.params,
                experiment_id=run.info.experiment_id,
            ),
            what="create logged model",
        )
        info = with_retry(
            lambda: mlflow.pytorch.log_model(
                network,
                name=name,
                model_id=logged.model_id,
                run_id=run_id,
                serialization_format=SERIALIZATION_FORMAT,
                signature=signature,
                input_example=example_array,
                metadata={METADATA_KEY: metadata},
                # the pt2 graph needs torch alone; naming it skips MLflow's slow requirement inference
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            ),
            what="log model",
        )
    log.info("logged model %s (run %s)", info.model_uri, run_id)
    if register_name:
        version = register_version(uri, info.model_uri, register_name, run_id, info.model_id, metadata)
        log.info("registered %s version %s", register_name, version)
    return info.model_uri


def register_version(uri: str, model_uri: str, name: str, run_id: str, model_id: Optional[str], metadata: dict) -> str:
    """A new version of registered model `name` (created if new) from `model_uri`; returns the version number."""
    mlflow_client = tracking_client(uri)
    try:
        with_retry(
            lambda: mlflow_client.create_registered_model(
                name, description=f"cnnlab {metadata['task']} models with a {metadata['model']} backbone"
            ),
            what="create registered model",
        )
    except MlflowException as err:
        if "already exists" not in str(err).lower():
            raise
    tags = {"cnnlab.task": metadata["task"], "cnnlab.model": metadata["model"]}
    with use_tracking_uri(uri):  # the SQL registry resolves models:/<id> through the global tracking URI
        version = with_retry(
            lambda: mlflow_client.create_model_version(
                name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id
            ),
            what="create model version",
        ).version
    TrackedRun(uri, run_id).set_tags({"cnnlab.registered_model": name, "cnnlab.model_version": str(version)})
    return str(version)


def registered_version(uri: str, run_id: str) -> Optional[tuple[str, str]]:
    """(registered model name, version) registered from run `run_id`, the newest one; None if none."""
    mlflow_client = tracking_client(uri)
    versions = with_retry(
        lambda: mlflow_client.search_model_versions(f"run_id = '{run_id}'"), what="search model versions"
    )
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    return newest.name, str(newest.version)


def _is_better(value: float, incumbent: float, mode: str) -> bool:
    return value > incumbent if mode == "max" else value < incumbent


def promote_if_better(
    uri: str,
    model_name: str,
    version: str | int,
    metric: str,
    value: float,
    mode: str,
    alias: str = "champion",
) -> bool:
    """Give `alias` to `version` if its `metric` beats the current holder's; returns whether it holds it now.

    The value is recorded on the version as the tag `metric` (e.g. "test/acc" = "0.9861"), which is
    what later candidates are compared against. The alias moves when no version holds it yet or the
    new value is strictly better (mode max: higher, min: lower); a tie keeps the incumbent. A holder
    without the tag (an alias set by hand) is kept, with a warning that says which tag to set.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r} is not valid; expected one of: min, max")
    version = str(version)
    mlflow_client = tracking_client(uri)
    value = float(value)
    with_retry(
        lambda: mlflow_client.set_model_version_tag(model_name, version, metric, repr(value)), what="tag model version"
    )
    if math.isnan(value):
        log.warning("%s version %s: %s is NaN; not promoting it to @%s", model_name, version, metric, alias)
        return False
    try:
        incumbent = with_retry(lambda: mlflow_client.get_model_version_by_alias(model_name, alias), what="get alias")
    except MlflowException as err:
        if "not found" not in str(err).lower() and "does not exist" not in str(err).lower():
            raise
        incumbent = None
    if incumbent is not None:
        if str(incumbent.version) == version:
            return True
        recorded = incumbent.tags.get(metric)
        if recorded is None:
            log.warning(
                "%s@%s is version %s, which has no %s tag to compare with; keeping it. Tag it (or move the alias) "
                "to let evaluations compete for it.",
                model_name,
                alias,
                incumbent.version,
                metric,
            )
            return False
        if not _is_better(value, float(recorded), mode):
            log.info(
                "%s version %s: %s=%.4f does not beat @%s (version %s, %s); alias kept",
                model_name,
                version,
                metric,
                value,
                alias,
                incumbent.version,
                recorded,
            )
            return False
    with_retry(lambda: mlflow_client.set_registered_model_alias(model_name, alias, version), what="set alias")
    log.info("%s version %s is now @%s (%s=%.4f)", model_name, version, alias, metric, value)
    return True


def held_out_metric(monitor: Optional[str]) -> Optional[str]:
    """The test-split name of a monitored validation metric: val/acc -> test/acc, val/miou -> test/miou."""
    if not monitor:
        return None
    return "test/" + monitor.split("/", 1)[1] if monitor.startswith("val/") else monitor


def promote_run_model(
    uri: str, run_id: str, metrics: dict[str, float], metric: Optional[str], mode: str, alias: Optional[str]
) -> Optional[bool]:
    """After evaluation: promote the version registered from `run_id` by `metrics[metric]`.

    None (nothing done) when no alias is configured, the run registered no model, or the metric is
    missing from `metrics`; otherwise what `promote_if_better` returns.
    """
    if not alias or not metric or metric not in metrics:
        return None
    registered = registered_version(uri, run_id)
    if registered is None:
        return None
    name, version = registered
    return promote_if_better(uri, name, version, metric, metrics[metric], mode, alias)
