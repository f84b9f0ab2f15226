"""SAT LoRA fine-tunes: read them, describe them, merge them into a DiT (at load time or into a new checkpoint).

A LoRA run of the original ``train_video.py`` is a SAT folder (``latest``,
``<iteration>/mp_rank_00_model_states.pt``, ``model_config.json``, ``training_config.yaml``) whose
``module`` holds the whole engine (REFERENCE §1.4). Per layer ``i`` covered by SAT's ``LoraMixin``::

    transformer.layers.{i}.attention.query_key_value.original.weight / .bias   the fine-tune's base
    transformer.layers.{i}.attention.query_key_value.matrix_A.{0,1,2}          (r, H)  q, k, v
    transformer.layers.{i}.attention.query_key_value.matrix_B.{0,1,2}          (H, r)
    transformer.layers.{i}.attention.dense.original.weight / .bias
    transformer.layers.{i}.attention.dense.matrix_A.0 / matrix_B.0             (r, H) / (H, r)

SAT's ``LoraLinear`` computes ``original(x) + concat_j(x A_jᵀ B_jᵀ) * s`` with ``s = lora_alpha / r``
(alpha 1 unless the training config says otherwise, so ``s = 1/r``). cogvid merges instead:
``W + concat_rows(B_j A_j) * s * scale``, summed over every LoRA in float32 and cast once to the
weight's dtype, as SAT's ``merge_linear_lora`` does for one LoRA. Only the A/B matrices are taken
from a LoRA checkpoint; the base weights come from the model being loaded (a LoRA run trains
with the base frozen, so its ``original.*`` tensors are that base).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cogvid.checkpoint import DIT_PREFIX, describe_dit_state, read_state_dict, save_checkpoint, split_engine_state
from cogvid.errors import CheckpointError, UsageError
from cogvid.layout import LORA_HINT, resolve_checkpoint_file
from cogvid.request import LoraSpec

if TYPE_CHECKING:
    from torch import nn

PROJECTIONS: dict[str, int] = {"query_key_value": 3, "dense": 1}  # attention projection -> SAT partition count
DEFAULT_ALPHA = 1.0  # SAT LoraMixin's lora_alpha default; the released *_lora.yaml only set r

_LORA_KEY = re.compile(r"^transformer\.layers\.(\d+)\.attention\.(query_key_value|dense)\.(matrix_A|matrix_B)\.(\d+)$")
_LAYER_KEY = re.compile(r"^transformer\.layers\.(\d+)\.")



# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class LoraWeights:
    """The LoRA matrices of one SAT LoRA checkpoint (DiT-relative keys), with its rank and alpha."""

    source: Path
    rank: int
    alpha: float
    alpha_from: str
    hidden_size: int
    dtype: torch.dtype
    matrices: dict[tuple[int, str], tuple[list[torch.Tensor], list[torch.Tensor]]]
    model_layers: int
    trained_on: str
    originals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def scaling(self) -> float:
        """SAT's ``lora_alpha / r``."""
        return self.alpha / self.rank

    @property
    def layers(self) -> list[int]:
        """The layer indices that carry LoRA matrices."""
        return sorted({layer for layer, _ in self.matrices})

    @property
    def projections(self) -> list[str]:
        """The attention projections covered (``query_key_value``, ``dense``)."""
        return [p for p in PROJECTIONS if any(proj == p for _, proj in self.matrices)]

    @property
    def parameter_count(self) -> int:
        """Number of LoRA parameters (all A and B matrices)."""
        return sum(t.numel() for a, b in self.matrices.values() for t in (*a, *b))

    def delta(self, layer: int, projection: str, scale: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
        """``concat_rows(B_j A_j) * lora_alpha / r * scale`` in float32 on ``device``: (out, in) like its weight."""
        mats_a, mats_b = self.matrices[(layer, projection)]
        f32 = torch.float32
        parts = [b.to(device, f32) @ a.to(device, f32) for a, b in zip(mats_a, mats_b)]  # (out/partition, r) @ (r, in)
        return torch.cat(parts, dim=0) * (self.scaling * scale)  # (out, in), rows [q; k; v] for qkv

    def fits(self, hidden_size: int, num_layers: int) -> str | None:
        """Why this LoRA does not fit a DiT of that size (None when it fits)."""
        problems = []
        if hidden_size != self.hidden_size:
            problems.append(f"the LoRA has hidden size {self.hidden_size}, the model {hidden_size}")
        if self.model_layers != num_layers or self.layers[-1] >= num_layers:
            problems.append(f"the LoRA has {self.model_layers} layers, the model {num_layers}")
        return ", ".join(problems) or None


def read_lora(path: Path | str) -> LoraWeights:
    """Read the LoRA matrices (memory-mapped) and rank/alpha of a SAT LoRA checkpoint folder or ``.pt`` file.

    Rank and ``lora_alpha`` come from the run's ``training_config.yaml`` / ``model_config.json``
    when they name them; otherwise the rank is read off the matrix shapes and alpha is SAT's default 1.
    """
    source = resolve_checkpoint_file(path)
    dit = split_engine_state(read_state_dict(path))["dit"]
    if not dit:
        raise CheckpointError(f"{source} holds no DiT ('model.diffusion_model.' keys), so it is no CogVideoX LoRA", hint=LORA_HINT)
    found: dict[tuple[int, str], dict[str, dict[int, torch.Tensor]]] = {}
    for key, value in dit.items():
        match = _LORA_KEY.match(key)
        if match:
            layer, proj, which, index = int(match[1]), match[2], match[3], int(match[4])
            found.setdefault((layer, proj), {"matrix_A": {}, "matrix_B": {}})[which][index] = value
    if not found:
        raise CheckpointError(
            f"{source} has no LoRA matrices (no ...attention.query_key_value.matrix_A.* keys): "
            f"it looks like {describe_dit_state(dit)}",
            hint="a full (non-LoRA) fine-tune is a model of its own: pass its folder as the transformer weights. " + LORA_HINT,
        )
    matrices: dict[tuple[int, str], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    ranks, hiddens = set(), set()
    for (layer, proj), parts in sorted(found.items()):
        where = f"transformer.layers.{layer}.attention.{proj}"
        partition = PROJECTIONS[proj]
        for which in ("matrix_A", "matrix_B"):
            if sorted(parts[which]) != list(range(partition)):
                raise CheckpointError(
                    f"{source}: {where} has {which} indices {sorted(parts[which])}; SAT's LoRA layout has "
                    f"{list(range(partition))} ({partition} partition(s))",
                    hint=LORA_HINT,
                )
        mats_a = [parts["matrix_A"][j] for j in range(partition)]
        mats_b = [parts["matrix_B"][j] for j in range(partition)]
        for j, (a, b) in enumerate(zip(mats_a, mats_b)):
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise CheckpointError(
                    f"{source}: {where}.matrix_A.{j} {tuple(a.shape)} and matrix_B.{j} {tuple(b.shape)} do not "
                    "form a LoRA pair (expected (r, H) and (out, r))",
                    hint=LORA_HINT,
                )
            ranks.add(int(a.shape[0]))
            hiddens.add(int(a.shape[1]))
            if int(b.shape[0]) != int(a.shape[1]):
                raise CheckpointError(
                    f"{source}: {where}.matrix_B.{j} has {b.shape[0]} rows; this DiT's {proj} partitions have H = "
                    f"{a.shape[1]} rows",
                    hint=LORA_HINT,
                )
        matrices[(layer, proj)] = (mats_a, mats_b)
    if len(ranks) != 1 or len(hiddens) != 1:
        raise CheckpointError(f"{source}: LoRA matrices disagree on rank {sorted(ranks)} / hidden size {sorted(hiddens)}", hint=LORA_HINT)
    rank, hidden = ranks.pop(), hiddens.pop()
    config_rank, alpha, alpha_from = _training_lora_params(source)
    if config_rank is not None and config_rank != rank:
        raise CheckpointError(
            f"{source}: training_config.yaml says r = {config_rank}, but the LoRA matrices have rank {rank}",
            hint="the config beside the checkpoint belongs to another run",
        )
    originals = {k: v for k, v in dit.items() if ".original." in k and k.endswith(".weight")}
    model_layers = len({m[1] for k in dit if (m := _LAYER_KEY.match(k))})
    first = next(iter(matrices.values()))[0][0]
    return LoraWeights(
        source=source,
        rank=rank,
        alpha=alpha,
        alpha_from=alpha_from,
        hidden_size=hidden,
        dtype=first.dtype,
        matrices=matrices,
        model_layers=model_layers,
        trained_on=describe_dit_state(dit),
        originals=originals,
    )


def _training_lora_params(source: Path) -> tuple[int | None, float, str]:
    """(r, lora_alpha, where alpha came from), from the files SAT training writes beside the checkpoint.

    ``training_config.yaml`` (``model.network_config.params.modules.lora_config.params``) first,
    then ``model_config.json`` (``lora_rank`` / ``r``, ``lora_alpha``); alpha defaults to SAT's 1.
    """
    run = source.parent.parent  # <run>/<iteration>/mp_rank_00_model_states.pt
    rank: int | None = None
    config = run / "training_config.yaml"
    if config.is_file():
        from omegaconf import OmegaConf

        from cogvid.safe_yaml import read_yaml

        data = read_yaml(config, "LoRA training config")  # refuses oversized and alias-bomb files first
        try:
            node = OmegaConf.select(OmegaConf.create(data or {}), "model.network_config.params.modules.lora_config.params")
            params = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        except Exception as e:  # not a mapping, a bad interpolation: OmegaConf raises several error types
            raise CheckpointError(f"cannot read {config}: {str(e).splitlines()[0]}") from e
        if not isinstance(params, dict):
            raise CheckpointError(f"{config}: model.network_config.params.modules.lora_config.params is not a mapping")
        rank = _int_or_none(params.get("r"), config)
        if params.get("lora_alpha") is not None:
            return rank, float(params["lora_alpha"]), str(config)
    model_config = run / "model_config.json"
    if model_config.is_file():
        try:
            data = json.loads(model_config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {model_config}: {e}") from e
        if isinstance(data, dict):
            if rank is None:
                rank = _int_or_none(data.get("lora_rank", data.get("r")), model_config)
            if data.get("lora_alpha") is not None:
                return rank, float(data["lora_alpha"]), str(model_config)
    return rank, DEFAULT_ALPHA, f"default (SAT lora_alpha = {DEFAULT_ALPHA:g})"


def _int_or_none(value: Any, source: Path) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}: LoRA rank r = {value!r} is not an integer") from None


# --------------------------------------------------------------------------------------------
# Describing


def fitting_models(lora: LoraWeights) -> list[str]:
    """Registry models whose DiT has this LoRA's hidden size and layer count."""
    from omegaconf import OmegaConf

    from cogvid.registry import load_registry
    from cogvid.safe_yaml import read_yaml

    names = []
    for entry in load_registry().values():
        params: dict[str, Any] = {}
        for file in entry.config_files():
            node = OmegaConf.select(OmegaConf.create(read_yaml(file) or {}), "model.network_config.params")
            if node is not None:
                params.update({k: node.get(k) for k in ("hidden_size", "num_layers") if node.get(k) is not None})
        if params and lora.fits(int(params["hidden_size"]), int(params["num_layers"])) is None:
            names.append(entry.name)
    return names


def describe_lora(lora: LoraWeights) -> dict[str, Any]:
    """What ``cogvid lora inspect`` reports (JSON-ready)."""
    return {
        "path": str(lora.source),
        "rank": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_alpha_from": lora.alpha_from,
        "scaling": lora.scaling,
        "hidden_size": lora.hidden_size,
        "model_layers": lora.model_layers,
        "lora_layers": lora.layers,
        "projections": lora.projections,
        "parameters": lora.parameter_count,
        "dtype": str(lora.dtype).removeprefix("torch."),
        "trained_on": lora.trained_on,
        "fits": fitting_models(lora),
    }


# --------------------------------------------------------------------------------------------
# Merging


def check_fit(loras: Sequence[LoraWeights], hidden_size: int, num_layers: int, label: str = "the model") -> None:
    """CheckpointError naming the mismatch when a LoRA does not fit a DiT of that size."""
    for lora in loras:
        problem = lora.fits(hidden_size, num_layers)
        if problem:
            raise CheckpointError(
                f"LoRA {lora.source} does not fit {label}: {problem} (the LoRA was trained on {lora.trained_on})",
                hint="use a LoRA trained for this model, or pick the model it was trained for with --model",
            )


def _linear(model: nn.Module, layer: int, projection: str) -> nn.Module:
    """The Linear holding the weight of one attention projection (SAT LoraLinear: its ``original``)."""
    module = getattr(model.transformer.layers[layer].attention, projection)
    return getattr(module, "original", module)


@torch.no_grad()
def apply_loras_(model: nn.Module, loras: Sequence[tuple[LoraWeights, float]]) -> None:
    """Merge ``(lora, scale)`` pairs into a loaded DiT's attention weights, in place.

    Per weight: ``(W.float() + sum of the LoRA deltas).to(W.dtype)`` -- SAT's ``merge_linear_lora``
    for a single LoRA, and one rounding for several. PEFT/diffusers LoRAs (:mod:`cogvid.peft_lora`)
    are merged after the SAT ones, with PEFT's formula. Check the fit first (:func:`check_fit`, before
    the DiT is read).
    """
    from cogvid.peft_lora import PeftLora, apply_peft_loras_

    peft = [(lora, scale) for lora, scale in loras if isinstance(lora, PeftLora)]
    loras = [(lora, scale) for lora, scale in loras if not isinstance(lora, PeftLora)]
    targets = sorted({key for lora, _ in loras for key in lora.matrices})
    for layer, projection in targets:
        linear = _linear(model, layer, projection)
        weight = linear.weight
        merged = weight.float()
        for lora, scale in loras:
            if (layer, projection) in lora.matrices:
                merged = merged + lora.delta(layer, projection, scale, device=weight.device)
        weight.copy_(merged.to(weight.dtype))
    if peft:
        apply_peft_loras_(model, peft)


def load_loras(specs: Sequence[LoraSpec]) -> list[tuple[Any, float]]:
    """Read every LoRA of ``specs`` (memory-mapped) with its scale: SAT LoRA runs as :class:`LoraWeights`,
    PEFT/diffusers safetensors as :class:`cogvid.peft_lora.PeftLora`."""
    from cogvid.layout import peft_lora_file
    from cogvid.peft_lora import read_peft_lora

    return [(read_peft_lora(spec.path) if peft_lora_file(spec.path) else read_lora(spec.path), spec.scale) for spec in specs]


def merge_state(state: Mapping[str, torch.Tensor], loras: Sequence[tuple[LoraWeights, float]], label: str = "the base") -> dict[str, torch.Tensor]:
    """A plain DiT state dict (no prefix) with the LoRAs merged into its qkv/dense weights."""
    qkv = state.get("transformer.layers.0.attention.query_key_value.weight")
    if qkv is None:
        lora_keys = any(".matrix_A." in k or ".original." in k for k in state)
        raise CheckpointError(
            f"{label} is not a plain CogVideoX DiT checkpoint: it looks like {describe_dit_state(state)}",
            hint="merge it first with `cogvid lora apply` (BASE must be a plain transformer folder)" if lora_keys else None,
        )
    layers = len({m[1] for k in state if (m := _LAYER_KEY.match(k))})
    check_fit([lora for lora, _ in loras], int(qkv.shape[1]), layers, label)
    merged = dict(state)
    for layer, projection in sorted({key for lora, _ in loras for key in lora.matrices}):
        key = f"transformer.layers.{layer}.attention.{projection}.weight"
        weight = state[key]
        total = weight.float()
        for lora, scale in loras:
            if (layer, projection) in lora.matrices:
                total = total + lora.delta(layer, projection, scale)
        merged[key] = total.to(weight.dtype)
    return merged


def base_difference(lora: LoraWeights, state: Mapping[str, torch.Tensor]) -> float | None:
    """Largest |difference| between the LoRA's own base (layer 0 qkv ``original.weight``) and ``state``'s."""
    key = "transformer.layers.0.attention.query_key_value"
    theirs, ours = lora.originals.get(f"{key}.original.weight"), state.get(f"{key}.weight")
    if theirs is None or ours is None or theirs.shape != ours.shape:
        return None
    return float((theirs.float() - ours.float()).abs().max())


def merge_checkpoint(base: Path | str, specs: Sequence[LoraSpec], out: Path | str, iteration: int = 1000) -> tuple[Path, list[LoraWeights]]:
    """Write ``base`` + LoRAs as a plain SAT transformer folder at ``out`` (DiT keys only, engine prefix).

    Returns the written ``.pt`` path and the LoRAs read. ``out`` must not exist.
    """
    out = Path(out).expanduser()
    if out.exists():
        raise UsageError(f"{out} already exists; not overwriting it", hint="choose a new --out folder")
    loras = load_loras(specs)
    source = resolve_checkpoint_file(base)
    state = split_engine_state(read_state_dict(base))["dit"]
    if not state:
        raise CheckpointError(f"{source} holds no DiT ('model.diffusion_model.' keys)", hint="BASE must be a SAT transformer folder")
    merged = merge_state(state, loras, label=str(source))
    written = save_checkpoint(out, {DIT_PREFIX + k: v for k, v in merged.items()}, iteration=iteration)
    return written, [lora for lora, _ in loras]
