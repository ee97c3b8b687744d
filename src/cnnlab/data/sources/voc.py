"""Pascal VOC 2012 as downloaded: JPEGImages/, Annotations/*.xml, SegmentationClass/*.png, ImageSets/.

`root` is the VOC2012 folder (a VOCdevkit/ or its parent is followed down to it). Which images
are read depends on `subset`:

- `segmentation` (default): the ImageSets/Segmentation/{train,val}.txt lists (2,913 images).
  Every sample has a class mask (SegmentationClass/<id>.png, a palette PNG whose indices are the
  class ids 0..20, 255 = object boundary = ignore) and the box and class of its largest object
  from Annotations/<id>.xml: it serves classification, localisation and segmentation.
- `detection`: the ImageSets/Main/{train,val}.txt lists (11,540 images), boxes and classes only.

The label of a sample (for classification and localisation) is the class of its largest
object, by box area. The official train list -> train, val -> val; VOC publishes no test
labels, so prepare carves the test split from train by data.split_seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from cnnlab.data.decode import decode_image, decode_mask
from cnnlab.data.sources.base import BadSampleError, Sample, Source, Unusable
from cnnlab.data.sources.files import check_box, check_mask_ids, parse_voc_boxes, resolve_root, snap_border_pixel

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
SUBSETS = {"segmentation": "Segmentation", "detection": "Main"}

Item = Union[tuple[str, str], Unusable]


def find_voc_root(root: Path) -> Path:
    """The folder holding JPEGImages/: root itself, root/VOC2012 or root/VOCdevkit/VOC2012."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(
        f"data.root={root} has no JPEGImages/ folder: point data.root at the VOC2012 folder "
        f"(the one holding JPEGImages/, Annotations/, SegmentationClass/ and ImageSets/)"
    )


class VOCSource(Source):
    """Pascal VOC 2012; see the module docstring for `subset` and how labels are chosen."""

    parallel_load = True
    classes = VOC_CLASSES
    mask_classes = ["background", *VOC_CLASSES]
    has_boxes = True

    def __init__(self, root: Optional[str] = None, subset: str = "segmentation"):
        if subset not in SUBSETS:
            raise ValueError(f"data.source.subset={subset!r} is not valid; expected one of: {', '.join(SUBSETS)}")
        self.root, self.subset = root, subset
        self.has_masks = subset == "segmentation"
        self._dir: Optional[Path] = None
        self._items: Optional[list[Item]] = None

    def describe(self) -> str:
        return f"Pascal VOC ({self.subset} lists) in {self.root}"

    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        self._dir = find_voc_root(resolve_root(self.root, "voc", "the Pascal VOC 2012 folder (VOC2012/)"))
        items: list[Item] = []
        for split in ("train", "val"):
            list_file = self._dir / "ImageSets" / SUBSETS[self.subset] / f"{split}.txt"
            if not list_file.is_file():
                items.append(Unusable(str(list_file), f"missing split file (the {split} image list of subset={self.subset})"))
                continue
            ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
            items += [(image_id, split) for image_id in ids]
        self._items = items
        return items

    def item_name(self, item: Item) -> str:
        return str(self._dir / "JPEGImages" / f"{item[0]}.jpg")

    def load(self, item: Item) -> Sample:
        image_id, split = item
        image = decode_image(self._dir / "JPEGImages" / f"{image_id}.jpg")
        height, width = image.shape[:2]
        xml_path = self._dir / "Annotations" / f"{image_id}.xml"
        objects = parse_voc_boxes(xml_path, VOC_CLASSES)
        if not objects:
            raise BadSampleError(f"{xml_path}: no <object> annotated")
        objects = [(name, snap_border_pixel(box, width, height)) for name, box in objects]
        for number, (name, box) in enumerate(objects, start=1):
            check_box(box, width, height, f"{xml_path}: object {number} ({name})")
        name, box = max(objects, key=lambda o: (o[1][2] - o[1][0]) * (o[1][3] - o[1][1]))
        mask = None
        if self.has_masks:
            mask_path = self._dir / "SegmentationClass" / f"{image_id}.png"
            mask = decode_mask(mask_path)
            if mask.shape != (height, width):
                raise BadSampleError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}")
            check_mask_ids(mask, len(self.mask_classes), mask_path)
        return Sample(image=image, label=VOC_CLASSES.index(name), name=self.item_name(item), box=box, mask=mask, split=split)
