"""All the pictures for one run: made in a scratch directory, then kept and logged only when all exist.

Layout (the same on disk and in the MLflow run, under explain/):

  activations/<image>_<stage>_stride<s>.png   the image, then its channels in that stage
  filters/first_conv.png                      the first convolution's kernels
  filters/patterns.png                        per chosen layer, inputs that maximise its first filters
  cam/<method>_<layer>.png                    class-activation maps over the images
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from cnnlab.config import ConfigError
from cnnlab.explain.activations import write_activations
from cnnlab.explain.cam import CAM_METHODS, DEFAULT_CAM_METHODS, class_maps, plot_class_cams
from cnnlab.explain.filters import layer_patterns, write_first_conv, write_patterns
from cnnlab.explain.layers import LayerRef, first_conv, resolve_layer, stage_names
from cnnlab.explain.source import ExplainSource, ImageBatch, file_images, open_source, test_images
from cnnlab.models.hub import IMAGENET_CROP
from cnnlab.pretrained import describe, imagenet_task, is_pretrained_request
from cnnlab.tracking.run import TrackedRun
from cnnlab.tracking.store import resolve_tracking_uri

log = logging.getLogger(__name__)

PICTURES = ("activations", "filters", "cam")
ARTIFACT_DIR = "explain"


@dataclass
class PictureSettings:
    """Which pictures, of which layers (None: the defaults below)."""

    pictures: Sequence[str] = PICTURES
    max_channels: int = 64  # channels shown per stage in the activation grids
    cam_layer: Optional[str] = None  # None: the deepest stage, the usual Grad-CAM layer
    cam_methods: Sequence[str] = DEFAULT_CAM_METHODS
    cam_smooth: bool = True  # the mean over mirrored and enlarged views (cnnlab.explain.cam)
    class_index: Optional[int] = None  # None: predicted and true class (every class for dense tasks)
    filter_layers: Optional[Sequence[str]] = None  # None: every stage, shallow to deep
    filter_count: int = 8  # filters per layer whose preferred input is drawn
    filter_steps: int = 32  # gradient ascent steps (one batch for all layers)
    seed: int = 0


@dataclass
class Plan:
    """Settings checked against one network: every name resolved before any picture is made."""

    settings: PictureSettings
    cam_ref: LayerRef
    filter_refs: list[LayerRef]


def plan(task, settings: PictureSettings, prefix: str = "") -> Plan:
    """Check the settings against `task`'s network; ConfigError naming the key and the valid values."""
    unknown = [p for p in settings.pictures if p not in PICTURES]
    if unknown:
        raise ConfigError(f"{prefix}pictures has {unknown}; valid pictures: {', '.join(PICTURES)}")
    methods = [m for m in settings.cam_methods if m not in CAM_METHODS]
    if methods:
        raise ConfigError(f"{prefix}cam.methods has {methods}; valid methods: {', '.join(CAM_METHODS)}")
    names = task.class_names
    if settings.class_index is not None and not 0 <= settings.class_index < len(names):
        listing = ", ".join(f"{i}={name}" for i, name in enumerate(names))
        raise ConfigError(
            f"{prefix}cam.class_index={settings.class_index} is out of range: this model has {len(names)} classes "
            f"({listing})"
        )
    backbone = task.backbone
    cam_ref = resolve_layer(backbone, settings.cam_layer or stage_names(backbone)[-1], f"{prefix}cam.layer")
    layers = settings.filter_layers if settings.filter_layers else stage_names(backbone)
    filter_refs = [resolve_layer(backbone, name, f"{prefix}filters.layers") for name in layers]
    return Plan(settings, cam_ref, filter_refs)


def make_pictures(task, batch: ImageBatch, checked: Plan, directory: Path) -> list[Path]:
    """Every picture `checked.settings` asks for, written under `directory`; returns the files."""
    settings = checked.settings
    torch.manual_seed(settings.seed)
    task = task.eval()
    files: list[Path] = []
    if "activations" in settings.pictures:
        files += _activations(task, batch, settings, directory / "activations")
    if "filters" in settings.pictures:
        files += _filters(task, checked, directory / "filters")
    if "cam" in settings.pictures:
        files += _cams(task, batch, checked, directory / "cam")
    return files


