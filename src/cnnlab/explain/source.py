"""The training run to explain, and the images to explain it on.

A run is named by its output directory (config.yaml, checkpoints/, run.json), by its MLflow run id,
or by a model URI (models:/<name>@<alias>, models:/<name>/<version>, models:/<model id>). A logged
model is a torch.export graph without stage names, so a URI is followed to the run that logged it,
and that run's checkpoint is what gets explained: the same weights, with its modules.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from cnnlab.config import ConfigError
from cnnlab.data.datamodule import PreparedSplit, network_normalization
from cnnlab.data.decode import decode_image
from cnnlab.data.prepared import PreparedDataset
from cnnlab.data.preprocess import BatchNormalizer, center_crop, resize_sample
from cnnlab.data.sources.base import Sample
from cnnlab.restore import MissingTrainingFile, TrainingDirectory
from cnnlab.tracking.run import TrackedRun, read_run_record
from cnnlab.tracking.store import client

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pnm"}


@dataclass
class ExplainSource:
    """A trained task (eval mode, CPU), its training config, and its MLflow run if the store has it."""

    task: torch.nn.Module
    train_cfg: DictConfig
    run: Optional[TrackedRun]
    description: str


@dataclass
class ImageBatch:
    """Images as the network sees them, and as people see them, with whatever labels are known."""

    inputs: torch.Tensor  # N x C x S x S normalised
    pixels: np.ndarray  # N x S x S x C uint8
    names: list[str]
    labels: Optional[torch.Tensor] = None  # N class ids
    boxes: Optional[np.ndarray] = None  # N x 4 normalised corners
    masks: Optional[np.ndarray] = None  # N x S x S class ids (255 ignore)
    notes: list[str] = field(default_factory=list)  # conversions made to files, said to the user


# ---- the run --------------------------------------------------------------------------------------
@contextlib.contextmanager
def open_source(target: str, tracking_uri: str, checkpoint: str = "best") -> Iterator[ExplainSource]:
    """The run `target` names, loaded; downloaded artifacts live in a scratch directory while open."""
    if not target:
        raise ConfigError(
            "run is required: cnnlab-explain run=<training output dir | MLflow run id | models:/name@alias>"
        )
    with tempfile.TemporaryDirectory(prefix="cnnlab-explain-run-") as scratch:
        directory = Path(target).expanduser()
        if directory.is_dir():
            record = read_run_record(directory)
            run = TrackedRun.find(record.get("tracking_uri") or tracking_uri, record.get("run_id"))
            description = f"training directory {directory}"
        else:
            run_id = _model_run_id(target, tracking_uri) if target.startswith("models:/") else target
            if not RUN_ID.match(run_id):
                raise FileNotFoundError(
                    f"run={target!r} is not a training output directory, an MLflow run id (32 hex digits) or a "
                    "models:/ URI"
                )
            run = TrackedRun.find(tracking_uri, run_id)
            if run is None:
                raise ConfigError(f"run={target!r}: MLflow run {run_id} is not in the store {tracking_uri}")
            directory = _run_directory(run, Path(scratch))
            description = f"MLflow run {run_id}" + (f" (from {target})" if target != run_id else "")
        train_cfg, task = _load(directory, checkpoint, target)
        yield ExplainSource(task=task, train_cfg=train_cfg, run=run, description=description)


def _model_run_id(uri: str, tracking_uri: str) -> str:
    """The run that logged the model a models:/ URI names."""
    mlflow_client = client(tracking_uri)
    reference = uri[len("models:/") :].strip("/")
    try:
        if "@" in reference:
            name, alias = reference.split("@", 1)
            version = mlflow_client.get_model_version_by_alias(name, alias)
        elif "/" in reference:
            name, number = reference.rsplit("/", 1)
            version = mlflow_client.get_model_version(name, number)
        else:
            return mlflow_client.get_logged_model(reference).source_run_id
    except MlflowException as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"run={uri!r} does not resolve in the MLflow store {tracking_uri} ({reason})") from None
    if not version.run_id:
        raise ConfigError(
            f"run={uri!r}: version {version.version} of {version.name} names no run to take its checkpoint from"
        )
    return version.run_id


def _run_directory(run: TrackedRun, scratch: Path) -> Path:
    """The run's training directory if it is still on this disk, else its logged config and checkpoint."""
    tags = client(run.uri).get_run(run.run_id).data.tags
    local = Path(tags.get("cnnlab.output_dir", ""))
    if tags.get("cnnlab.output_dir") and (local / "config.yaml").is_file() and (local / "checkpoints").is_dir():
        return local
    for artifact in ("config.yaml", "checkpoints"):
        try:
            mlflow.artifacts.download_artifacts(
                run_id=run.run_id, artifact_path=artifact, dst_path=str(scratch), tracking_uri=run.uri
            )
        except Exception as err:  # MlflowException or OSError: the artifact was never logged
            raise FileNotFoundError(
                f"MLflow run {run.run_id} has no {artifact} artifact and its output directory "
                f"{local or '(unknown)'} is gone: "
                f"nothing to load ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
            ) from None
    checkpoints = sorted((scratch / "checkpoints").glob("*.ckpt"))
    if checkpoints and not (scratch / "checkpoints" / "best.ckpt").is_file():
        checkpoints[0].rename(scratch / "checkpoints" / "best.ckpt")
    return scratch


