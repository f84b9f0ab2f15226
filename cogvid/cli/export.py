"""``cogvid export SRC OUT --to diffusers``: a model (LoRAs merged) or one LoRA in the diffusers layout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cogvid.cli import console
from cogvid.cli.options import MODEL_OPTIONS, OUTPUT_OPTIONS, complete_model

EXAMPLES = """\
Examples:

  cogvid export cogvideox-5b exports/cogvideox-5b --to diffusers
  cogvid export ckpts/my-finetune exports/mine --to diffusers          # a fine-tune folder with its YAML
  cogvid export cogvideox-5b exports/styled --lora ckpts/lora-09-09:0.8  # the LoRA merged
  cogvid export cogvideox-5b exports/lora --lora ckpts/lora-09-09 --lora-only  # a PEFT LoRA file
"""
_OPTIONS = {option.name: option.info for option in (*MODEL_OPTIONS, *OUTPUT_OPTIONS)}


def export(
    source: str = typer.Argument(..., help="Model name, or a model folder (SAT with its YAMLs, or diffusers).", autocompletion=complete_model),
    out: Path = typer.Argument(..., help="New folder to write (must not exist)."),
    to: str = typer.Option("diffusers", "--to", help="Target layout: diffusers (what CogVideoXPipeline.from_pretrained loads)."),
    lora: list[str] = _OPTIONS["lora"],
    lora_only: bool = typer.Option(False, "--lora-only", help="Write only the one --lora, as a PEFT/diffusers LoRA (pytorch_lora_weights.safetensors)."),
    weights: Optional[Path] = _OPTIONS["weights"],
    config: list[Path] = _OPTIONS["config"],
    overrides: list[str] = _OPTIONS["overrides"],
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Transformer dtype: fp32, fp16 or bf16 (default: the model's)."),
    as_json: bool = _OPTIONS["as_json"],
) -> None:
    """Write a model as a diffusers folder (safetensors, configs, T5), LoRAs merged; atomic, never overwriting."""
    from cogvid.export import export as export_model

    exported = export_model(source, out, to=to, weights=weights, configs=config, overrides=overrides, loras=lora,
                            lora_only=lora_only, dtype=dtype, progress=lambda stage: console.err.print(f"writing {stage}"))
    record = {"folder": str(exported.folder), "files": len(exported.files), "bytes": exported.nbytes}
    if as_json:
        console.print_json(record)
        return
    console.out.print(record["folder"], markup=False)
    console.err.print(f"wrote {record['files']} files, {record['bytes'] / 2**30:.2f} GiB", markup=False)