def _activations(task, batch: ImageBatch, settings: PictureSettings, directory: Path) -> list[Path]:
    backbone = task.backbone
    with torch.no_grad():
        maps = backbone.forward_features(task.network_input(batch.inputs))
    return write_activations(
        batch.pixels,
        maps,
        stage_names(backbone),
        backbone.feature_strides,
        batch.names,
        directory,
        settings.max_channels,
    )


def _filters(task, checked: Plan, directory: Path) -> list[Path]:
    settings = checked.settings
    name, conv = first_conv(task.backbone)
    files = [write_first_conv(conv.weight, name, directory / "first_conv.png")]
    patterns = layer_patterns(task, checked.filter_refs, settings.filter_count, settings.filter_steps, settings.seed)
    rows = [(ref.name, pictures, count) for ref, (pictures, count) in zip(checked.filter_refs, patterns)]
    files.append(write_patterns(rows, directory / "patterns.png"))
    return files


def _cams(task, batch: ImageBatch, checked: Plan, directory: Path) -> list[Path]:
    settings = checked.settings
    names = task.class_names
    count = len(batch.inputs)
    with torch.no_grad():
        predicted = task.cam_prediction(task(batch.inputs))
    if settings.class_index is not None:
        targets = [
            (f"class {names[settings.class_index]}", torch.full((count,), settings.class_index, dtype=torch.long))
        ]
    elif predicted.classes is not None:
        targets = [("predicted", predicted.classes)]
        if batch.labels is not None:
            targets.append(("true", batch.labels))
    else:  # no one class per image: a map for every class
        targets = [(name, torch.full((count,), k, dtype=torch.long)) for k, name in enumerate(names)]
    row_titles = []
    for i in range(count):
        parts = [batch.names[i]]
        if batch.labels is not None and predicted.classes is not None:
            parts.append(f"true {names[int(batch.labels[i])]}")
        if predicted.classes is not None:
            parts.append(f"pred {names[int(predicted.classes[i])]} {float(predicted.scores[i]):.2f}")
        if predicted.masks is not None:
            present = np.unique(predicted.masks[i].numpy())
            parts.append("pred " + ",".join(names[k] for k in present if 0 < k < len(names)))
        row_titles.append("\n".join(parts))
    boxes = predicted.boxes.numpy() if predicted.boxes is not None else None
    true_boxes = batch.boxes if boxes is not None else None
    # the true objects (mask ids other than background 0 and ignore 255) outlined where the task predicts masks
    outlines = (
        (batch.masks != 0) & (batch.masks != 255) if batch.masks is not None and predicted.masks is not None else None
    )
    files = []
    for method in settings.cam_methods:
        columns = []
        for label, classes in targets:
            maps = class_maps(task, batch.inputs, checked.cam_ref, classes, method, settings.cam_smooth)
            captions = [names[int(k)] for k in classes]
            columns.append((label, maps, captions))
        title = (
            f"{method} at {checked.cam_ref.name}"
            + (", smoothed" if settings.cam_smooth else "")
            + (" (boxes: red predicted, green true)" if boxes is not None else "")
        )
        title += " (white: true objects)" if outlines is not None else ""
        path = directory / f"{method}_{checked.cam_ref.name}.png"
        files.append(
            plot_class_cams(
                batch.pixels,
                columns,
                row_titles,
                path,
                predicted_boxes=boxes,
                true_boxes=true_boxes,
                outlines=outlines,
                title=title,
            )
        )
    return files


def write_pictures(task, batch: ImageBatch, checked: Plan, output_dir: Path) -> list[Path]:
    """Make every picture in a scratch directory; only when all exist, move them to `output_dir`
    (replacing earlier pictures of the same kinds there, and nothing else)."""
    output_dir = Path(output_dir)
    with tempfile.TemporaryDirectory(prefix="cnnlab-explain-") as scratch:
        made = make_pictures(task, batch, checked, Path(scratch))
        for folder in PICTURES:
            if (output_dir / folder).is_dir():
                shutil.rmtree(output_dir / folder)
        shutil.copytree(scratch, output_dir, dirs_exist_ok=True)
        return [output_dir / path.relative_to(scratch) for path in made]


