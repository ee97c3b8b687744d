"""The image and mask decoder that prepare and predict share.

Images come out as H x W x C uint8 with C = 1 (grayscale) or 3 (RGB) whatever the file held:
RGBA and gray+alpha lose their alpha channel, palette images are expanded, 16-bit images are
scaled to 8 bits, CMYK and YCbCr are converted to RGB. Pixels are read as stored (EXIF orientation
is not applied), which is the frame that box and mask annotations are drawn in. Any file that
cannot be used raises `BadSampleError` naming the path and the problem.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.data.sources.base import BadSampleError

# Formats OpenCV decodes fastest and without ambiguity; others (TIFF: CMYK reads as 4 channels
# there, GIF, PPM, ...) go through Pillow, which knows their colour modes.
_CV2_FORMATS = {"jpeg", "png", "bmp", "webp"}

# Images above this many pixels are refused before decoding: a 1 MB PNG can hold a 20000 x 20000
# image (1.2 GB decoded). prepare sets it from data.max_image_pixels in every decode process.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
_limits = {"max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS}


def pixel_limit() -> int:
    return _limits["max_image_pixels"]


def set_max_image_pixels(count: int) -> None:
    """Refuse (as a bad sample) any image with more than `count` pixels, from its header alone."""
    _limits["max_image_pixels"] = int(count)


def sniff_format(data: bytes) -> Optional[str]:
    """The image format from the file's first bytes (never from its name)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6"):
        return "pnm"
    return None


def read_bytes(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise BadSampleError(f"{path}: file not found") from None
    except OSError as err:
        raise BadSampleError(f"{path}: cannot be read ({err.strerror or err})") from None


def decode_image(path: str | Path, min_side: Optional[int] = None) -> np.ndarray:
    """Decode an image file to H x W x 1 or H x W x 3 uint8 (see the module docstring).

    `min_side`: the caller only needs an image whose sides are at least this long, so a large
    JPEG may be decoded at 1/2, 1/4 or 1/8 scale (in the DCT domain: several times faster, and
    a smooth downscale). Only for images without pixel annotations: the result is smaller than
    the file's own size.
    """
    return decode_image_bytes(read_bytes(path), str(path), min_side)


def _jpeg_frame(data: bytes) -> Optional[tuple[int, int, int]]:
    """(height, width, components) from a JPEG's start-of-frame marker, or None if not found."""
    position, end = 2, len(data) - 9
    while position < end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return height, width, data[position + 9]
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


_REDUCED = {  # scale -> (colour flag, grayscale flag)
    8: (cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    4: (cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    2: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
}


def _decode_flags(data: bytes, kind: str, min_side: Optional[int]) -> int:
    if not min_side or kind != "jpeg":
        return cv2.IMREAD_UNCHANGED
    frame = _jpeg_frame(data)
    if frame is None:
        return cv2.IMREAD_UNCHANGED
    height, width, components = frame
    for scale, (colour, gray) in _REDUCED.items():
        if min(height, width) >= scale * min_side:
            # reduced reads apply EXIF orientation unless told not to; UNCHANGED never does
            return (gray if components == 1 else colour) | cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.IMREAD_UNCHANGED


def decode_image_bytes(data: bytes, name: str, min_side: Optional[int] = None) -> np.ndarray:
    if not data:
        raise BadSampleError(f"{name}: empty file (0 bytes), not an image")
    kind = sniff_format(data)
    if kind is None:  # never quote the content: the file may be anything (a manifest could point at a secret)
        raise BadSampleError(f"{name}: not an image file (no known image format signature)")
    _check_pixel_count(data, name, kind)
    if kind in _CV2_FORMATS:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _decode_flags(data, kind, min_side))
        if image is None:
            raise BadSampleError(f"{name}: {_damage(kind, data)} {kind.upper()} image, cannot be decoded")
        return _from_cv2(image, name)
    return _decode_with_pillow(data, name, kind)


def _check_pixel_count(data: bytes, name: str, kind: str) -> None:
    """BadSampleError if the header declares more pixels than allowed (read without decoding)."""
    limit = _limits["max_image_pixels"]
    frame = _jpeg_frame(data) if kind == "jpeg" else None  # a JPEG's size without Pillow: a tenth of its time
    if frame is not None:
        height, width = frame[:2]
    else:
        Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb check would stop the header read; this is cnnlab's
        try:
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                width, height = img.size
        except Exception:  # an unreadable header: the decoder says what is wrong with it
            return
    if width * height > limit:
        raise BadSampleError(
            f"{name}: {width}x{height} {kind.upper()} image has {width * height:,} pixels, over "
            f"data.max_image_pixels={limit:,}; refused before decoding"
        )


def _damage(kind: str, data: bytes) -> str:
    """'truncated' when the file lacks its format's end marker, else 'corrupt'."""
    tail = data[-1024:]
    if kind == "jpeg" and b"\xff\xd9" not in tail:
        return "truncated"
    if kind == "png" and b"IEND" not in tail:
        return "truncated"
    return "corrupt"


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image / 257.0).astype(np.uint8)  # 65535 -> 255
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    raise BadSampleError(f"{name}: pixel type {image.dtype} is not supported (8- or 16-bit images only)")


def _from_cv2(image: np.ndarray, name: str) -> np.ndarray:
    image = _to_uint8(image, name)
    if image.ndim == 2:
        return image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return image
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:  # BGRA: alpha dropped
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise BadSampleError(f"{name}: {channels} channels, expected gray, RGB or RGBA")


def _decode_with_pillow(data: bytes, name: str, kind: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes now: a truncated file raises here
            mode = img.mode
            if mode in ("1", "L"):
                array = np.asarray(img.convert("L"))
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img)
                if array.dtype != np.uint16:
                    if array.min() < 0 or array.max() > 65535:
                        raise BadSampleError(f"{name}: {mode} pixel values outside 0..65535")
                    array = array.astype(np.uint16)
            elif mode in ("LA", "La"):
                array = np.asarray(img.convert("L"))
            else:  # RGB, RGBA, P, PA, CMYK, YCbCr, LAB, HSV
                array = np.asarray(img.convert("RGB"))
    except BadSampleError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        damage = "truncated" if "truncated" in str(err).lower() else "corrupt"
        raise BadSampleError(f"{name}: {damage} {kind.upper()} image, cannot be decoded ({err})") from None
    array = _to_uint8(array, name)
    return array[:, :, None] if array.ndim == 2 else np.ascontiguousarray(array)


def decode_mask(path: str | Path) -> np.ndarray:
    """A mask file to H x W uint8 class ids: palette indices of a mode "P" PNG (VOC's format), or the
    values of a single-channel image. A colour (RGB) mask is an error: colours are not class ids."""
    data = read_bytes(path)
    if not data:
        raise BadSampleError(f"{path}: empty mask file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "L", "1"):
                array = np.asarray(img if mode != "1" else img.convert("L"))
            elif mode.startswith("I"):
                array = np.asarray(img)
            else:
                raise BadSampleError(
                    f"{path}: mask is a {mode} image; expected a palette (mode P) or single-channel image "
                    f"whose values are class ids"
                )
    except BadSampleError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        damage = "truncated" if "truncated" in str(err).lower() else "corrupt or not an image"
        raise BadSampleError(f"{path}: mask file is {damage} ({err})") from None
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise BadSampleError(
                f"{path}: mask values {int(array.min())}..{int(array.max())} do not fit class ids 0..255"
            )
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)