def _load(directory: Path, checkpoint: str, target: str):
    try:
        training = TrainingDirectory.open(directory)
    except MissingTrainingFile as err:
        raise FileNotFoundError(f"run={target}: {err.path} not found; give a cnnlab-train output directory") from None
    try:
        task = training.load_task(checkpoint)
    except MissingTrainingFile as err:
        raise FileNotFoundError(
            f"run={target}: no checkpoint at {err.path} (checkpoint={checkpoint}); "
            "explain needs a run that saved one (cnnlab-train writes checkpoints/best.ckpt, and logs it unless "
            "logger.log_checkpoint=false)"
        ) from None
    return training.config, task.eval()


# ---- the images -----------------------------------------------------------------------------------
def test_images(source: ExplainSource, count: int, indices: Optional[Sequence[int]] = None) -> ImageBatch:
    """The first `count` test images of the data the run was trained on (or those at `indices`), with every label the
    data has.
    """
    if source.train_cfg.data.get("storage", "arrays") == "shards":  # decoded from the shards, as evaluation does
        from cnnlab.data.datamodule import datamodule_from_config

        datamodule = datamodule_from_config(
            source.train_cfg, ("label", "box", "mask"), normalization=network_normalization(source.task)
        )
        split = datamodule.dataset("test", augment=False)
    else:
        prepared = PreparedDataset(source.train_cfg.data.prepared_dir)
        split = PreparedSplit(
            prepared, "test", None, boxes=True, masks=True, normalization=network_normalization(source.task)
        )
    positions = list(indices) if indices else list(range(min(count, len(split))))
    bad = [p for p in positions if not 0 <= p < len(split)]
    if bad:
        raise ConfigError(f"images={bad}: the test split has {len(split)} images (indices 0 to {len(split) - 1})")
    batch = split.__getitems__(positions)
    task = source.task
    return ImageBatch(
        inputs=batch["image"],
        pixels=task.denormalize(batch["image"]),
        names=[f"test{p:04d}" for p in positions],
        labels=batch["label"],
        boxes=batch["box"].numpy() if "box" in batch else None,
        masks=batch["mask"].numpy() if "mask" in batch else None,
    )


def file_images(task, path: str, count: int, crop: Optional[float] = None) -> ImageBatch:
    """Image files (one, or the first `count` under a directory), decoded, converted and resized as `prepare` did;
    `crop`: first the central square of that fraction of the shorter side (ImageNet evaluation's crop)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"images={path} does not exist: give an image file, a directory of images, or 'test'")
    files = (
        [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    )
    if not files:
        raise FileNotFoundError(f"images={path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    hp = task.hparams
    size, channels = int(hp.image_size), int(hp.in_channels)
    pixels, notes = [], []
    for file in files:
        image = decode_image(file)  # BadSampleError (a user error) for a file that is not an image
        have = 1 if image.ndim == 2 else image.shape[2]
        changes = []
        if crop:
            changes.append(f"centre-cropped to {crop:.3g} of its shorter side")
            image = center_crop(image, crop)
        pixels.append(resize_sample(Sample(image=image, label=0, name=str(file)), size, channels).image)
        if image.shape[:2] != (size, size):
            changes.append(f"resized from {image.shape[1]}x{image.shape[0]} to {size}x{size}")
        if have != channels:
            changes.append(f"converted from {have} to {channels} channels")
        if changes:
            how = "as the network was evaluated" if crop else "as prepare does for training data"
            notes.append(f"{file.name}: {' and '.join(changes)}, {how}")
    array = np.stack(pixels)
    inputs = BatchNormalizer(hp.mean or [0.0] * channels, hp.std or [1.0] * channels)(array)
    names = [f"{i:02d}_{_safe_name(file.stem)}" for i, file in enumerate(files)]  # stems may repeat across folders
    return ImageBatch(inputs=inputs, pixels=task.denormalize(inputs), names=names, notes=notes)


def _safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:60] or "image"
