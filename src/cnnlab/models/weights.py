"""Pretrained weights by config (`model.weights=<source>`): read a source, load it into a backbone.

Sources:
  imagenet, IMAGENET1K_V1    torchvision's published ImageNet file for the model, from torch's hub cache
                             (downloaded where there is a network; `cnnlab.models.hub`)
  a `.pth` / `.pt` file      a torchvision-format state dict (ImageNet files downloaded elsewhere)
  a `.ckpt` file             a cnnlab (Lightning) checkpoint: its `network.backbone.*` tensors (older: `backbone.*`)
  a directory                a cnnlab-train output directory: its checkpoints/best.ckpt (else last.ckpt)
  runs:/<id>/model, models:/<name>@<alias>, models:/<name>/<version>   a cnnlab model in MLflow

Nothing runs code from the file: `torch.load(weights_only=True)` for files, the pt2 loader of
`tracking/model_files.py` for MLflow models. The body loads strictly (every tensor present, every
shape equal); the head (what the deepest feature map does not depend on: fc, VGG's classifier) is
taken where its shapes match and newly initialised where they do not (another number of classes).

Channel rule: 3-channel weights on 1-channel data sum the first convolution's kernels over colour,
so a grey image gives exactly what its 3-channel replica gives through the original kernels;
1-channel weights on 3-channel data spread each kernel over the three channels (divided by 3).

Normalisation the weights declare: torchvision files, ImageNet's mean and std; a cnnlab checkpoint or
model, the mean and std of the data it was trained on (averaged over colour for 1-channel data).
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from cnnlab.config import ConfigError
from cnnlab.data.prepared import file_hash
from cnnlab.models import hub
from cnnlab.models.registry import _REGISTRY, available_models
from cnnlab.models.stages import body_state_keys
from cnnlab.tracking.model_files import open_model_files

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MLFLOW_SCHEMES = ("runs:/", "models:/")
KEY = "model.weights"
# where the backbone's tensors sit: a task's network (older cnnlab: on the task itself), a logged Predictor
CHECKPOINT_PREFIXES = ("network.backbone.", "backbone.")
MODEL_PREFIXES = ("network.backbone.", "task.backbone.")


@dataclass
class PretrainedWeights:
    """A read source: its backbone tensors and what it declares about itself."""

    source: str
    kind: str  # torchvision (a plain state dict), checkpoint, mlflow
    state_dict: dict[str, torch.Tensor]
    sha256: str
    mean: Optional[list[float]] = None  # the normalisation the weights expect, where declared
    std: Optional[list[float]] = None
    architecture: Optional[str] = None  # the model name the source declares (checkpoints, MLflow models)
    run_id: Optional[str] = None  # the MLflow run the weights came from
    file: Optional[str] = None  # the file read (a run directory's checkpoint)

    def normalization(self, channels: int) -> Optional[tuple[list[float], list[float]]]:
        """(mean, std) for data of `channels` channels, or None if the weights declare none."""
        if self.mean is None or self.std is None:
            return None
        if len(self.mean) == channels:
            return list(self.mean), list(self.std)
        mean, std = sum(self.mean) / len(self.mean), sum(self.std) / len(self.std)  # grey from colour, or back
        return [mean] * channels, [std] * channels


@dataclass
class LoadReport:
    """What loading did: counts of tensors, and the keys newly initialised."""

    loaded: int
    new: list[str] = field(default_factory=list)
    channel_rule: Optional[str] = None  # e.g. "conv1.weight: summed 3 -> 1 channels"

    def params(self, weights: PretrainedWeights) -> dict[str, str]:
        """MLflow params of the run that starts from these weights."""
        params = {
            "weights.source": weights.source,
            "weights.kind": weights.kind,
            "weights.sha256": weights.sha256,
            "weights.loaded_tensors": str(self.loaded),
            "weights.new_tensors": str(len(self.new)),
        }
        if self.channel_rule:
            params["weights.channel_rule"] = self.channel_rule
        return params

    def tags(self, weights: PretrainedWeights) -> dict[str, str]:
        tags = {"cnnlab.weights": weights.source}
        if weights.run_id:
            tags["cnnlab.weights_run_id"] = weights.run_id
        return tags


# ---- reading ------------------------------------------------------------------------------------
def read_weights(
    source: str, tracking_uri: Optional[str] = None, model_name: Optional[str] = None
) -> PretrainedWeights:
    """Read `source` (see the module docstring); ConfigError naming it and what is wrong.

    `model_name` resolves a published weights name (imagenet, IMAGENET1K_V1) to that model's file."""
    if source.startswith(MLFLOW_SCHEMES):
        return _read_mlflow(source, tracking_uri)
    if hub.is_weight_name(source):
        if model_name is None:
            raise ConfigError(f"{KEY}={source}: a published weights name needs the model it is for")
        path = hub.resolve(model_name, source)
        state = _tensors_only(source, _torch_load(source, path))  # legacy names: the families' load hooks
        return PretrainedWeights(
            source, "torchvision", state, file_hash(path), IMAGENET_MEAN, IMAGENET_STD, model_name, file=str(path)
        )
    path = Path(source).expanduser()
    if path.is_dir():
        path = _run_dir_checkpoint(source, path)
    elif not path.is_file():
        raise ConfigError(
            f"{KEY}={source!r}: no such file or directory (expected a .pth/.pt state dict, a .ckpt, "
            "a cnnlab-train output directory, or runs:/<id>/model, models:/<name>@<alias>)"
        )
    loaded = _torch_load(source, path)
    digest = file_hash(path)
    if isinstance(loaded, dict) and "state_dict" in loaded and "pytorch-lightning_version" in loaded:
        return _from_checkpoint(source, path, loaded, digest)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # {"state_dict": ...} wrappers other tools save
    state = _tensors_only(source, loaded)
    return PretrainedWeights(source, "torchvision", state, digest, IMAGENET_MEAN, IMAGENET_STD, file=str(path))


