"""The Oxford-IIIT Pet dataset as downloaded: images/, annotations/{list,trainval,test}.txt,
annotations/xmls/ (head boxes) and annotations/trimaps/.

Labels (`labels`): `breed` (37 classes, list.txt's CLASS-ID) or `species` (cat, dog).
Masks come from the trimaps (1 = pet, 2 = background, 3 = boundary), mapped to 0 = background,
255 = ignore and, for the pet, 1 (`mask_labels: pet`) or the sample's class id + 1
(`mask_labels: label`, breed or species after `labels`).

Which images are read depends on `subset`:
- `all` (default): every image of annotations/list.txt; trainval.txt -> train (validation carved
  from it by data.split_seed), test.txt -> test. Serves classification and segmentation.
- `head_boxes`: only the images that have a head box (annotations/xmls/<name>.xml exists, which
  is true of trainval images only), split by data.split_seed. Serves all three tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from cnnlab.data.decode import decode_image, decode_mask
from cnnlab.data.sources.base import BadSampleError, Sample, Source, Unusable
from cnnlab.data.sources.files import check_box, inside_root, parse_voc_boxes, resolve_root, snap_border_pixel

BREEDS = [
    "Abyssinian",
    "american_bulldog",
    "american_pit_bull_terrier",
    "basset_hound",
    "beagle",
    "Bengal",
    "Birman",
    "Bombay",
    "boxer",
    "British_Shorthair",
    "chihuahua",
    "Egyptian_Mau",
    "english_cocker_spaniel",
    "english_setter",
    "german_shorthaired",
    "great_pyrenees",
    "havanese",
    "japanese_chin",
    "keeshond",
    "leonberger",
    "Maine_Coon",
    "miniature_pinscher",
    "newfoundland",
    "Persian",
    "pomeranian",
    "pug",
    "Ragdoll",
    "Russian_Blue",
    "saint_bernard",
    "samoyed",
    "scottish_terrier",
    "shiba_inu",
    "Siamese",
    "Sphynx",
    "staffordshire_bull_terrier",
    "wheaten_terrier",
    "yorkshire_terrier",
]  # CLASS-ID 1..37 of list.txt
SPECIES = ["cat", "dog"]  # SPECIES 1, 2 of list.txt
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BOUNDARY = 1, 2, 3

Item = Union[tuple[str, int, int, Optional[str]], Unusable]


def read_list_file(path: Path) -> list[tuple[str, int, int]]:
    """(image name, CLASS-ID, SPECIES) per line of list.txt / trainval.txt / test.txt."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        try:
            rows.append((parts[0], int(parts[1]), int(parts[2])))
        except (IndexError, ValueError):
            raise BadSampleError(f"{path}: line {number} is not 'name class_id species breed_id': {line!r}") from None
    return rows


class OxfordPetsSource(Source):
    """Oxford-IIIT Pet; see the module docstring for `labels`, `mask_labels` and `subset`."""

    parallel_load = True
    has_masks = True

    def __init__(
        self, root: Optional[str] = None, labels: str = "breed", mask_labels: str = "pet", subset: str = "all"
    ):
        for key, value, allowed in (
            ("labels", labels, ("breed", "species")),
            ("mask_labels", mask_labels, ("pet", "label")),
            ("subset", subset, ("all", "head_boxes")),
        ):
            if value not in allowed:
                raise ValueError(f"data.source.{key}={value!r} is not valid; expected one of: {', '.join(allowed)}")
        self.root, self.labels, self.mask_labels, self.subset = root, labels, mask_labels, subset
        self.classes = list(BREEDS if labels == "breed" else SPECIES)
        self.mask_classes = ["background", "pet"] if mask_labels == "pet" else ["background", *self.classes]
        self.has_boxes = subset == "head_boxes"
        self._dir: Optional[Path] = None
        self._items: Optional[list[Item]] = None

    def describe(self) -> str:
        return f"Oxford-IIIT Pet ({self.labels} labels, subset {self.subset}) in {self.root}"

    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        root = self._dir = resolve_root(
            self.root, "oxford_pets", "the Oxford-IIIT Pet folder (images/ and annotations/)"
        )
        annotations = root / "annotations"
        list_file = annotations / "list.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"{list_file}: missing; data.root must hold images/ and annotations/list.txt")
        rows = read_list_file(list_file)
        items: list[Item] = []
        split_of: dict[str, str] = {}
        if self.subset == "all":
            for split, file_name in (("train", "trainval.txt"), ("test", "test.txt")):
                split_file = annotations / file_name
                if not split_file.is_file():
                    items.append(
                        Unusable(
                            str(split_file), "missing split file (its images are split by data.split_seed instead)"
                        )
                    )
                    continue
                split_of.update({name: split for name, _, _ in read_list_file(split_file)})
        for name, class_id, species in rows:
            if self.subset == "head_boxes" and not (annotations / "xmls" / f"{name}.xml").is_file():
                continue
            items.append((name, class_id, species, split_of.get(name)))
        self._items = items
        return items

    def item_name(self, item: Item) -> str:
        return str(self._dir / "images" / f"{item[0]}.jpg")

    def _file(self, name: str, folder: str, suffix: str) -> Path:
        """<folder>/<name><suffix> of a name annotations/list.txt gives; BadSampleError if it leaves data.root."""
        where = f"{self._dir / 'annotations' / 'list.txt'}: {name!r}"
        return inside_root(self._dir / folder / f"{name}{suffix}", self.root, where)

    def load(self, item: Item) -> Sample:
        name, class_id, species, split = item
        image_path = self._file(name, "images", ".jpg")
        if self.labels == "breed":
            label, valid = class_id - 1, 1 <= class_id <= len(BREEDS)
        else:
            label, valid = species - 1, species in (1, 2)
        if not valid:
            raise BadSampleError(
                f"{self._dir / 'annotations' / 'list.txt'}: {name} has {self.labels} id "
                f"{class_id if self.labels == 'breed' else species}, not in the {len(self.classes)} declared classes"
            )
        image = decode_image(image_path)
        height, width = image.shape[:2]
        trimap_path = self._file(name, "annotations/trimaps", ".png")
        trimap = decode_mask(trimap_path)
        if trimap.shape != (height, width):
            raise BadSampleError(
                f"{trimap_path}: trimap is {trimap.shape[1]}x{trimap.shape[0]} but its image is {width}x{height}"
            )
        values = np.unique(trimap)
        unknown = values[~np.isin(values, (TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BOUNDARY))]
        if len(unknown):
            raise BadSampleError(
                f"{trimap_path}: trimap has values {unknown.tolist()}; expected 1 = pet, 2 = background, 3 = boundary"
            )
        lookup = np.zeros(256, np.uint8)
        lookup[TRIMAP_PET] = 1 if self.mask_labels == "pet" else label + 1
        lookup[TRIMAP_BOUNDARY] = 255
        mask = lookup[trimap]
        box = None
        if self.has_boxes:
            xml_path = self._file(name, "annotations/xmls", ".xml")
            objects = parse_voc_boxes(xml_path)
            if not objects:
                raise BadSampleError(f"{xml_path}: no head box (<object>) annotated")
            box = snap_border_pixel(objects[0][1], width, height)
            check_box(box, width, height, f"{xml_path}: head box")
        return Sample(image=image, label=label, name=str(image_path), box=box, mask=mask, split=split)
