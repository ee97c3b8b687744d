"""The segmentation picture: masks tinted over the image and outlined at full strength."""

from __future__ import annotations

import numpy as np

from cnnlab.viz.segmentation import overlay_mask, region_edges

COLORS = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # background, class 1, class 2


def test_region_edges_are_the_pixels_next_to_another_value():
    mask = np.zeros((6, 6), np.uint8)
    mask[1:5, 1:5] = 1  # a 4x4 square: its 12 rim pixels and the 20 background pixels around it
    edges = region_edges(mask)
    inside = edges & (mask == 1)
    assert inside.sum() == 12 and not inside[2:4, 2:4].any()
    assert (edges & (mask == 0)).sum() == 16  # background touching the square by a side (corners excluded)


def test_overlay_outlines_tints_and_leaves_background():
    image = np.full((6, 6, 3), 100, np.uint8)
    mask = np.zeros((6, 6), np.uint8)
    mask[1:5, 1:5] = 2
    mask[0, 5] = 255  # an ignored pixel
    out = overlay_mask(image, mask, COLORS, alpha=0.5)
    assert out.shape == (6, 6, 3) and out.dtype == np.uint8
    assert (out[1, 1] == [0, 0, 255]).all()  # rim: the class colour itself
    assert (out[2, 2] == [50, 50, 178]).all()  # interior: half image, half colour (100/2, 100/2 + 255/2)
    assert (out[5, 0] == [100, 100, 100]).all()  # background untouched
    assert (out[0, 5] == [178, 178, 178]).all()  # ignored: tinted white, never outlined
