"""What the tests of ImageNet weights share: the real MobileNetV2 file and scikit-image's real photos."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest

from cnnlab.models import hub

MOBILENET = "mobilenet_v2-b0353104.pth"
# the real file, where `make weights` (CI) put it in the user's cache; looked up before a test moves TORCH_HOME
REAL_FILE = hub.cache_dir() / MOBILENET
needs_weights = pytest.mark.skipif(
    not REAL_FILE.is_file(), reason=f"{REAL_FILE} is missing: `make weights` fills the cache (CI does)"
)
needs_photos = pytest.mark.skipif(find_spec("skimage") is None, reason="scikit-image (a test extra) ships the photos")


def copy_photos(folder: Path, *names: str) -> Path:
    """scikit-image's photos `names` (coffee.png, chelsea.png, rocket.jpg, ...) copied into `folder`."""
    source = Path(find_spec("skimage").origin).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes((source / name).read_bytes())
    return folder
