"""``cogvid models list|show``: what models cogvid knows and whether their weights are present."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cogvid.cli import console
from cogvid.cli.options import MODEL_OPTIONS, OUTPUT_OPTIONS, complete_model

app = typer.Typer(help="List the known models and inspect one.", no_args_is_help=True)
_OPTIONS = {option.name: option.info for option in (*MODEL_OPTIONS, *OUTPUT_OPTIONS)}


@app.command("list")
def list_models(weights: Optional[Path] = _OPTIONS["weights"], as_json: bool = _OPTIONS["as_json"]) -> None:
    """Show every known model: task, size, default size x frames @ fps, dtype, weights found or missing.

    Example: cogvid models list --weights /data/cogvideox
    """
    from rich.table import Table

    from cogvid.registry import load_registry, weights_root

    entries = list(load_registry().values())
    summaries = [entry.summary(weights) for entry in entries]
    if as_json:
        console.print_json({"weights_root": str(weights_root(weights)), "models": summaries})
        return
    table = Table(title=f"Models (weights root: {weights_root(weights)})", title_justify="left")
    for column in ("name", "task", "params", "default size x frames @ fps", "dtype", "weights", "layout"):
        table.add_column(column, overflow="fold")
    missing_lines = []
    for entry, summary in zip(entries, summaries):
        status = "[green]found[/]" if summary["weights_found"] else "[red]missing[/]"
        if not summary["weights_found"]:
            missing = [part for part, info in summary["weights"].items() if not info["found"]]
            missing_lines.append(f"{entry.name}: missing {', '.join(missing)} at {summary['model_dir']}")
        size = f"{entry.width}x{entry.height} x {entry.frames} @ {entry.fps}"
        table.add_row(entry.name, entry.task, entry.parameters, size, entry.dtype, status,
                      f"{summary['layout']} {summary['model_dir']}" if summary["weights_found"] else "")
    console.out.print(table)
    for line in missing_lines:
        console.out.print(line, soft_wrap=True)
    if missing_lines:
        console.err.print("Get the missing weights: cogvid models pull NAME (or see cogvid models show NAME)")


@app.command("pull")
def pull_model(
    name: str = typer.Argument(..., help="Model name (see `cogvid models list`).", autocompletion=complete_model),
    layout: str = typer.Option("diffusers", "--layout", help="diffusers (every model) or sat (the 1.5 models)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of the Hub repo (default: main)."),
    weights: Optional[Path] = _OPTIONS["weights"],
    as_json: bool = _OPTIONS["as_json"],
) -> None:
    """Download a model from the Hugging Face Hub into the weights root (resumable; checks free disk first).

    HF_TOKEN, HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE are honoured; files go to the Hugging Face
    cache (shared with diffusers) and the model folder links to them.

    Example: cogvid models pull cogvideox-5b
    """
    from cogvid.hub import describe_plan, plan_pull, pull, rich_progress

    plan = plan_pull(name, layout, revision, weights)
    info = describe_plan(plan)
    if info["missing_bytes"] is None:
        console.err.print(f"{plan.repo}: offline (HF_HUB_OFFLINE), using the Hugging Face cache {plan.cache_dir}", markup=False)
    else:
        console.err.print(f"{plan.repo}: {info['files']} files, {info['missing_bytes'] / 2**30:.2f} GiB to download "
                          f"of {info['total_bytes'] / 2**30:.2f} GiB; {info['free_bytes'] / 2**30:.1f} GiB free in {plan.cache_dir}", markup=False)
    info["folder"] = str(pull(plan, progress=None if as_json else rich_progress()))
    if as_json:
        console.print_json(info)
        return
    console.out.print(info["folder"], markup=False)
    console.err.print(f"{name} ({layout} layout) is ready: cogvid t2v PROMPT -m {name}", markup=False)


@app.command("show")
def show_model(
    name: str = typer.Argument(..., help="Model name (see `cogvid models list`).", autocompletion=complete_model),
    weights: Optional[Path] = _OPTIONS["weights"],
    config: list[Path] = _OPTIONS["config"],
    overrides: list[str] = _OPTIONS["overrides"],
    as_json: bool = _OPTIONS["as_json"],
) -> None:
    """Show one model: merged configuration, weight paths (found / missing) and where to download them.

    With --config and --set it shows the configuration a generation would use.

    Example: cogvid models show cogvideox-5b --set args.sampling_num_frames=11
    """
    from cogvid.prepare import describe_model
    from cogvid.request import ModelChoice

    info = describe_model(ModelChoice(name, weights, tuple(config), tuple(overrides)))
    if as_json:
        console.print_json(info)
        return
    import yaml
    from rich.panel import Panel
    from rich.syntax import Syntax

    out = console.out
    out.print(f"[bold]{info['title']}[/] ({name}) — {info['description']}")
    out.print(
        f"task {info['task']} · CogVideoX {info['generation']} · {info['parameters']} parameters · "
        f"{info['width']}x{info['height']} x {info['frames']} frames @ {info['fps']} fps · {info['dtype']}"
    )
    run = info["generation_defaults"]
    if (run["frames"], run["fps"]) != (info["frames"], info["fps"]) or run["height"] not in (None, info["height"]) or run["width"] not in (None, info["width"]):
        size = f"{run['width']}x{run['height']}" if run["height"] else "the image's size"
        out.print(f"with this configuration: {size} x {run['frames']} frames @ {run['fps']} fps")
    out.print("config files: " + ", ".join(info["config_files"]))
    out.print(f"\n[bold]Weights[/] ({info['layout']} layout) in {info['model_dir']}:")
    for part, weight in info["weights"].items():
        out.print(f"  {'[green]found  [/]' if weight['found'] else '[red]missing[/]'} {part:<12} {weight['path']}")
    if not info["weights_found"] and info["pull"]:
        out.print("\n[bold]Download[/] with: " + " or ".join(info["pull"]))
    if not info["weights_found"] and info["download"]:
        out.print("\n[bold]Manual download[/] (then place the files as above):")
        for part, where in info["download"].items():
            out.print(f"  {part:<12} {where.replace('<folder>', info['model_dir'])}")
    out.print()
    merged = yaml.safe_dump(info["config"], sort_keys=False)
    out.print(Panel(Syntax(merged, "yaml", word_wrap=True), title="merged configuration"))