def _run_dir_checkpoint(source: str, directory: Path) -> Path:
    for name in ("best", "last"):
        candidate = directory / "checkpoints" / f"{name}.ckpt"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{KEY}={source!r} is a directory without checkpoints/best.ckpt or checkpoints/last.ckpt: "
        "expected a cnnlab-train output directory"
    )


def _torch_load(source: str, path: Path):
    return load_data_only(path, f"{KEY}={source!r}")


def _named_code(path: Path, message: str) -> Optional[str]:
    """The function or class a pickle names (read, never run): from PyTorch's refusal of a torch.save
    file, else from the opcodes of a raw pickle; None for a file that is no pickle at all."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1)
    strings: list[str] = []
    try:
        with open(path, "rb") as handle:
            for opcode, argument, _ in pickletools.genops(handle):
                if opcode.name in ("GLOBAL", "INST"):
                    return str(argument).replace(" ", ".")
                if opcode.name == "STACK_GLOBAL":  # module and name are the last two strings pushed
                    return ".".join(strings[-2:])
                if isinstance(argument, str):
                    strings.append(argument)
    except Exception:  # not a pickle stream: garbage, or truncated
        return None
    return None


def load_data_only(path: Path, named: str):
    """torch.load of tensors and plain data only (weights_only=True): no code from the file runs.
    ConfigError starting with `named` for a pickle that names code, or a file that is not PyTorch's.

    PyTorch's own message is not quoted: it advises loading again with weights_only=False, which
    would run whatever the file names."""
    try:
        with warnings.catch_warnings():  # PyTorch's note on a raw pickle's protocol: the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        code = _named_code(path, str(err))
        if code:
            raise ConfigError(
                f"{named}: refused: the file is a pickle that needs code to load ({code}); cnnlab loads tensors and "
                "plain data only. Save the weights with torch.save(model.state_dict(), path) and pass that file"
            ) from None
        raise ConfigError(f"{named} is not a readable PyTorch file (truncated, or not a state dict)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        reason = f": {first[:200]}" if "weights_only" not in first else ""
        raise ConfigError(f"{named} is not a readable PyTorch file (truncated or corrupt{reason})") from None


def _tensors_only(source: str, loaded) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, dict) or not loaded:
        raise ConfigError(
            f"{KEY}={source!r} is not a state dict: the file holds a {type(loaded).__name__}, "
            "expected a dict of parameter names to tensors (model.state_dict())"
        )
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"{KEY}={source!r} is not a state dict: key {key!r} holds a {type(value).__name__}, not a tensor"
            )
    return {str(k).removeprefix("module."): v for k, v in loaded.items()}  # DataParallel's prefix


def _prefixed(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors under the first of `prefixes` that `state` has, with that prefix removed."""
    for prefix in prefixes:
        found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found
    return {}


def _from_checkpoint(source: str, path: Path, checkpoint: dict, digest: str) -> PretrainedWeights:
    state = _prefixed(checkpoint["state_dict"], CHECKPOINT_PREFIXES)
    if not state:
        raise ConfigError(f"{KEY}={source!r}: the checkpoint {path} has no backbone.* tensors: not a cnnlab checkpoint")
    hp = checkpoint.get("hyper_parameters") or {}
    model = hp.get("model") or {}
    return PretrainedWeights(
        source,
        "checkpoint",
        state,
        digest,
        hp.get("mean"),
        hp.get("std"),
        architecture=model.get("name"),
        file=str(path),
    )


