"""LoRAs in the PEFT / diffusers format (diffusers and finetrainers fine-tunes), merged into cogvid's SAT DiT.

Such a LoRA is a safetensors file of ``<module>.lora_A.weight`` (r, in) and ``<module>.lora_B.weight``
(out, r) pairs named after diffusers' transformer modules (``transformer.transformer_blocks.3.attn1.to_q``,
optionally with PEFT's ``base_model.model.`` prefix): ``pytorch_lora_weights.safetensors`` (diffusers'
``save_lora_weights``) or ``adapter_model.safetensors`` + ``adapter_config.json`` (PEFT's ``save_pretrained``).

The merge is PEFT's, which diffusers' ``fuse_lora`` runs: ``W += scale x (lora_alpha / r) x B A`` per module,
with ``lora_alpha`` and ``r`` from the adapter metadata (``alpha_pattern`` / ``rank_pattern`` per module) and
``lora_alpha = r`` when the file carries none, as diffusers does. The delta of a diffusers module lands in
the rows of the SAT tensor that hold it (``to_q`` -> the first third of ``query_key_value``, see
:mod:`cogvid.diffusers_keys`), computed in float32 and rounded once to the weight's dtype.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cogvid.diffusers_keys import dit_plan
from cogvid.errors import CheckpointError
from cogvid.layout import PEFT_LORA_FILES, peft_lora_file
from cogvid.safetensors_io import SafetensorsFolder

METADATA_KEY = "lora_adapter_metadata"  # where diffusers' save_lora_weights stores the LoRA config
_PREFIXES = ("base_model.model.", "transformer.")
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.default)?\.weight$")
HINT = ("a PEFT/diffusers LoRA is a safetensors file of <module>.lora_A.weight / lora_B.weight pairs for diffusers' "
        f"CogVideoXTransformer3DModel ({' or '.join(PEFT_LORA_FILES)})")


@dataclass
class PeftLora:
    """The LoRA pairs of one PEFT/diffusers LoRA file, by diffusers module name (no ``transformer.`` prefix)."""

    source: Path
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # module -> (A (r, in), B (out, r), lora_alpha / r)

    @property
    def rank(self) -> int:
        return max(int(a.shape[0]) for a, _, _ in self.pairs.values())

    @property
    def layers(self) -> list[int]:
        return sorted({int(m[1]) for module in self.pairs if (m := re.match(r"transformer_blocks\.(\d+)\.", module))})

    @property
    def trained_on(self) -> str:
        return f"a PEFT/diffusers LoRA of rank {self.rank} on {len(self.pairs)} modules of blocks {self.layers[:1]}..{self.layers[-1:]}"

    def fits(self, hidden_size: int, num_layers: int) -> str | None:
        """Why this LoRA does not fit a DiT of that size (None when it fits, as far as sizes tell before loading)."""
        problems = []
        attention = [a for module, (a, _, _) in self.pairs.items() if module.endswith("attn1.to_q")]
        if attention and int(attention[0].shape[1]) != hidden_size:
            problems.append(f"the LoRA has hidden size {attention[0].shape[1]}, the model {hidden_size}")
        if self.layers and self.layers[-1] >= num_layers:
            problems.append(f"the LoRA reaches block {self.layers[-1]}, the model has {num_layers} layers")
        return ", ".join(problems) or None


def read_peft_lora(path: Path | str) -> PeftLora:
    """Read a PEFT/diffusers LoRA (file, or folder holding one), memory-mapped, with its per-module scaling."""
    file = peft_lora_file(Path(path).expanduser())
    if file is None:
        raise CheckpointError(f"{path} is no PEFT/diffusers LoRA", hint=HINT)
    files = SafetensorsFolder(file.parent, file.name.removesuffix(".safetensors"))
    config = _adapter_config(file)
    found: dict[str, dict[str, torch.Tensor]] = {}
    others = []
    for key in files.entries:
        name = key
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        match = _KEY.match(name)
        if match is None:
            others.append(key)
            continue
        found.setdefault(match["module"], {})[match["which"]] = files.mapped(key)
    if others:
        raise CheckpointError(f"{file}: {len(others)} tensor(s) are no LoRA A/B weights, e.g. {others[0]} "
                              "(DoRA magnitudes, kohya alphas and text-encoder LoRAs are not supported)", hint=HINT)
    if not found:
        raise CheckpointError(f"{file} holds no LoRA weights", hint=HINT)
    pairs = {}
    for module, parts in sorted(found.items()):
        if set(parts) != {"A", "B"}:
            raise CheckpointError(f"{file}: module {module} has lora_{''.join(parts)} only", hint=HINT)
        a, b = parts["A"], parts["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{file}: {module} lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not form a pair", hint=HINT)
        rank = int(config.get("rank_pattern", {}).get(module, config.get("r", a.shape[0])))
        alpha = float(config.get("alpha_pattern", {}).get(module, config.get("lora_alpha", rank)))
        pairs[module] = (a, b, alpha / rank)
    return PeftLora(file, pairs)


def _adapter_config(file: Path) -> dict[str, Any]:
    """r / lora_alpha (and per-module patterns): diffusers' safetensors metadata, else PEFT's adapter_config.json."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata() or {}
    raw = metadata.get(METADATA_KEY)
    try:
        if raw is not None:
            packed = json.loads(raw)
            return {key.removeprefix("transformer."): value for key, value in packed.items() if key.startswith("transformer.")}
        beside = file.parent / "adapter_config.json"
        if beside.is_file() and file.name == "adapter_model.safetensors":
            return dict(json.loads(beside.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"cannot read the LoRA config of {file}: {e}", hint=HINT) from e
    return {}


@torch.no_grad()
def apply_peft_loras_(model: torch.nn.Module, loras: Sequence[tuple[PeftLora, float]]) -> None:
    """Merge PEFT/diffusers LoRAs (each with its scale) into a loaded DiT, in place."""
    optional = model.optional_state_keys()  # type: ignore[operator]
    state = {k: v for k, v in model.state_dict().items() if k not in optional}  # share the parameters' storage
    places: dict[str, list[tuple[str, int, int, int, int]]] = {}  # diffusers key -> (SAT key, j, n, index, count)
    for sat_key, parts in dit_plan(state).items():
        for j, part in enumerate(parts):
            places.setdefault(part.key, []).append((sat_key, j, len(parts), part.index, part.count))
    for lora, scale in loras:
        for module, (a, b, scaling) in lora.pairs.items():
            key = f"{module}.weight"
            if key not in places:
                raise CheckpointError(f"{lora.source}: the LoRA adapts {module}, which this DiT has no weight for", hint=HINT)
            delta = (b.float() @ a.float()) * (scaling * scale)  # (out, r) @ (r, in)
            for sat_key, j, n, index, count in places[key]:
                target = state[sat_key]
                rows = target.shape[0] // n
                if delta.shape != (rows * count, *target.shape[1:]):
                    raise CheckpointError(f"{lora.source}: {module} delta {tuple(delta.shape)} does not fit the DiT's weight", hint=HINT)
                piece = target[j * rows : (j + 1) * rows]
                piece.copy_((piece.float() + delta[index * rows : (index + 1) * rows]).to(piece.dtype))
