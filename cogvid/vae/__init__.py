"""The CogVideoX 3D causal VAE (original ``vae_modules``), numerically identical to SAT.

Layout: (B, C, T, H, W) everywhere (the sampler's (B, T, C, H, W) is permuted by the engine).
``VideoAutoencoder.encode(x, generator)`` returns the raw posterior sample and ``decode(z)`` takes
raw latents: the engine multiplies by ``scale_factor`` after encoding and divides before decoding,
as the original engine does.

Public names: :class:`VideoAutoencoder` (``VideoAutoencoderInferenceWrapper``), :class:`Encoder3D`,
:class:`Decoder3D`, :class:`DiagonalGaussianRegularizer`, :func:`decode_plan`. Context-parallel
decode lives in :mod:`cogvid.vae.parallel` (imported on demand; it never starts a process group).
"""

from cogvid.vae.autoencoder import (
    DecodeChunk,
    DiagonalGaussianRegularizer,
    VideoAutoencoder,
    chunk_pixel_frames,
    decode_plan,
    read_vae_state,
)
from cogvid.vae.coders import Decoder3D, Encoder3D
from cogvid.vae.layers import ConvCache

__all__ = [
    "ConvCache",
    "DecodeChunk",
    "Decoder3D",
    "DiagonalGaussianRegularizer",
    "Encoder3D",
    "VideoAutoencoder",
    "chunk_pixel_frames",
    "decode_plan",
    "read_vae_state",
]
