"""Write tiny datasets in each source's own on-disk format, for the reader tests."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from cnnlab.data.sources.voc import VOC_CLASSES


def image_array(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A smooth image (compresses well, survives JPEG) with some per-seed variation."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, channels)
    slope = rng.uniform(-2, 2, (2, channels))
    image = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image[..., 0] if channels == 1 else image


def write_image(path: Path, array: np.ndarray, mode: Optional[str] = None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(path, **save)
    return path


def encoded(array: np.ndarray, fmt: str, mode: Optional[str] = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(buffer, fmt)
    return buffer.getvalue()


# ---- MNIST idx ------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file: magic 0x0000 08 <ndim>, big-endian dims, then uint8 data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, train: int = 12, test: int = 6, gzipped: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if gzipped:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        written[prefix] = (images, labels)
    return written


# ---- CIFAR-10 pickles -----------------------------------------------------------------------
CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0, batches: tuple[str, ...] = ()) -> dict:
    """cifar-10-batches-py/ with the real dict keys; returns {batch name: (images N x 32 x 32 x 3, labels)}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = batches or (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
    for number, name in enumerate(names):
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(per_batch) + number) % 10]
        batch = {
            b"batch_label": f"{name} of 5".encode(),
            b"labels": labels,
            b"data": images.transpose(0, 3, 1, 2).reshape(per_batch, -1),  # R plane, G plane, B plane
            b"filenames": [f"img_{number}_{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        written[name] = (images, np.array(labels))
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(
            {b"num_cases_per_batch": per_batch, b"label_names": CIFAR_NAMES, b"num_vis": 3072}, handle, protocol=2
        )
    return written


# ---- Pascal VOC -----------------------------------------------------------------------------
def voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved class index), 256 RGB triples."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def write_palette_png(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)
    return path


def voc_xml(name: str, width: int, height: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    parts = [
        f"<annotation><folder>VOC2012</folder><filename>{name}.jpg</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>1</segmented>",
    ]
    for cls, (x0, y0, x1, y1) in objects:
        parts.append(
            f"<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts)


def write_voc_sample(
    root: Path, image_id: str, width: int, height: int, objects, seed: int = 0, mask_override=None
) -> dict:
    """One VOC image with its XML (1-based inclusive boxes) and a palette mask painting each object's box."""
    write_image(root / "JPEGImages" / f"{image_id}.jpg", image_array(height, width, seed), quality=95)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, width, height, objects))
    mask = np.zeros((height, width), np.uint8)
    for cls, (x0, y0, x1, y1) in objects:
        mask[y0 - 1 : y1, x0 - 1 : x1] = VOC_CLASSES.index(cls) + 1 if cls in VOC_CLASSES else 0
        mask[y0 - 1, x0 - 1 : x1] = 255  # a boundary line, as VOC draws them
    if mask_override is not None:
        mask = mask_override
    write_palette_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    return {"mask": mask, "objects": objects}


def write_voc(root: Path, train: dict, val: dict, subset_folder: str = "Segmentation") -> None:
    """train/val: {image_id: (width, height, objects)}; writes the files and the two list files."""
    for split, samples in (("train", train), ("val", val)):
        for seed, (image_id, (width, height, objects)) in enumerate(samples.items()):
            write_voc_sample(root, image_id, width, height, objects, seed=seed)
        lists = root / "ImageSets" / subset_folder
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in samples))


# ---- Oxford-IIIT Pet ------------------------------------------------------------------------
def write_pet(
    root: Path,
    name: str,
    class_id: int,
    species: int,
    width: int,
    height: int,
    head: Optional[tuple[int, int, int, int]] = None,
    seed: int = 0,
) -> np.ndarray:
    """images/<name>.jpg, a trimap (pet ellipse = 1 inside, 3 on its rim, 2 elsewhere), optional head xml."""
    write_image(root / "images" / f"{name}.jpg", image_array(height, width, seed), quality=95)
    y, x = np.mgrid[0:height, 0:width]
    r = ((x - width / 2) / (width / 3)) ** 2 + ((y - height / 2) / (height / 3)) ** 2
    trimap = np.full((height, width), 2, np.uint8)
    trimap[r <= 1.15] = 3
    trimap[r <= 0.85] = 1
    write_image(root / "annotations" / "trimaps" / f"{name}.png", trimap)  # mode L, values 1..3
    if head is not None:
        (root / "annotations" / "xmls").mkdir(parents=True, exist_ok=True)
        kind = "cat" if species == 1 else "dog"
        (root / "annotations" / "xmls" / f"{name}.xml").write_text(voc_xml(name, width, height, [(kind, head)]))
    return trimap


def write_pet_lists(root: Path, rows: list[tuple[str, int, int, int]], trainval: list[str], test: list[str]) -> None:
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    header = (
        "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n#BREED ID: 1-25:Cat 1:12:Dog\n"
    )
    lines = {name: f"{name} {c} {s} {b}\n" for name, c, s, b in rows}
    (annotations / "list.txt").write_text(header + "".join(lines.values()))
    (annotations / "trainval.txt").write_text("".join(lines[n] for n in trainval))
    (annotations / "test.txt").write_text("".join(lines[n] for n in test))


def read_skipped(directory: Path) -> list[tuple[str, str]]:
    """The rows of a prepared dataset's skipped.csv (after its header)."""
    import csv

    with open(Path(directory) / "skipped.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["name", "reason"]
    return [tuple(r) for r in rows[1:]]
