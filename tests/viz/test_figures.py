"""The pictures and records a run attaches, kept cheap without losing what is in them."""

from __future__ import annotations

from importlib import metadata

import numpy as np
from PIL import Image


def test_image_grid_keeps_every_image_and_title_on_a_fixed_layout(tmp_path):
    from cnnlab.viz.figures import image_grid

    images = np.full((10, 32, 32, 1), 255, dtype=np.uint8)  # white images on a white page: only titles are dark
    path = image_grid(images, [f"title {i}\nline two" for i in range(10)], tmp_path / "grid.png", columns=4)
    picture = np.asarray(Image.open(path).convert("L"))
    # 1.6 x 1.8 inches a cell at 110 dpi, 3 rows of 4, nothing cropped away
    assert picture.shape == (round(3 * 1.8 * 110), round(4 * 1.6 * 110))
    cell_h, cell_w = picture.shape[0] // 3, picture.shape[1] // 4
    for i in range(10):  # each cell's title band (above its image) holds dark text pixels, inside the picture
        row, column = divmod(i, 4)
        band = picture[row * cell_h : row * cell_h + int(0.35 * 110), column * cell_w : (column + 1) * cell_w]
        assert (band < 128).sum() > 20, f"no title drawn above image {i}"
    for row, column in [(2, 2), (2, 3)]:  # the cells after the last image stay empty
        assert (picture[row * cell_h : (row + 1) * cell_h, column * cell_w : (column + 1) * cell_w] < 128).sum() == 0


def test_environment_record_lists_every_installed_distribution():
    from cnnlab.tracking.environment import environment_record

    expected = {dist.metadata["Name"]: dist.version for dist in metadata.distributions() if dist.metadata["Name"]}
    packages = environment_record()["packages"]
    assert packages == expected and list(packages) == sorted(expected, key=str.lower)
    assert packages["torch"].startswith("2.13.0")