def _read_mlflow(source: str, tracking_uri: Optional[str]) -> PretrainedWeights:
    if not tracking_uri:
        raise ConfigError(
            f"{KEY}={source!r} is an MLflow URI but there is no tracking store (logger=none): "
            "set logger.tracking_uri, or give a file"
        )
    with open_model_files(source, tracking_uri, key=KEY) as model:
        state = {k: v.detach().clone() for k, v in _prefixed(model.network.state_dict(), MODEL_PREFIXES).items()}
        digest = file_hash(model.files / "data" / "model.pt2") if (model.files / "data" / "model.pt2").is_file() else ""
        info = model.info
        return PretrainedWeights(
            source,
            "mlflow",
            state,
            digest,
            info.get("mean"),
            info.get("std"),
            architecture=info.get("model"),
            run_id=model.run_id,
        )


# ---- loading ------------------------------------------------------------------------------------
def first_conv_key(backbone: nn.Module) -> Optional[str]:
    """The state_dict key of the first convolution's weight (every family defines its stem first)."""
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return None


def adapt_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first-conv kernel for `channels` input channels: colour summed to grey, or grey spread to colour."""
    if weight.shape[1] == 3 and channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if weight.shape[1] == 1 and channels == 3:
        return weight.repeat(1, 3, 1, 1) / 3
    return weight


def load_weights(backbone: nn.Module, weights: PretrainedWeights, example: torch.Tensor, model_name: str) -> LoadReport:
    """Load `weights` into `backbone` (strict body, head kept where shapes match); ConfigError otherwise.

    `example`: a 1 x C x H x W input of the data's shape (finds which tensors are the body).
    """
    target = backbone.state_dict()
    state = dict(weights.state_dict)
    channel_rule = None
    conv = first_conv_key(backbone)
    if conv in state and conv in target and state[conv].dim() == 4 and state[conv].shape[1] != target[conv].shape[1]:
        adapted = adapt_channels(state[conv], target[conv].shape[1])
        if adapted.shape == target[conv].shape:
            verb = "summed" if state[conv].shape[1] > adapted.shape[1] else "spread"
            channel_rule = f"{conv}: {verb} {state[conv].shape[1]} -> {adapted.shape[1]} channels"
            state[conv] = adapted
    body = body_state_keys(backbone, example)
    for key in sorted(target):
        if key in state and state[key].shape != target[key].shape:
            if key in body:
                raise ConfigError(
                    _mismatch(
                        weights,
                        model_name,
                        f"key {key!r} has shape {list(state[key].shape)} in the weights "
                        f"but {list(target[key].shape)} in model={model_name}",
                    )
                )
            del state[key]  # the head of another number of classes: newly initialised
    result = backbone.load_state_dict(state, strict=False)  # the family's pre-hooks (legacy names) run here
    missing_body = [k for k in result.missing_keys if k in body]
    if missing_body or result.unexpected_keys:
        what = (
            f"{len(missing_body)} tensors of model={model_name} are missing from it (first: {missing_body[0]!r})"
            if missing_body
            else f"it has {len(result.unexpected_keys)} tensors model={model_name} does not "
            f"(first: {result.unexpected_keys[0]!r})"
        )
        raise ConfigError(_mismatch(weights, model_name, what))
    new = sorted(result.missing_keys)
    return LoadReport(loaded=len(target) - len(new), new=new, channel_rule=channel_rule)


def _mismatch(weights: PretrainedWeights, model_name: str, what: str) -> str:
    guess = guess_architecture(weights.state_dict)
    hint = (
        f"; the weights look like model={guess[0]} ({guess[1]} of {len(weights.state_dict)} tensors match it)"
        if guess
        else ""
    )
    declared = (
        f" (the source says it is {weights.architecture})"
        if weights.architecture and weights.architecture != model_name
        else ""
    )
    return f"{KEY}={weights.source!r} does not fit model={model_name}: {what}{declared}{hint}"


def guess_architecture(state: dict[str, torch.Tensor]) -> Optional[tuple[str, int]]:
    """(model name, tensors matching by name and shape) of the zoo architecture closest to `state`.

    Each registered model is built at its reference settings on the meta device (no memory);
    a tensor matches when its name and shape do.
    """
    best: Optional[tuple[str, int, int]] = None
    for name in available_models():
        try:
            with torch.device("meta"):
                model = _REGISTRY[name].builder(
                    num_classes=1000, in_channels=3, image_size=max(224, _REGISTRY[name].min_input_size)
                )
        except Exception:  # an architecture that needs other arguments is not a candidate
            continue
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        matched = sum(1 for k, v in state.items() if shapes.get(k) == tuple(v.shape))
        score = matched - sum(
            1 for k in shapes if k not in state
        )  # a bigger model holding all of a smaller one is not it
        if matched and (best is None or score > best[2]):
            best = (name, matched, score)
    return best[:2] if best else None
