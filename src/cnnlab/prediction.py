"""Predictions for new image files (or audio files, for a model trained on spectrograms) from a
logged or registered cnnlab model.

The model brings its own preprocessing facts (see cnnlab.tracking.model_registry): its "input" spec
says how a file becomes an image (cnnlab.data.inputs: decoded as prepare decodes images, or turned
into the same log-mel spectrogram as its training clips), and the image is converted to its
channels, resized to its input size and normalised with the statistics of its training data,
exactly as `prepare` and evaluation do. Results go to one CSV (and, for segmentation, one mask PNG
per image). An image that cannot be read is never dropped silently: it gets a CSV row whose `error`
column says why, and a warning on stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import matplotlib
import numpy as np
import torch
from PIL import Image

from cnnlab import tasks
from cnnlab.config import ConfigError
from cnnlab.data.inputs import IMAGE_SUFFIXES, InputReader, all_suffixes, input_reader
from cnnlab.data.preprocess import BatchNormalizer, center_crop, resize_sample
from cnnlab.data.sources.base import BadSampleError, Sample
from cnnlab.models import hub
from cnnlab.pretrained import describe, imagenet_task
from cnnlab.tables import write_csv
from cnnlab.tasks.base import PredictionInput
from cnnlab.tracking.model_files import ModelFiles, open_model_files
from cnnlab.tracking.store import resolve_tracking_uri

PREDICTIONS_FILE = "predictions.csv"
MASKS_DIR = "masks"


class UnreadableImage(ValueError):
    """An input file that is not a decodable image; the message names it."""


class LoadedModel(ModelFiles):
    """A cnnlab model ready to run: the network (normalised N x C x H x W -> one tensor), its metadata,
    and what its metadata means here (its task's CSV rows, its input reader, its normalisation)."""

    @property
    def task(self) -> str:
        return self.info["task"]

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    @cached_property
    def task_class(self):
        """The task's class, which turns outputs into CSV rows: looked up by the metadata's task name in cnnlab's
        registry of tasks (a model directory is data: no class path read from it is ever imported)."""
        try:
            return tasks.task_class(str(self.task))
        except ConfigError as err:
            raise ConfigError(f"model_uri={self.uri!r}: its metadata names an {err}") from None

    @cached_property
    def reader(self) -> InputReader:
        """How this model's input files become images: its metadata's "input" spec (images when absent)."""
        try:
            return input_reader(self.info.get("input"))
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model_uri={self.uri!r}: its metadata's input spec cannot be used here: {err}") from None

    @cached_property
    def normalize(self):
        """Evaluation's normalisation: the training split's statistics, a batch at a time."""
        return BatchNormalizer(self.info["mean"], self.info["std"])


@dataclass
class PredictionResult:
    csv_path: Path
    rows: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row.get("error")]


# ---- the model ------------------------------------------------------------------------------------
@contextlib.contextmanager
def open_model(model_uri: str, tracking_uri: str, key: str = "model_uri") -> Iterator[LoadedModel]:
    """Download and load a cnnlab model (models:/name@alias, models:/name/version, models:/<id>, or a local
    model directory); ConfigError naming the URI when it cannot be found or is not a cnnlab model."""
    with open_model_files(model_uri, tracking_uri, key) as model:
        loaded = LoadedModel(model.uri, model.network, model.info, model.run_id, model.files)
        _ = loaded.task_class  # an unknown task fails here, before any file is read
        yield loaded


def open_pretrained(model_cfg) -> LoadedModel:
    """A zoo network with published ImageNet weights, used as it is (cnnlab.pretrained); inputs are read as
    torchvision evaluates them (centre crop of 224/256 of the shorter side, then 224 px)."""
    task = imagenet_task(model_cfg)
    info = {
        "task": task.name,
        "class_names": list(task.hparams.class_names),
        "image_size": task.hparams.image_size,
        "channels": task.hparams.in_channels,
        "mean": task.hparams.mean,
        "std": task.hparams.std,
        "center_crop": hub.IMAGENET_CROP,
    }
    return LoadedModel(describe(model_cfg), task.network.predict, info)


