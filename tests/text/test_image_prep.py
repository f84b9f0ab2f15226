"""Image loading and the 1.0 / 1.5 I2V preprocessing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cogvid.errors import MissingFileError
from cogvid.image import cover_size, latent_size_v15, load_image, prepare_image_v1, prepare_image_v15, to_tensor
from fixtures.margins import assert_within


def smooth_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB image with gradients and some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    array = np.clip(base + rng.integers(0, 55, size=(height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


# --- loading --------------------------------------------------------------------------------


def test_load_image_converts_to_rgb(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 4), (10, 20, 30, 128)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert image.getpixel((0, 0)) == (10, 20, 30)


def test_missing_image(tmp_path):
    with pytest.raises(MissingFileError, match="image not found") as info:
        load_image(tmp_path / "nope.png")
    assert info.value.exit_code == 3 and "nope.png" in str(info.value)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_unreadable_image(tmp_path, kind):
    path = tmp_path / "bad.png"
    if kind == "garbage":
        path.write_bytes(b"this is not an image at all")
        expected = "not a recognised image format"
    else:
        smooth_image(64, 64).save(path)
        path.write_bytes(path.read_bytes()[:200])
        expected = "truncated or corrupt"
    with pytest.raises(MissingFileError, match=expected) as info:
        load_image(path)
    assert info.value.exit_code == 3 and "bad.png" in str(info.value) and info.value.hint


# --- 1.0: bicubic antialiased cover resize + center crop ------------------------------------


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(
        x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0)
    )


def _aa_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of an antialiased bicubic resize (PIL's separable filter), float64."""
    scale = in_size / out_size
    support_scale = max(scale, 1.0)
    support = 2.0 * support_scale
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = _cubic((taps - center + 0.5) / support_scale)
        weights[i, lo:hi] = w / w.sum()
    return weights


def reference_v1(image: Image.Image, height: int, width: int) -> np.ndarray:
    """An independent float64 version of v1.0's resize_for_rectangle_crop(center) * 2 - 1."""
    pixels = np.asarray(image, dtype=np.float64).transpose(2, 0, 1) / 255.0  # (3, H0, W0)
    h0, w0 = pixels.shape[1:]
    if w0 / h0 > width / height:
        new_h, new_w = height, int(w0 * height / h0)
    else:
        new_h, new_w = int(h0 * width / w0), width
    rows, cols = _aa_bicubic_matrix(h0, new_h), _aa_bicubic_matrix(w0, new_w)
    resized = np.einsum("oh,chw,pw->cop", rows, pixels, cols)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[:, top : top + height, left : left + width] * 2 - 1


@pytest.mark.parametrize(
    "size, target",
    [
        ((100, 40), (24, 36)),  # wide: downscale to height 24, crop width
        ((37, 61), (24, 36)),  # tall: downscale to width 36, crop height
        ((20, 12), (24, 36)),  # small: upscale both ways
        ((90, 60), (24, 36)),  # exact aspect ratio: no crop
    ],
)
def test_v1_resize_and_crop_match_a_float64_reimplementation(size, target):
    image = smooth_image(*size)
    tensor = prepare_image_v1(image, *target)
    assert tensor.shape == (1, 3, 1, *target) and tensor.dtype == torch.float32
    expected = reference_v1(image, *target)
    # Values in [-1, 1]; measured max 1.6e-6 (tools/check_portability.py). A wrong crop or filter: > 1e-2.
    assert_within(tensor[0, :, 0], expected, 1e-5, "float32 vs float64")


def test_v1_cover_size_and_crop_offsets_by_hand():
    # 1000x500 (W x H) is wider than 3:2: height 480, width int(1000*480/500) = 960, crop left 120.
    assert cover_size(500, 1000, 480, 720) == (480, 960)
    # 600x800 is taller: width 720, height int(800*720/600) = 960, crop top 240.
    assert cover_size(800, 600, 480, 720) == (960, 720)
    # Already 480x720: no resize at all, the tensor is ToTensor * 2 - 1 exactly.
    image = smooth_image(720, 480)
    tensor = prepare_image_v1(image)
    assert torch.equal(tensor[0, :, 0], to_tensor(image) * 2 - 1)
    # A horizontally uniform wide image keeps its rows after the crop: the centre column survives.
    stripes = np.repeat(np.linspace(0, 255, 50, dtype=np.uint8)[:, None, None], 150, axis=1).repeat(3, axis=2)
    out = prepare_image_v1(Image.fromarray(stripes), 10, 10)[0, 0, 0]  # 150x50 -> 30x10 -> crop 10x10
    assert torch.allclose(out[:, 0], out[:, -1])


# --- 1.5: latent size rule and LANCZOS resize -----------------------------------------------


@pytest.mark.parametrize(
    "image_size, latent",
    [
        ((1360, 768), (96, 170)),  # the 1.5 default 768x1360 landscape
        ((768, 1360), (170, 96)),  # portrait
        ((512, 512), (96, 96)),  # square goes through the "else" branch
        ((1024, 768), (96, 128)),  # 4:3
        ((1312, 1024), (96, 124)),  # 984 px exactly between 976 and 992: ties round up
        ((1920, 1080), (96, 170)),  # 16:9 -> 1365.3 px -> 1360
    ],
)
def test_latent_size_v15(image_size, latent):
    assert latent_size_v15(*image_size) == latent


def test_prepare_image_v15_is_a_lanczos_stretch():
    image = smooth_image(50, 30)
    tensor = prepare_image_v15(image, 3, 4)
    assert tensor.shape == (1, 3, 1, 24, 32)
    expected = np.asarray(image.resize((32, 24), Image.Resampling.LANCZOS), dtype=np.float32) / 255 * 2 - 1
    assert_within(tensor[0, :, 0].permute(1, 2, 0), expected, 1e-6, "vs PIL")  # the same PIL resize: measured 0
    assert tensor.min() >= -1 and tensor.max() <= 1


def test_prepare_image_v15_crop_keeps_the_aspect_ratio():
    # A 2:1 image into a square: cover to 64x32 -> crop 32x32 from the middle.
    left, right = Image.new("RGB", (32, 16), (255, 0, 0)), Image.new("RGB", (32, 16), (0, 0, 255))
    image = Image.new("RGB", (64, 16))
    image.paste(left, (0, 0))
    image.paste(right, (32, 0))
    tensor = prepare_image_v15(image, 4, 4, fit="crop")[0, :, 0]  # (3, 32, 32)
    assert tensor.shape == (3, 32, 32)
    assert math.isclose(tensor[0, :, 0].mean().item(), 1.0, abs_tol=0.05)  # red on the left
    assert math.isclose(tensor[2, :, -1].mean().item(), 1.0, abs_tol=0.05)  # blue on the right