def log_pictures(run: TrackedRun, output_dir: Path, files: Sequence[Path], artifact_dir: str = ARTIFACT_DIR) -> None:
    """Log pictures made by `write_pictures` into `run` (a TrackedRun) under `artifact_dir`/, keeping their folders."""
    for path in files:
        folder = Path(path).parent.relative_to(output_dir).as_posix()
        run.log_artifact(Path(path), artifact_dir if folder == "." else f"{artifact_dir}/{folder}")
    log.info("logged %d pictures into MLflow run %s under %s/", len(files), run.run_id, artifact_dir)


# ---- cnnlab-explain and cnnlab-evaluate -----------------------------------------------------------
@dataclass
class ExplainResult:
    files: list[Path]
    output_dir: Path
    images: int
    run_id: Optional[str]  # the MLflow run the pictures were logged into, if any


def settings_from_config(cfg) -> PictureSettings:
    """PictureSettings from cnnlab-explain's config (conf/explain.yaml) or evaluate.explain_settings."""
    return PictureSettings(
        pictures=list(cfg.get("pictures") or PICTURES),
        max_channels=int(cfg.activations.max_channels),
        cam_layer=cfg.cam.layer,
        cam_methods=list(cfg.cam.methods),
        cam_smooth=bool(cfg.cam.smooth),
        class_index=cfg.cam.class_index,
        filter_layers=list(cfg.filters.layers) or None,
        filter_count=int(cfg.filters.count),
        filter_steps=int(cfg.filters.steps),
        seed=int(cfg.get("seed", 0)),
    )


def explain_run(cfg) -> ExplainResult:
    """cnnlab-explain: load the run, check every name, make the pictures, keep and log them."""
    uri = resolve_tracking_uri(cfg.tracking_uri)
    pretrained = is_pretrained_request(cfg.get("model"))
    if pretrained and str(cfg.images) == "test":
        raise ConfigError(
            f"images=test: {describe(cfg.model)} was not trained here, so it has no test split; "
            "give images=<an image file or a directory of them>"
        )
    opened = (
        contextlib.nullcontext(ExplainSource(imagenet_task(cfg.model), None, None, describe(cfg.model)))
        if pretrained
        else open_source(str(cfg.run), uri, cfg.checkpoint)
    )
    with opened as source:
        checked = plan(source.task, settings_from_config(cfg))
        if cfg.num_images < 1:
            raise ConfigError(f"num_images={cfg.num_images}: give at least 1")
        if str(cfg.images) == "test":
            batch = test_images(source, cfg.num_images, list(cfg.indices))
        else:
            crop = IMAGENET_CROP if pretrained else None  # read the way the network was evaluated
            batch = file_images(source.task, str(cfg.images), cfg.num_images, crop)
        for note in batch.notes:
            print(f"note: {note}", file=sys.stderr)
        run = source.run if cfg.log else None
        if cfg.log and run is None and not pretrained:  # a pretrained network has no run: files only
            print(
                f"warning: {source.description} has no MLflow run in {uri}; pictures are written to files only",
                file=sys.stderr,
            )
        files = write_pictures(source.task, batch, checked, Path(cfg.output_dir))
        if run is not None:
            log_pictures(run, Path(cfg.output_dir), files)
    return ExplainResult(
        files=files, output_dir=Path(cfg.output_dir), images=len(batch.names), run_id=run.run_id if run else None
    )


def explain_evaluation(task, train_cfg, evaluate_cfg, directory: Path) -> list[Path]:
    """cnnlab-evaluate with evaluate.explain=true: the default pictures of the first
    evaluate.explain_images test images, written under `directory` (the evaluation's plots)."""
    checked = plan(task, PictureSettings(), prefix="evaluate.explain: ")
    batch = test_images(
        ExplainSource(task=task, train_cfg=train_cfg, run=None, description="evaluation"),
        int(evaluate_cfg.get("explain_images", 8)),
    )
    return write_pictures(task.cpu().eval(), batch, checked, directory)
