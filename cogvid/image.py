"""Image input for image-to-video: loading and the two original preprocessing recipes.

* CogVideoX 1.0 (``sample_video.py`` at v1.0): ``ToTensor`` -> bicubic, antialiased resize of the
  float tensor so the image covers the target -> center crop -> ``x * 2 - 1``.
  torchvision's tensor ``resize(..., BICUBIC)`` (antialias on, the default since 0.17) is exactly
  ``torch.nn.functional.interpolate(x, size, mode="bicubic", align_corners=False, antialias=True)``
  for float32 input: ``torchvision.transforms.v2.functional.resize_image`` calls that (and returns
  the input untouched when the size does not change); it only rounds/clamps for uint8 input.
  torchvision itself is not a dependency.
* CogVideoX 1.5 (``sample_video.py`` at HEAD): the latent size follows the image's aspect ratio
  (:func:`latent_size_v15`); the PIL image is resized with LANCZOS (``interpolation=1``) to 8x that
  size -> ``ToTensor`` -> ``x * 2 - 1``.

Like the original, EXIF orientation is not applied and an alpha channel is dropped by ``RGB``.
"""

from __future__ import annotations

import os

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from cogvid.errors import MissingFileError, UsageError, require_file

if TYPE_CHECKING:
    import torch

VAE_SCALE = 8  # pixels per latent cell
V15_SHORT_SIDE_LATENTS = 96  # 1.5-I2V: the short side is 96 latents (768 px)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an RGB PIL image; MissingFileError (exit 3) if missing or unreadable."""
    file = require_file(path, "image", hint="give the path of a PNG, JPEG or WebP image")
    try:
        with Image.open(file) as image:
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError as e:
        raise MissingFileError(
            f"cannot read image {file}: not a recognised image format",
            hint="give a PNG, JPEG or WebP image",
        ) from e
    except Image.DecompressionBombError as e:
        raise MissingFileError(
            f"image {file} is too large: over {Image.MAX_IMAGE_PIXELS * 2:,} pixels, the most cogvid decodes",
            hint="scale the image down (the models use at most 1360x768 pixels of it)",
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise MissingFileError(
            f"cannot read image {file}: the file is truncated or corrupt ({e})",
            hint="re-export or re-download the image",
        ) from e


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float32 tensor (3, H, W) in [0, 1] (torchvision's ``ToTensor``)."""
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    # (H, W, 3) -> (3, H, W)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise UsageError(f"image size must be positive, found {height}x{width}")


def cover_size(image_height: int, image_width: int, height: int, width: int) -> tuple[int, int]:
    """The v1.0 resize target: the smallest size with the image's aspect ratio that covers
    ``height`` x ``width`` (computed like the original, truncating with ``int``)."""
    if image_width / image_height > width / height:
        return height, int(image_width * height / image_height)
    return int(image_height * width / image_width), width


def prepare_image_v1(image: Image.Image, height: int = 480, width: int = 720) -> torch.Tensor:
    """CogVideoX 1.0 I2V preprocessing -> (1, 3, 1, height, width) float32 in [-1, 1].

    Bicubic antialiased resize to cover the target, then a center crop (v1.0 uses 480x720).
    Values may overshoot [-1, 1] slightly (bicubic ringing), as in the original: no clamp.
    """
    import torch.nn.functional as F

    _check_size(height, width)
    pixels = to_tensor(image)  # (3, H0, W0)
    new_height, new_width = cover_size(pixels.shape[1], pixels.shape[2], height, width)
    resized = pixels.unsqueeze(0)  # (1, 3, H0, W0)
    if (new_height, new_width) != tuple(pixels.shape[1:]):  # torchvision returns the input unchanged
        resized = F.interpolate(
            resized, size=(new_height, new_width), mode="bicubic", align_corners=False, antialias=True
        )  # (1, 3, new_height, new_width)
    top = (new_height - height) // 2
    left = (new_width - width) // 2
    cropped = resized[:, :, top : top + height, left : left + width]
    # (1, 3, H, W) -> (1, 3, 1, H, W): one frame
    return (cropped * 2.0 - 1.0).unsqueeze(2)


def _nearest_multiple_of_16(value: float) -> float:
    """The multiple of 16 closest to ``value``; ties go up (as the original)."""
    lower = (value // 16) * 16
    upper = (value // 16 + 1) * 16
    return lower if abs(value - lower) < abs(value - upper) else upper


def latent_size_v15(image_width: int, image_height: int) -> tuple[int, int]:
    """CogVideoX 1.5 I2V latent size ``(latent_h, latent_w)`` for an image of the given size.

    The short side gets 96 latents (768 px); the long side keeps the aspect ratio, its pixel size
    rounded to the nearest multiple of 16 (landscape 1360x768 -> (96, 170); square -> (96, 96)).
    """
    _check_size(image_height, image_width)
    if image_height < image_width:
        latent_h = V15_SHORT_SIDE_LATENTS
        latent_w = int(_nearest_multiple_of_16(image_width / image_height * latent_h * VAE_SCALE)) // VAE_SCALE
    else:
        latent_w = V15_SHORT_SIDE_LATENTS
        latent_h = int(_nearest_multiple_of_16(image_height / image_width * latent_w * VAE_SCALE)) // VAE_SCALE
    return latent_h, latent_w


def prepare_image_v15(image: Image.Image, latent_h: int, latent_w: int, fit: str = "stretch") -> torch.Tensor:
    """CogVideoX 1.5 I2V preprocessing -> (1, 3, 1, 8*latent_h, 8*latent_w) float32 in [-1, 1].

    ``fit="stretch"`` is the original: LANCZOS resize straight to the size (use
    :func:`latent_size_v15` to keep the aspect ratio). ``fit="crop"`` is for a user-chosen size
    with another aspect ratio: LANCZOS resize to cover it, then a center crop.
    """
    _check_size(latent_h, latent_w)
    height, width = latent_h * VAE_SCALE, latent_w * VAE_SCALE
    image = image.convert("RGB")
    if fit == "stretch":
        resized = image.resize((width, height), Image.Resampling.LANCZOS)
    elif fit == "crop":
        cover_h, cover_w = cover_size(image.height, image.width, height, width)
        covered = image.resize((cover_w, cover_h), Image.Resampling.LANCZOS)
        top, left = (cover_h - height) // 2, (cover_w - width) // 2
        resized = covered.crop((left, top, left + width, top + height))
    else:
        raise UsageError(f"unknown image fit {fit!r}", hint="use 'stretch' or 'crop'")
    # (3, H, W) -> (1, 3, 1, H, W)
    return (to_tensor(resized) * 2.0 - 1.0).unsqueeze(0).unsqueeze(2)
