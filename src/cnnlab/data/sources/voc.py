"""Pascal VOC 2012 as downloaded: JPEGImages/, Annotations/*.xml, SegmentationClass/*.png, ImageSets/.

`root` is the VOC2012 folder (a VOCdevkit/ or its parent is followed down to it). Which images
are read depends on `subset`:

- `segmentation` (default): the ImageSets/Segmentation/{train,val}.txt lists (2,913 images).
  Every sample has a class mask (SegmentationClass/<id>.png, a palette PNG whose indices are the
  class ids 0..20, 255 = object boundary = ignore) and the box and class of its largest object
  from Annotations/<id>.xml: it serves classification, localisation and segmentation.
- `detection`: the ImageSets/Main/{train,val}.txt lists (11,540 images), boxes and classes only.
- `folder`: every annotation XML of a labelling tool's export (LabelImg writes each XML beside its
  image; CVAT's "Pascal VOC" export an Annotations/ folder beside JPEGImages/), no image lists:
  prepare splits by data.split_seed. The image is the XML's <filename> (in JPEGImages/ or beside
  the XML), else the image file with the XML's stem.

`classes`: null keeps Pascal's 20 classes; a list (`data.source.classes=[cat,dog]`) declares your
own, in label order; `auto` takes the sorted class names found in the annotations. An object of a
class not declared is a bad sample (data.on_bad_sample). Masks hold ids 0 (background) .. len(classes).

The label of a sample (for classification and localisation) is the class of its largest
object, by box area. The official train list -> train, val -> val; VOC publishes no test
labels, so prepare carves the test split from train by data.split_seed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Union

from cnnlab.data.decode import decode_image, decode_mask
from cnnlab.data.sources.base import BadSampleError, Sample, Source, Unusable
from cnnlab.data.sources.files import (
    check_box,
    check_mask_ids,
    inside_root,
    parse_voc_boxes,
    resolve_root,
    snap_border_pixel,
)

VOC_CLASSES = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
SUBSETS = {"segmentation": "Segmentation", "detection": "Main", "folder": None}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

Item = Union[tuple[str, Optional[str]], Unusable]  # (image id, or an XML path for subset=folder; split)


def find_voc_root(root: Path, folder: bool = False) -> Path:
    """The folder holding JPEGImages/: root itself, root/VOC2012 or root/VOCdevkit/VOC2012
    (subset=folder: any folder holding Annotations/ or XML files will do)."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    if folder and root.is_dir() and ((root / "Annotations").is_dir() or any(root.rglob("*.xml"))):
        return root
    raise FileNotFoundError(
        f"data.root={root} has no JPEGImages/ folder: point data.root at the VOC2012 folder "
        f"(the one holding JPEGImages/, Annotations/, SegmentationClass/ and ImageSets/)"
    )


