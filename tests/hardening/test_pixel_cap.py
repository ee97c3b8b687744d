"""Images above data.max_image_pixels are bad samples refused from their header, never decoded."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.decode import DEFAULT_MAX_IMAGE_PIXELS, decode_image, set_max_image_pixels
from cnnlab.data.prepare import prepare_from_config
from cnnlab.data.sources.base import BadSampleError


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that declares width x height 8-bit gray pixels: what a decompression bomb looks like from outside."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(autouse=True)
def default_cap():
    yield
    set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)


def test_a_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, 20000, 20000)
    with pytest.raises(
        BadSampleError,
        match=r"bomb.png: 20000x20000 PNG image has 400,000,000 pixels, over data.max_image_pixels=64,000,000",
    ):
        decode_image(bomb)


def test_prepare_skips_images_over_the_cap_and_lists_them(compose_config, tmp_path):
    root = tmp_path / "raw"
    for value, (name, size) in enumerate(
        (("cat/small.png", 40), ("cat/large.png", 200), ("dog/small.png", 40), ("dog/other.png", 48))
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), 60 * value, np.uint8)).save(root / name)
    cfg = compose_config(
        "data=image_folder",
        f"data.root={root}",
        "data.max_image_pixels=10000",
        "data.on_bad_sample=skip",
        "data.val_fraction=0",
        "data.test_fraction=0",
        f"paths.data_dir={tmp_path}",
    )
    meta = prepare_from_config(cfg.data)
    assert meta["num_samples"] == 3 and meta["skipped"] == [str(root / "cat" / "large.png")]
    skipped = (tmp_path / "prepared" / "image_folder-64" / "skipped.csv").read_text()
    assert "200x200 PNG image has 40,000 pixels, over data.max_image_pixels=10,000" in skipped
    cfg.data.on_bad_sample = "error"
    with pytest.raises(BadSampleError, match="large.png: 200x200"):
        prepare_from_config(cfg.data)
