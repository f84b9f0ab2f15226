"""``cogvid export``: a model (SAT or diffusers layout, LoRAs merged) as a diffusers folder, or a SAT LoRA as a
PEFT/diffusers LoRA file.

The exported folder is what ``CogVideoXPipeline.from_pretrained`` (or the image-to-video pipeline) loads:
``model_index.json``, transformer/ and vae/ (safetensors + config.json), text_encoder/ and tokenizer/
(the model's T5 files, hard-linked when the file system allows) and scheduler/. Like every cogvid
writer it is atomic and never overwrites: the folder is assembled under a temporary name beside
``out`` and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from cogvid.devices import resolve_dtype
from cogvid.diffusers_keys import lora_module
from cogvid.diffusers_layout import DIFFUSERS_STEM, TOKENIZER_FILES, export_configs
from cogvid.diffusers_weights import dit_to_diffusers, vae_to_diffusers
from cogvid.errors import UsageError
from cogvid.prepare import ResolvedModel, resolve_model
from cogvid.request import LoraSpec, ModelChoice
from cogvid.safetensors_io import DEFAULT_SHARD_BYTES, save_folder

LORA_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers' load_lora_weights looks for in a folder


@dataclass(frozen=True)
class Exported:
    """What an export wrote: the folder, its files and their total size."""

    folder: Path
    files: list[Path]

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


@contextmanager
def _new_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed to ``out`` when the block completes (removed if it fails)."""
    if out.exists():
        raise UsageError(f"{out} already exists; not overwriting it", hint="choose a new output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        os.rename(tmp, out)  # atomic on one file system; fails if out appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def export_diffusers(
    model: ResolvedModel | ModelChoice,
    out: Path | str,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Callable[[str], None] | None = None,
) -> Exported:
    """Write ``model`` (with its choice's LoRAs merged) as a diffusers-layout folder at ``out``.

    ``dtype``: of the transformer (default: the model's, fp16/bf16 for the released ones); the VAE is
    written in float32, as diffusers' converter does.
    """
    from cogvid.config import instantiate
    from cogvid.dit import load_dit
    from cogvid.lora import apply_loras_, check_fit, load_loras

    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    out = Path(out).expanduser()
    report = progress or (lambda stage: None)
    paths, cfg = resolved.paths, resolved.cfg
    paths.check(resolved.name)
    run_dtype = resolve_dtype(dtype, resolved.model_dtype, torch.device("cuda"))  # the model's own, as on a GPU
    loras = load_loras(resolved.choice.loras)
    net = cfg.model.network_config.params
    check_fit([weights for weights, _ in loras], int(net.hidden_size), int(net.num_layers), resolved.name)
    if out.exists():
        raise UsageError(f"{out} already exists; not overwriting it", hint="choose a new output folder")
    with _new_folder(out) as tmp:
        report("transformer")
        dit = load_dit(cfg.model.network_config, paths.transformer, dtype=run_dtype, device="cpu")
        if loras:
            apply_loras_(dit, loras)
        optional = dit.optional_state_keys()
        state = {k: v for k, v in dit.state_dict().items() if k not in optional}
        (tmp / "transformer").mkdir()
        files = save_folder(tmp / "transformer", dit_to_diffusers(state), DIFFUSERS_STEM, max_shard_bytes)
        del dit, state
        report("vae")
        vae = instantiate(_vae_node(cfg, paths.vae))
        levels = len(cfg.model.first_stage_config.params.decoder_config.params.ch_mult)
        (tmp / "vae").mkdir()
        vae_state = {k: v.float() for k, v in vae.state_dict().items()}
        files += save_folder(tmp / "vae", vae_to_diffusers(vae_state, levels), DIFFUSERS_STEM, max_shard_bytes)
        del vae, vae_state
        report("text encoder")
        files += _copy_t5(paths.t5, paths.tokenizer, tmp)
        for relative, config in export_configs(cfg, image_to_video=resolved.spec.task == "i2v").items():
            target = tmp / relative
            target.parent.mkdir(exist_ok=True)
            target.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            files.append(target)
    return Exported(out, [out / f.relative_to(tmp) for f in files])


