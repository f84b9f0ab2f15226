"""Shared by the DiT benchmarks (not a benchmark itself): DiTs of the released models' layout with
random weights, built on any device and dtype, and the same weights in diffusers' transformer.

The weights are random but shaped and scaled like trained ones (fan-in scaled Gaussians, LayerNorm
gains near 1, non-zero AdaLN), so every kernel does its real amount of work.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

TEXT_TOKENS = 226  # the released models' T5 length


def network_params(model: str, **overrides: Any) -> dict[str, Any]:
    """The ``network_config.params`` of a registry model (e.g. ``num_layers=2`` for a shallow copy)."""
    from omegaconf import OmegaConf

    from cogvid.prepare import resolve_model
    from cogvid.request import ModelChoice

    cfg = resolve_model(ModelChoice(name=model)).cfg
    params = OmegaConf.to_container(cfg.model.network_config.params, resolve=True)
    params.update(overrides)
    return params


def mid_size_params(rotary: bool = True, hidden: int = 512, layers: int = 2, heads: int = 8) -> dict[str, Any]:
    """A 5B-style (RoPE, 1.0 patch 2) DiT of the given width and depth, 4096-wide text like the real ones."""
    params = copy.deepcopy(network_params("cogvideox-5b" if rotary else "cogvideox-2b"))
    params.update(hidden_size=hidden, num_layers=layers, num_attention_heads=heads, time_embed_dim=hidden)
    pos = params["modules"]["pos_embed_config"]["params"]
    if "hidden_size_head" in pos:
        pos["hidden_size_head"] = hidden // heads
    return params


def sat_dit(params: dict[str, Any], seed: int, device: str | torch.device, dtype: torch.dtype) -> tuple[Any, dict[str, torch.Tensor]]:
    """cogvid's DiT with random weights on ``device``/``dtype``, and its state dict (the same tensors)."""
    from cogvid.dit import build_dit

    node = {"target": "dit_video_concat.DiffusionTransformer", "params": params}
    model = build_dit(node, dtype=dtype, device="meta")
    generator = torch.Generator(device=device).manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    optional = model.optional_state_keys()
    for key, meta in model.state_dict().items():
        if key in optional and not key.endswith("pos_embedding"):
            continue
        if key == "mixins.pos_embed.pos_embedding" and "Basic3D" in params["modules"]["pos_embed_config"]["target"]:
            continue
        tensor = torch.randn(meta.shape, generator=generator, device=device, dtype=torch.float32)
        if meta.dim() > 1:
            tensor /= meta.shape[-1] ** 0.5
        else:
            tensor *= 0.1
        if key.endswith(("layernorm.weight", "norm_final.weight")) or "layernorm_list" in key and key.endswith("weight"):
            tensor += 1.0
        state[key] = tensor.to(dtype)
    model.assign_state_(state)
    model.materialize_derived_(device=device, dtype=dtype)
    return model.eval(), state


def diffusers_dit(params: dict[str, Any], state: dict[str, torch.Tensor], device: str | torch.device, dtype: torch.dtype) -> Any:
    """diffusers' CogVideoXTransformer3DModel holding the same weights."""
    from fixtures.dit_diffusers import diffusers_transformer

    with torch.device(device):
        model = diffusers_transformer(params, {k: v.float() for k, v in state.items()})
    return model.to(device=device, dtype=dtype).eval()


def inputs(params: dict[str, Any], frames: int, height: int, width: int, device: Any, dtype: torch.dtype, batch: int = 2,
           seed: int = 0) -> dict[str, torch.Tensor]:
    """Latents (B, T, C, h, w), timesteps (B,) and text (B, 226, 4096) for a latent of frames x height x width."""
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, frames, params["in_channels"], height, width, generator=generator, device=device).to(dtype)
    text_width = params["modules"]["patch_embed_config"]["params"]["text_hidden_size"]
    context = torch.randn(batch, TEXT_TOKENS, text_width, generator=generator, device=device).to(dtype)
    return {"x": x, "timesteps": torch.full((batch,), 500, device=device, dtype=torch.long), "context": context}


def diffusers_call(model: Any, params: dict[str, Any], data: dict[str, torch.Tensor]) -> torch.Tensor:
    """One diffusers transformer forward on the same inputs (its RoPE tables built as its pipeline does)."""
    from fixtures.dit_diffusers import diffusers_rotary

    frames, _, height, width = data["x"].shape[1:]
    rotary = diffusers_rotary(params, frames, height, width)
    if rotary is not None:
        rotary = tuple(t.to(data["x"].device) for t in rotary)
    return model(hidden_states=data["x"], encoder_hidden_states=data["context"], timestep=data["timesteps"],
                 image_rotary_emb=rotary, return_dict=False)[0]


def tokens(params: dict[str, Any], frames: int, height: int, width: int) -> int:
    """Sequence length of the DiT for a latent (text included)."""
    patch = params["patch_size"]
    pt, ph, pw = (1, patch, patch) if isinstance(patch, int) else patch
    return TEXT_TOKENS + (frames // pt) * (height // ph) * (width // pw)