class VOCSource(Source):
    """Pascal VOC 2012; see the module docstring for `subset` and how labels are chosen."""

    parallel_load = True
    has_boxes = True

    def __init__(
        self, root: Optional[str] = None, subset: str = "segmentation", classes: Union[None, str, list[str]] = None
    ):
        if subset not in SUBSETS:
            raise ValueError(f"data.source.subset={subset!r} is not valid; expected one of: {', '.join(SUBSETS)}")
        if isinstance(classes, str) and classes != "auto":
            raise ValueError(
                f"data.source.classes={classes!r} is not valid; expected null (Pascal's 20), auto, or a list of names"
            )
        if isinstance(classes, (list, tuple)) and (not classes or len(set(classes)) != len(classes)):
            raise ValueError(f"data.source.classes={list(classes)} is not valid; expected distinct class names")
        self.root, self.subset, self._declared = root, subset, classes
        self.has_masks = subset == "segmentation"
        self._dir: Optional[Path] = None
        self._items: Optional[list[Item]] = None
        self._classes: Optional[list[str]] = None if classes == "auto" else list(classes or VOC_CLASSES)

    @property
    def classes(self) -> list[str]:
        if self._classes is None:  # classes=auto: whatever the annotations name
            self._classes = self._discover_classes()
        return self._classes

    @property
    def mask_classes(self) -> list[str]:
        return ["background", *self.classes]

    def describe(self) -> str:
        return (
            f"Pascal VOC ({self.subset} lists) in {self.root}"
            if self.subset != "folder"
            else f"VOC-style annotations in {self.root}"
        )

    def _xml_path(self, item: Item) -> Path:
        image_id, split = item
        return Path(image_id) if self.subset == "folder" else self._listed(item, "Annotations", ".xml")

    def _listed(self, item: Item, folder: str, suffix: str) -> Path:
        """<folder>/<id><suffix> of an id an image list names; BadSampleError if it leaves data.root."""
        image_id, split = item
        where = f"{self._dir / 'ImageSets' / SUBSETS[self.subset] / f'{split}.txt'}: id {image_id!r}"
        return inside_root(self._dir / folder / f"{image_id}{suffix}", self.root, where)

    def _discover_classes(self) -> list[str]:
        names = set()
        for item in self.items():
            if isinstance(item, Unusable):
                continue
            try:
                names.update(name for name, _ in parse_voc_boxes(self._xml_path(item)))
            except BadSampleError:
                continue  # reported when the sample itself is loaded
        if not names:
            raise FileNotFoundError(
                f"data.root={self.root}: data.source.classes=auto found no annotated <object> in any XML file"
            )
        return sorted(names)

    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        self._dir = find_voc_root(
            resolve_root(self.root, "voc", "the Pascal VOC 2012 folder (VOC2012/)"), folder=self.subset == "folder"
        )
        if self.subset == "folder":
            annotations = self._dir / "Annotations"
            xmls = sorted((annotations if annotations.is_dir() else self._dir).rglob("*.xml"))
            if not xmls:
                raise FileNotFoundError(f"data.root={self.root} holds no annotation XML files (subset=folder)")
            self._items = [(str(x), None) for x in xmls]
            return self._items
        items: list[Item] = []
        for split in ("train", "val"):
            list_file = self._dir / "ImageSets" / SUBSETS[self.subset] / f"{split}.txt"
            if not list_file.is_file():
                items.append(
                    Unusable(str(list_file), f"missing split file (the {split} image list of subset={self.subset})")
                )
                continue
            ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
            items += [(image_id, split) for image_id in ids]
        self._items = items
        return items

    def item_name(self, item: Item) -> str:
        return item[0] if self.subset == "folder" else str(self._dir / "JPEGImages" / f"{item[0]}.jpg")

    def _image_path(self, item: Item) -> Path:
        if self.subset != "folder":
            return self._listed(item, "JPEGImages", ".jpg")

        xml_path = Path(item[0])
        try:
            filename = (ET.parse(xml_path).getroot().findtext("filename") or "").strip()
        except ET.ParseError as err:
            raise BadSampleError(f"{xml_path}: not a valid annotation XML ({err})") from None
        folders = [self._dir / "JPEGImages", xml_path.parent, xml_path.parent.parent / "JPEGImages"]
        candidates = [folder / filename for folder in folders if filename]
        candidates += [folder / f"{xml_path.stem}{suffix}" for folder in folders for suffix in IMAGE_SUFFIXES]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise BadSampleError(
                f"{xml_path}: its image {filename or xml_path.stem + '.*'} is in none of "
                f"{', '.join(str(f) for f in folders)}"
            )
        return inside_root(found, self.root, str(xml_path), filename or None)

    def load(self, item: Item) -> Sample:
        image_id, split = item
        image = decode_image(self._image_path(item))
        height, width = image.shape[:2]
        xml_path = self._xml_path(item)
        objects = parse_voc_boxes(xml_path, self.classes)
        if not objects:
            raise BadSampleError(f"{xml_path}: no <object> annotated")
        objects = [(name, snap_border_pixel(box, width, height)) for name, box in objects]
        for number, (name, box) in enumerate(objects, start=1):
            check_box(box, width, height, f"{xml_path}: object {number} ({name})")
        name, box = max(objects, key=lambda o: (o[1][2] - o[1][0]) * (o[1][3] - o[1][1]))
        mask = None
        if self.has_masks:
            mask_path = self._listed(item, "SegmentationClass", ".png")
            mask = decode_mask(mask_path)
            if mask.shape != (height, width):
                raise BadSampleError(
                    f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}"
                )
            check_mask_ids(mask, len(self.mask_classes), mask_path)
        return Sample(
            image=image, label=self.classes.index(name), name=self.item_name(item), box=box, mask=mask, split=split
        )
