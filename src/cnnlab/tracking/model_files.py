"""Reading a logged model's files without running code from them.

cnnlab logs models with torch.export ("pt2"): a graph and tensors. torch.export.load unpickles parts
of the archive (sample inputs, constants) and falls back to full unpickling when the safe loader
refuses, so a crafted file could run code. Here every pickle in the archive is held to
`weights_only` (tensors and plain containers) and raw `pickle.loads` refuses any global; a pickled
model (MLflow's other PyTorch format) is refused outright.

`open_model_files` downloads a logged or registered model and loads it this way: what prediction
runs, and what `model.weights=models:/...` reads its backbone from.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import mlflow
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from torch.export.pt2_archive import _package

from cnnlab.config import ConfigError
from cnnlab.tracking.model_registry import GENERIC_NAME, METADATA_KEY, use_tracking_uri
from cnnlab.tracking.store import client


@dataclass
class ModelFiles:
    """A downloaded cnnlab model: its network (normalised N x C x H x W -> one tensor) and its metadata."""

    uri: str
    network: Callable
    info: dict  # the MLmodel metadata under "cnnlab" (see tracking.model_registry.model_metadata)
    run_id: Optional[str] = None  # the MLflow run that logged it
    files: Optional[Path] = None  # the model's directory, while `open_model_files` is open


def _registered_models(tracking_uri: str) -> str:
    """'name (@alias, ...)' of the store's registered models, for error messages."""
    try:
        models = client(tracking_uri).search_registered_models(max_results=50)
    except Exception:  # the message is a hint; never let it hide the real error
        return "unknown"
    names = [m.name + (f" (@{', @'.join(sorted(m.aliases))})" if m.aliases else "") for m in models]
    return ", ".join(names) or "none"


def logged_model_uri(source: str, tracking_uri: str, key: str = "model_uri") -> str:
    """runs:/<run id>[/<name>] -> models:/<model id> of the LoggedModel that run logged under that name.

    MLflow 3 keeps logged models apart from a run's artifacts, so the runs:/ path cannot be downloaded as
    is. A cnnlab run logs one model, named after what it is (model_registry.logged_model_name); no name or
    "model" means that one."""
    run_id, _, name = source.removeprefix("runs:/").partition("/")
    name = name.strip("/")
    store = client(tracking_uri)
    try:
        run = store.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"{key}={source!r}: there is no run {run_id!r} in the MLflow store {tracking_uri}") from None
    models = [store.get_logged_model(output.model_id) for output in (run.outputs.model_outputs if run.outputs else [])]
    named = [m for m in models if m.name == name]
    if not named and name in ("", GENERIC_NAME) and len(models) == 1:
        named = models
    if named:
        return f"models:/{named[-1].model_id}"
    logged = ", ".join(m.name for m in models) or "none"
    raise ConfigError(
        f"{key}={source!r}: run {run_id} logged no model named {name or GENERIC_NAME!r} (its models: {logged}; "
        "train with logger.log_model=true, or give its checkpoint)"
    )


@contextlib.contextmanager
def open_model_files(model_uri: str, tracking_uri: str, key: str = "model_uri") -> Iterator[ModelFiles]:
    """Download and load a cnnlab model (models:/name@alias, models:/name/version, models:/<id>,
    runs:/<run id>[/<name>], or a local model directory); ConfigError naming the URI when it cannot be found
    or is not a cnnlab model."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="cnnlab-model-") as scratch:
        local = Path(model_uri)
        if not (local.is_dir() and (local / "MLmodel").is_file()):
            source = logged_model_uri(model_uri, tracking_uri, key) if model_uri.startswith("runs:/") else model_uri
            try:
                with use_tracking_uri(tracking_uri):
                    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=scratch))
            except (MlflowException, OSError, ValueError) as err:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ConfigError(
                    f"{key}={model_uri!r} was not found in the MLflow store {tracking_uri} ({reason}). "
                    f"Registered models there: {_registered_models(tracking_uri)}"
                ) from None
        if not (local / "MLmodel").is_file():
            raise ConfigError(f"{key}={model_uri!r} is not an MLflow model (no MLmodel file in it)")
        mlmodel = Model.load(str(local))
        info = (mlmodel.metadata or {}).get(METADATA_KEY)
        if not info:
            raise ConfigError(
                f"{key}={model_uri!r} is an MLflow model without cnnlab metadata; "
                "log it with cnnlab.tracking.models.log_model (cnnlab-train does)"
            )
        yield ModelFiles(uri=model_uri, network=load_network(local), info=info, run_id=mlmodel.run_id, files=local)


def load_network(model_dir: Path) -> Callable:
    """The network of a downloaded MLflow PyTorch model directory, on the CPU; ConfigError if it is not a pt2 model."""
    flavor = Model.load(str(model_dir)).flavors.get("pytorch") or {}
    exported = Path(model_dir) / flavor.get("model_data", "data") / "model.pt2"
    if not exported.is_file():
        raise ConfigError(
            f"{model_dir} holds a PyTorch model saved with pickle (format "
            f"{flavor.get('serialization_format', 'pickle')!r}); "
            "cnnlab loads only torch.export (pt2) models, whose loading runs no code: log it again with cnnlab-train"
        )
    return load_exported_program(exported).module()


def load_exported_program(path: Path):
    """torch.export.load with every pickle in the archive held to data; ConfigError naming the file otherwise."""
    with _pickles_hold_data_only():
        try:
            return torch.export.load(str(path))
        except (pickle.UnpicklingError, RuntimeError, ValueError, AttributeError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"{path}: refused to load: part of the archive is not plain tensors and data, and "
                f"loading it could run code ({reason[:300]})"
            ) from None


class _RefuseGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"the pickle wants {module}.{name}: code, not data")


class _DataOnlyPickle:
    """What torch.export's archive reader reaches as `pickle` while loading: `loads` takes plain data only."""

    def __getattr__(self, name: str):
        return getattr(pickle, name)

    @staticmethod
    def loads(data: bytes, *args, **kwargs):
        return _RefuseGlobals(io.BytesIO(data)).load()


@contextlib.contextmanager
def _pickles_hold_data_only() -> Iterator[None]:
    """While torch.export.load runs: torch.load always with weights_only=True, and no raw pickle.loads of code."""
    original_load = torch.load

    def weights_only_load(*args, **kwargs):
        kwargs["weights_only"] = True  # torch.export passes weights_only=False for its fallbacks
        return original_load(*args, **kwargs)

    saved_pickle = _package.pickle
    torch.load, _package.pickle = weights_only_load, _DataOnlyPickle()
    try:
        yield
    finally:
        torch.load, _package.pickle = original_load, saved_pickle