# ---- the images -----------------------------------------------------------------------------------
def list_images(
    input_path: str | Path, suffixes: Iterable[str] = IMAGE_SUFFIXES, what: str = "image"
) -> tuple[Path, list[Path]]:
    """(base directory, input files): the file itself, or the files under a directory with one of
    `suffixes` (the model's kind of input: image files by default), sorted.

    Files with other suffixes, and hidden files, are left out of a directory listing (a stray README
    is not an unreadable image); a file named directly is always attempted.
    """
    suffixes = set(suffixes)
    path = Path(input_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input={input_path} does not exist: give an {what} file or a directory of them")
    if path.is_file():
        return path.parent, [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise FileNotFoundError(f"input={input_path} holds no {what} files ({', '.join(sorted(suffixes))})")
    return path, files


def read_image(path: Path, model: Optional[LoadedModel] = None) -> np.ndarray:
    """An input file as H x W x C uint8 (C = 1 or 3; alpha dropped, 16-bit scaled); UnreadableImage if it is not one.

    The reader of the model's input kind (an image decoder by default), the same as `prepare`'s, so
    a model sees new files exactly as it saw its training data.
    """
    read = model.reader.read if model is not None else input_reader(None).read
    try:
        return read(path)
    except BadSampleError as err:
        raise UnreadableImage(str(err)) from None


def preprocess(image: np.ndarray, model: LoadedModel, name: str):
    """H x W x C uint8 -> the network's C x S x S float tensor: channels and resize as `prepare`, normalise as
    evaluation.
    """
    if model.info.get("center_crop"):  # a network evaluated the ImageNet way
        image = center_crop(image, model.info["center_crop"])
    try:
        resized = resize_sample(
            Sample(image=image, label=0, name=name), model.info["image_size"], model.info["channels"]
        ).image
    except BadSampleError as err:
        raise UnreadableImage(str(err)) from None
    return model.normalize(resized[None])[0]


# ---- outputs --------------------------------------------------------------------------------------
def mask_palette() -> list[int]:
    """A flat RGB palette: class ids stay the pixel values (VOC's convention), with colours to look at."""
    colours = matplotlib.colormaps["tab20"].resampled(20)
    palette = [0, 0, 0]  # background
    for index in range(1, 256):
        r, g, b, _ = colours((index - 1) % 20)
        palette += [round(r * 255), round(g * 255), round(b * 255)]
    return palette


def _mask_path(output_dir: Path, base: Path, file: Path, taken: set[Path]) -> Path:
    """output_dir/masks/<relative dir>/<stem>.png; <name>.png when two inputs share a stem."""
    relative = file.relative_to(base) if file.is_relative_to(base) else Path(file.name)
    path = output_dir / MASKS_DIR / relative.with_suffix(".png")
    if path in taken:
        path = output_dir / MASKS_DIR / relative.parent / f"{relative.name}.png"
    taken.add(path)
    return path


def _rows_for_batch(
    model: LoadedModel,
    outputs: np.ndarray,
    batch: list[tuple[Path, str, np.ndarray]],
    output_dir: Path,
    base: Path,
    top_k: int,
    taken: set[Path],
) -> list[dict]:
    """One CSV row per image, made by the model's task from the image's output."""

    def mask_saver(file: Path) -> Callable[[np.ndarray], str]:
        def save(mask: np.ndarray) -> str:
            path = _mask_path(output_dir, base, file, taken)
            path.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(mask, mode="P")
            picture.putpalette(mask_palette())
            picture.save(path)
            return path.relative_to(output_dir).as_posix()

        return save

    rows = []
    for output, (file, display, image) in zip(outputs, batch):
        height, width = image.shape[:2]
        context = PredictionInput(height, width, model.class_names, top_k, mask_saver(file))
        rows.append({"file": display, "error": "", **model.task_class.prediction_row(output, context)})
    return rows


def predict_files(
    model: LoadedModel,
    base: Path,
    files: Sequence[Path],
    output_dir: Path,
    batch_size: int = 64,
    top_k: int = 3,
    warn: Callable[[str], None] | None = None,
) -> PredictionResult:
    """Predict every file, in batches; write output_dir/predictions.csv (and masks/) and return the rows."""
    if batch_size < 1 or top_k < 1:
        raise ConfigError(f"batch_size={batch_size} and top_k={top_k} must be at least 1")
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    output_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    taken: set[Path] = set()
    for start in range(0, len(files), batch_size):
        batch, tensors = [], []
        for file in files[start : start + batch_size]:
            display = file.relative_to(base).as_posix() if file.is_relative_to(base) else str(file)
            try:
                image = read_image(file, model)
                tensors.append(preprocess(image, model, str(file)))
            except UnreadableImage as err:
                warn(f"{err}; skipped (listed in {PREDICTIONS_FILE} with the error)")
                rows.append({"file": display, "error": str(err)})
                continue
            batch.append((file, display, image))
        if not batch:
            continue
        with torch.no_grad():
            outputs = model.network(torch.stack(tensors)).detach().cpu().float().numpy()
        rows.extend(_rows_for_batch(model, outputs, batch, output_dir, base, top_k, taken))
    order = {
        (file.relative_to(base).as_posix() if file.is_relative_to(base) else str(file)): i
        for i, file in enumerate(files)
    }
    rows.sort(key=lambda row: order.get(row["file"], len(order)))  # input order, unreadable files in place
    csv_path = output_dir / PREDICTIONS_FILE
    columns = ["file", *model.task_class.prediction_columns, "error"]
    write_csv(csv_path, columns, ([row.get(column, "") for column in columns] for row in rows))
    return PredictionResult(csv_path=csv_path, rows=rows)


def predict(
    model_uri: Optional[str],
    input_path: str | Path,
    output_dir: str | Path,
    tracking_uri: Optional[str] = None,
    batch_size: int = 64,
    top_k: int = 3,
    pretrained=None,
) -> PredictionResult:
    """cnnlab-predict: load the model (`model_uri`, or the `pretrained` model config: a zoo network with
    published weights), predict the input file or directory, write the outputs.

    Raises FileNotFoundError for a missing input and ConfigError for an unknown model; when every
    image is unreadable, ConfigError after the CSV listing them is written.
    """
    if pretrained is None and (not model_uri or not str(model_uri).strip()):
        raise ConfigError(
            "model_uri is empty: give models:/<name>@<alias>, models:/<name>/<version> or models:/<model id>"
        )
    list_images(input_path, all_suffixes(), "image or audio")  # before loading: a typo in input fails at once
    opened = (
        contextlib.nullcontext(open_pretrained(pretrained))
        if pretrained is not None
        else open_model(str(model_uri), resolve_tracking_uri(tracking_uri))
    )
    with opened as model:
        base, files = list_images(input_path, model.reader.suffixes, model.reader.kind)  # the files of the model's kind
        result = predict_files(model, base, files, Path(output_dir), batch_size=batch_size, top_k=top_k)
    if len(result.failed) == len(result.rows):
        raise ConfigError(
            f"none of the {len(result.rows)} input files could be read (see the error column of {result.csv_path})"
        )
    return result


def serving_request(model_uri: str, input_path: str | Path, tracking_uri: Optional[str] = None) -> dict:
    """The JSON body for `mlflow models serve`'s /invocations that asks what cnnlab-predict would for
    the images at `input_path`: {"inputs": N x C x S x S}, read, resized and normalised the same way."""
    with open_model(str(model_uri), resolve_tracking_uri(tracking_uri)) as model:
        _, files = list_images(input_path, model.reader.suffixes, model.reader.kind)
        return {"inputs": [preprocess(read_image(path, model), model, path.name).tolist() for path in files]}


if __name__ == "__main__":  # python -m cnnlab.prediction <model_uri> <input> > request.json
    json.dump(serving_request(sys.argv[1], sys.argv[2]), sys.stdout)