def _vae_node(cfg: DictConfig, vae_path: Path) -> DictConfig:
    from omegaconf import OmegaConf

    node = OmegaConf.merge(cfg.model.first_stage_config, {"params": {"ckpt_path": str(vae_path)}})
    assert isinstance(node, DictConfig)
    return node


def _copy_t5(t5: Path, tokenizer: Path | None, tmp: Path) -> list[Path]:
    """text_encoder/ (config.json + weights) and tokenizer/ (vocabulary files) from a T5 folder."""
    written = []
    vocab_dir = tokenizer or t5
    for part in ("text_encoder", "tokenizer"):
        (tmp / part).mkdir()
    for source in sorted(t5.iterdir()):
        if source.is_file() and source.name not in TOKENIZER_FILES and not source.name.startswith("."):
            _link_or_copy(source, tmp / "text_encoder" / source.name)
            written.append(tmp / "text_encoder" / source.name)
    for source in sorted(vocab_dir.iterdir()):
        if source.is_file() and source.name in TOKENIZER_FILES:
            _link_or_copy(source, tmp / "tokenizer" / source.name)
            written.append(tmp / "tokenizer" / source.name)
    return written


# --------------------------------------------------------------------------------------------
# A SAT LoRA as a PEFT / diffusers LoRA


def export_lora(lora: LoraSpec, out: Path | str, model: ResolvedModel | None = None) -> Exported:
    """Write a SAT LoRA as ``out/pytorch_lora_weights.safetensors`` in diffusers' PEFT format.

    Keys ``transformer.transformer_blocks.{i}.attn1.{to_q,to_k,to_v,to_out.0}.lora_{A,B}.weight``; SAT's
    ``lora_alpha / r`` and the spec's scale are folded into ``lora_B``, so diffusers' fuse (scale 1,
    alpha = r when a file carries no adapter metadata) adds exactly ``B A x lora_alpha / r x scale``, cogvid's
    merge. ``model``: when given, the LoRA must fit its DiT.
    """
    from safetensors.torch import save_file

    from cogvid.lora import check_fit, read_lora

    weights = read_lora(lora.path)
    if model is not None:
        net = model.cfg.model.network_config.params
        check_fit([weights], int(net.hidden_size), int(net.num_layers), model.name)
    factor = weights.scaling * lora.scale
    tensors: dict[str, torch.Tensor] = {}
    for (layer, projection), (mats_a, mats_b) in sorted(weights.matrices.items()):
        for partition, (a, b) in enumerate(zip(mats_a, mats_b)):
            name = f"transformer.{lora_module(layer, projection, partition)}"
            tensors[f"{name}.lora_A.weight"] = a.detach().contiguous()  # (r, in)
            tensors[f"{name}.lora_B.weight"] = (b.float() * factor).to(b.dtype).contiguous()  # (out, r)
    out = Path(out).expanduser()
    with _new_folder(out) as tmp:
        save_file(tensors, str(tmp / LORA_FILE), metadata={"format": "pt"})
    return Exported(out, [out / LORA_FILE])


def export(
    source: str,
    out: Path | str,
    *,
    to: str = "diffusers",
    weights: str | Path | None = None,
    configs: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    loras: Sequence[str | Path | LoraSpec] = (),
    lora_only: bool = False,
    dtype: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Exported:
    """The library side of ``cogvid export SRC OUT``: a model (registry name or folder) or, with ``lora_only``,
    its one LoRA."""
    if to != "diffusers":
        raise UsageError(f"cannot export to {to!r}", hint="--to diffusers is the only target")
    choice = ModelChoice(source, weights, tuple(configs), tuple(overrides), tuple(loras))
    resolved = resolve_model(choice)
    if lora_only:
        if len(choice.loras) != 1:
            raise UsageError("--lora-only exports exactly one LoRA", hint="give one --lora PATH[:SCALE]")
        return export_lora(choice.loras[0], out, resolved)
    return export_diffusers(resolved, out, dtype=dtype, progress=progress)
