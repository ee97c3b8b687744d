"""The shared image decoder: every input kind converted to uint8 gray or RGB, bad files named."""

from __future__ import annotations

import numpy as np
import pytest
from data_writers import encoded, image_array, write_image, write_palette_png
from PIL import Image

from cnnlab.data.decode import decode_image, decode_mask
from cnnlab.data.sources.base import BadSampleError


def test_rgb_png_is_decoded_exactly_as_rgb(tmp_path):
    array = image_array(20, 30, seed=1)
    out = decode_image(write_image(tmp_path / "a.png", array))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)  # RGB order, not OpenCV's BGR


@pytest.mark.parametrize(
    "mode, suffix, channels",
    [
        ("L", "png", 1),
        ("L", "jpg", 1),
        ("RGBA", "png", 3),
        ("LA", "png", 3),
        ("P", "png", 3),
        ("CMYK", "jpg", 3),
        ("CMYK", "tif", 3),
        ("RGB", "gif", 3),
        ("RGB", "bmp", 3),
        ("RGB", "webp", 3),
        ("I;16", "png", 1),
    ],
)
def test_other_colour_modes_are_converted_not_failed(tmp_path, mode, suffix, channels):
    array = image_array(24, 32, seed=2)
    path = tmp_path / f"img.{suffix}"
    if mode == "I;16":  # 16-bit gray: values 0..65535 scale to 0..255
        gray16 = array[..., 0].astype(np.uint16) * 257
        Image.fromarray(gray16).save(path)
        expected = array[..., 0][..., None]
    else:
        write_image(path, array, mode=mode)
        expected = None
    out = decode_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 32, channels)
    if expected is not None:
        np.testing.assert_array_equal(out, expected)
    if mode == "RGBA":  # alpha dropped, colours kept
        np.testing.assert_array_equal(out, array)
    if mode == "CMYK":  # converted back to RGB: close to the original colours
        assert np.abs(out.astype(int) - array).mean() < 12


@pytest.mark.parametrize(
    "content, problem",
    [
        (lambda: encoded(image_array(40, 40), "JPEG")[:300], "truncated JPEG"),
        (lambda: encoded(image_array(40, 40), "PNG")[:200], "truncated PNG"),
        (lambda: b"name,label\ncat.jpg,cat\n", "not an image file"),
        (lambda: b"", "empty file"),
        (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "PNG image, cannot be decoded"),
    ],
    ids=["truncated-jpeg", "truncated-png", "text", "empty", "corrupt-png"],
)
def test_bad_files_raise_naming_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content())
    with pytest.raises(BadSampleError) as err:
        decode_image(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(BadSampleError, match="nothere.png: file not found"):
        decode_image(tmp_path / "nothere.png")


def test_reduced_jpeg_decode_keeps_at_least_the_requested_side(tmp_path):
    path = write_image(tmp_path / "big.jpg", image_array(400, 300, seed=3), quality=95)
    full = decode_image(path)
    reduced = decode_image(path, min_side=64)
    assert full.shape == (400, 300, 3)
    assert reduced.shape == (100, 75, 3)  # 1/4 scale: the largest that keeps both sides >= 64
    gray = decode_image(write_image(tmp_path / "gray.jpg", image_array(400, 300, channels=1)), min_side=64)
    assert gray.shape == (100, 75, 1)


def test_palette_mask_reads_indices_not_colours(tmp_path):
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 15  # person
    mask[1, :] = 255  # boundary
    out = decode_mask(write_palette_png(tmp_path / "m.png", mask))
    np.testing.assert_array_equal(out, mask)


def test_colour_mask_is_refused(tmp_path):
    path = write_image(tmp_path / "m.png", image_array(8, 8))
    with pytest.raises(BadSampleError, match=r"m\.png: mask is a RGB image"):
        decode_mask(path)
