"""Reading a logged model's files without running code from them.

cnnlab logs models with torch.export ("pt2"): a graph and tensors. torch.export.load unpickles parts
of the archive (sample inputs, constants) and falls back to full unpickling when the safe loader
refuses, so a crafted file could run code. Here every pickle in the archive is held to
`weights_only` (tensors and plain containers) and raw `pickle.loads` refuses any global; a pickled
model (MLflow's other PyTorch format) is refused outright.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path
from typing import Callable, Iterator

from cnnlab.config import ConfigError


def load_network(model_dir: Path) -> Callable:
    """The network of a downloaded MLflow PyTorch model directory, on the CPU; ConfigError if it is not a pt2 model."""
    from mlflow.models import Model

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
    import torch

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
    import torch
    from torch.export.pt2_archive import _package

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
