"""What a shard holds, written and read back: the per-sample work of data.storage=shards.

Kept apart from `cnnlab.data.shards` (LitData, torch): prepare's decode processes import this module alone, so
each starts in a fraction of a second and a few tens of MB; the DataLoader workers run `RecordDecoder`.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from cnnlab.data.decode import decode_image_bytes, sniff_format
from cnnlab.data.preprocess import resize_sample, to_channels
from cnnlab.data.sources.base import BadSampleError, Sample, Source

log = logging.getLogger(__name__)


def record_item(source: Source, item: Any, channels: int, max_side: Optional[int]) -> dict:
    """One shard record: the image's encoded bytes (the file's own where the reader has them), label, name,
    and the box (normalised) and mask (PNG) where the source has them."""
    sample = source.load(item)
    image = to_channels(sample.image, channels, sample.name)
    height, width = image.shape[:2]
    encoded = source.encoded_bytes(item) if hasattr(source, "encoded_bytes") else None
    mask = sample.mask
    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) if mask is not None else None
        encoded = _encode(image, "jpeg" if encoded is None or sniff_format(encoded) == "jpeg" else "png")
    elif encoded is None:  # decoded arrays (MNIST, CIFAR-10, generated shapes): lossless
        encoded = _encode(image, "png")
    # as uint8 arrays: LitData would otherwise recognise JPEG bytes and decode them with torchvision on read
    # (the name too: LitData reads a string ending in .jpg as a path to an image file)
    record = {
        "image": np.frombuffer(encoded, np.uint8),
        "label": int(sample.label),
        "name": np.frombuffer(sample.name.encode(), np.uint8),
    }
    if sample.box is not None:
        x_min, y_min, x_max, y_max = sample.box
        record["box"] = np.array([x_min / width, y_min / height, x_max / width, y_max / height], np.float32)
    if mask is not None:
        record["mask"] = np.frombuffer(_encode(mask, "png"), np.uint8)
    return record


def _encode(image: np.ndarray, kind: str) -> bytes:
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if kind == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buffer = cv2.imencode(".jpg" if kind == "jpeg" else ".png", image, params)
    if not ok:
        raise BadSampleError(f"could not encode a {image.shape} image as {kind}")
    return buffer.tobytes()


class RecordDecoder:
    """A shard record -> {image: size x size x C uint8, label, box, mask}, or None for a bad sample under skip."""

    def __init__(self, image_size: int, channels: int, crop: Optional[Sequence[float]], on_bad_sample: str):
        self.image_size, self.channels, self.crop, self.on_bad_sample = image_size, channels, crop, on_bad_sample
        self._crop = None

    def _cropper(self):
        if self._crop is None:
            import albumentations as A

            self._crop = A.RandomResizedCrop(
                size=(self.image_size, self.image_size), scale=tuple(self.crop), ratio=(3 / 4, 4 / 3), p=1.0
            )
        return self._crop

    def __call__(self, record: dict, seed: tuple[int, int, int]) -> Optional[dict]:
        # this sample's crop and its batch's augmentation (if it comes first) from (seed, epoch, sample)
        crop_seed, augment_seed = (int(v) for v in np.random.SeedSequence([s % 2**63 for s in seed]).generate_state(2))
        name = np.asarray(record.get("name", np.frombuffer(b"?", np.uint8))).tobytes().decode(errors="replace")
        try:
            image = decode_image_bytes(
                np.asarray(record["image"]).tobytes(), name, min_side=None if self.crop else self.image_size
            )
            mask = None
            if "mask" in record:
                mask = cv2.imdecode(np.asarray(record["mask"], np.uint8), cv2.IMREAD_UNCHANGED)
                if mask is None:
                    raise BadSampleError(f"{name}: its mask in the shard is not a readable PNG")
                if mask.shape[:2] != image.shape[:2]:  # decoded at a reduced scale
                    image = cv2.resize(image, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_AREA)
            box = None
            if "box" in record:
                height, width = image.shape[:2]
                x_min, y_min, x_max, y_max = (float(v) for v in record["box"])
                box = (x_min * width, y_min * height, x_max * width, y_max * height)
            sample = Sample(image=image, label=int(record["label"]), name=name, box=box, mask=mask)
            if self.crop:
                sample = self._random_crop(sample, crop_seed)
            else:
                sample = resize_sample(sample, self.image_size, self.channels)
        except (BadSampleError, KeyError) as err:
            if self.on_bad_sample != "skip":
                raise BadSampleError(
                    f"{err} (data.on_bad_sample=error; set it to skip to leave such samples out)"
                ) from None
            log.warning("skipping %s", err)
            return None
        return {
            "image": sample.image,
            "label": sample.label,
            "box": sample.box,
            "mask": sample.mask,
            "seed": augment_seed,
            "name": name,
        }

    def _random_crop(self, sample: Sample, seed: int) -> Sample:
        image = to_channels(sample.image, self.channels, sample.name)
        crop = self._cropper()
        crop.set_random_seed(seed)
        out = crop(image=image, **({"mask": sample.mask} if sample.mask is not None else {}))
        image = out["image"] if out["image"].ndim == 3 else out["image"][:, :, None]
        return Sample(image=image, label=sample.label, name=sample.name, mask=out.get("mask"))
