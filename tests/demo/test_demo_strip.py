"""tools/demo_strip.py lays every frame of each clip side by side, one clip per row, enlarged."""

from __future__ import annotations

import numpy as np

import demo_strip


def test_strip_puts_frames_in_rows_and_enlarges_them():
    red = np.zeros((9, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    blue = np.zeros((9, 32, 32, 3), dtype=np.uint8)
    blue[..., 2] = 255
    image = demo_strip.strip([red, blue], scale=3)
    assert image.shape == (2 * 96, 9 * 96, 3) and image.dtype == np.uint8
    assert (image[:96, :, 0] == 255).all() and (image[:96, :, 2] == 0).all()
    assert (image[96:, :, 2] == 255).all() and (image[96:, :, 0] == 0).all()
