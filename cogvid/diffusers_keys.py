"""The names of the CogVideoX transformer and VAE tensors in the SAT and the diffusers layouts (REFERENCE §8).

The two layouts hold the same numbers. Most tensors are only renamed; two are cut differently:

- SAT's fused attention projection ``query_key_value`` (3H rows) is diffusers' ``to_q``, ``to_k``, ``to_v``
  (H rows each), in that order;
- SAT's per-layer AdaLN modulation (12H rows, chunks c0..c11) is diffusers' ``norm1.linear`` =
  (c0, c1, c2, c6, c7, c8) and ``norm2.linear`` = (c3, c4, c5, c9, c10, c11).

:func:`dit_plan` writes this once as a table, used in both directions: a SAT tensor is the concatenation
along rows of its *parts*, each part being one of ``count`` equal row chunks of a diffusers tensor.
No torch here: the table is names only (``cogvid models show`` and ``--dry-run`` stay light).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_DIT_RENAMES = (  # substring renames, applied in this order (diffusers' converter's order)
    ("transformer.final_layernorm", "norm_final"),
    ("transformer", "transformer_blocks"),
    ("attention", "attn1"),
    ("mlp", "ff.net"),
    ("dense_h_to_4h", "0.proj"),
    ("dense_4h_to_h", "2"),
    (".layers", ""),
    ("dense", "to_out.0"),
    ("input_layernorm", "norm1.norm"),
    ("post_attn1_layernorm", "norm2.norm"),
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    ("ofs_embed.0", "ofs_embedding.linear_1"),
    ("ofs_embed.2", "ofs_embedding.linear_2"),
    ("mixins.patch_embed", "patch_embed"),
    ("mixins.final_layer.norm_final", "norm_out.norm"),
    ("mixins.final_layer.linear", "proj_out"),
    ("mixins.final_layer.adaLN_modulation.1", "norm_out.linear"),
    ("mixins.pos_embed.pos_embedding", "patch_embed.pos_embedding"),  # 5B-I2V's learned table
)
_QKV = re.compile(r"^transformer\.layers\.(\d+)\.attention\.query_key_value\.(weight|bias)$")
_ADALN = re.compile(r"^mixins\.adaln_layer\.adaLN_modulations\.(\d+)\.1\.(weight|bias)$")
_QK_NORM = re.compile(r"^mixins\.adaln_layer\.(query|key)_layernorm_list\.(\d+)\.(weight|bias)$")
# AdaLN: SAT chunk k (of 12) comes from (norm, half of that norm's 6 chunks): norm1 = c0-2, c6-8; norm2 = c3-5, c9-11.
_ADALN_PARTS = (("norm1", 0), ("norm2", 0), ("norm1", 1), ("norm2", 1))


@dataclass(frozen=True)
class Part:
    """Rows of a SAT tensor taken from chunk ``index`` of ``count`` equal row chunks of diffusers tensor ``key``."""

    key: str
    index: int = 0
    count: int = 1


def dit_parts(sat_key: str) -> tuple[Part, ...]:
    """The diffusers tensors (and row chunks) that make up one SAT DiT tensor (DiT-relative key)."""
    if match := _QKV.match(sat_key):
        layer, kind = match.groups()
        return tuple(Part(f"transformer_blocks.{layer}.attn1.{name}.{kind}") for name in ("to_q", "to_k", "to_v"))
    if match := _ADALN.match(sat_key):
        layer, kind = match.groups()
        return tuple(Part(f"transformer_blocks.{layer}.{norm}.linear.{kind}", half, 2) for norm, half in _ADALN_PARTS)
    if match := _QK_NORM.match(sat_key):
        which, layer, kind = match.groups()
        return (Part(f"transformer_blocks.{layer}.attn1.norm_{which[0]}.{kind}"),)
    new = sat_key
    for old, replacement in _DIT_RENAMES:
        new = new.replace(old, replacement)
    return (Part(new),)


def dit_plan(sat_keys: Iterable[str]) -> dict[str, tuple[Part, ...]]:
    """``{SAT key: its parts}`` for every key of a SAT DiT state dict (DiT-relative, no LoRA keys)."""
    return {key: dit_parts(key) for key in sat_keys}


def diffusers_key_counts(plan: dict[str, tuple[Part, ...]]) -> dict[str, int]:
    """Every diffusers key a plan reads, with the number of row chunks it is cut into."""
    return {part.key: part.count for parts in plan.values() for part in parts}


# --------------------------------------------------------------------------------------------
# VAE

_VAE_RENAMES = (
    ("block.", "resnets."),
    ("down.", "down_blocks."),
    ("downsample", "downsamplers.0"),
    ("upsample", "upsamplers.0"),
    ("nin_shortcut", "conv_shortcut"),
    ("encoder.mid.block_1", "encoder.mid_block.resnets.0"),
    ("encoder.mid.block_2", "encoder.mid_block.resnets.1"),
    ("decoder.mid.block_1", "decoder.mid_block.resnets.0"),
    ("decoder.mid.block_2", "decoder.mid_block.resnets.1"),
)


def vae_key(sat_key: str, levels: int) -> str:
    """diffusers' name of a SAT VAE tensor (``levels`` = len(ch_mult)); the decoder's up blocks run in reverse."""
    new = sat_key
    for old, replacement in _VAE_RENAMES:
        new = new.replace(old, replacement)
    parts = new.split(".")
    if parts[0] == "decoder" and parts[1] == "up":
        parts[1], parts[2] = "up_blocks", str(levels - 1 - int(parts[2]))
    return ".".join(parts)


# --------------------------------------------------------------------------------------------
# LoRA (SAT LoraMixin matrices <-> PEFT / diffusers names)

LORA_PROJECTIONS = {"query_key_value": ("to_q", "to_k", "to_v"), "dense": ("to_out.0",)}


def lora_module(layer: int, projection: str, partition: int) -> str:
    """The diffusers module (under ``transformer.``) of partition ``partition`` of a SAT LoRA projection."""
    return f"transformer_blocks.{layer}.attn1.{LORA_PROJECTIONS[projection][partition]}"


_DIFFUSERS_ATTENTION = re.compile(r"^transformer_blocks\.(\d+)\.attn1\.(to_q|to_k|to_v|to_out\.0)$")


def sat_projection(module: str) -> tuple[int, str, int] | None:
    """(layer, SAT projection, partition) of a diffusers attention module name; None for other modules."""
    match = _DIFFUSERS_ATTENTION.match(module)
    if match is None:
        return None
    layer, name = int(match[1]), match[2]
    for projection, names in LORA_PROJECTIONS.items():
        if name in names:
            return layer, projection, names.index(name)
    return None  # pragma: no cover - the regex only admits the names above
