"""Loading a diffusers-layout transformer vs the SAT layout, on a CogVideoX-2B-shaped checkpoint.

Writes random fp16 weights with the real 2B DiT shapes once, in both layouts (~3.4 GB each: a SAT
folder and a diffusers ``transformer/`` folder of safetensors), then measures ``cogvid.dit.load_dit``
on each in a fresh subprocess: the time until every weight is in memory (``load_dit`` and one pass
over all parameters: a SAT load maps its file and reads it on first use, so ``load_dit`` alone would
compare a lazy load with an eager one; the call alone is reported too; the files are read once first, so
both load from the page cache) and peak RSS (``ru_maxrss``),
also as the growth over the process's RSS just before loading (Python, torch and SAT themselves, ~0.5 GB,
are not the load). The loads alternate ``--repeat`` times; the fastest of each layout counts.
Budget (issue 15): the diffusers load's RSS growth <= 1.1 x the files, and no slower than the SAT load
(time ratio <= 1.1, the noise of one run on a shared machine). Both loads read every weight afterwards
(a checksum), so mapped pages count in RSS, and the two checksums must agree.

Usage: ``python benchmarks/load_diffusers.py [--keep DIR] [--cold]`` (``--keep`` writes the checkpoints there
once and reuses them; ``--cold`` empties the page cache before each load instead, so both read the disk, as
the first load after a download does: needs root); ``--smoke`` runs the same code on a tiny model in seconds (the test suite does).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "models" / "cogvideox_2b.yaml"
RSS_BUDGET = 1.1
TIME_BUDGET = 1.1
SMOKE = {"num_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "time_embed_dim": 64,
         "modules": {"patch_embed_config": {"params": {"text_hidden_size": 32}}}}


def _network_config(smoke: bool):  # noqa: ANN202
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONFIG).model.network_config
    return OmegaConf.merge(node, {"params": SMOKE}) if smoke else node


def write_checkpoints(folder: Path, smoke: bool) -> dict:
    """Random fp16 weights written as ``folder/sat`` (SAT layout) and ``folder/diffusers`` (safetensors)."""
    import torch

    from cogvid.checkpoint import DIT_PREFIX, save_checkpoint
    from cogvid.diffusers_weights import dit_to_diffusers
    from cogvid.dit.model import build_dit
    from cogvid.safetensors_io import save_folder

    model = build_dit(_network_config(smoke), dtype=torch.float16, device="meta")
    optional = model.optional_state_keys()
    generator = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(v.shape, generator=generator) * 0.02).half() for k, v in model.state_dict().items() if k not in optional}
    sat = save_checkpoint(folder / "sat", {DIT_PREFIX + k: v for k, v in state.items()})
    (folder / "diffusers").mkdir()
    shard = 2**20 if smoke else 5 * 10**9  # the smoke run writes shards + index, as the big 5B files are
    files = save_folder(folder / "diffusers", dit_to_diffusers(state), "diffusion_pytorch_model", shard)
    (folder / "diffusers" / "config.json").write_text("{}\n")  # marks the folder as a diffusers part
    return {"sat_bytes": sat.stat().st_size, "diffusers_bytes": sum(f.stat().st_size for f in files)}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(folder: Path, smoke: bool) -> dict:
    import torch

    from cogvid.dit import load_dit
    from cogvid.dit.model import build_dit

    config = _network_config(smoke)
    build_dit(config, dtype=torch.float16, device="meta")  # imports SAT first: its import time is no load time
    before = _rss()
    start = time.perf_counter()
    model = load_dit(config, folder, dtype=torch.float16, device="cpu")
    seconds = time.perf_counter() - start
    with torch.no_grad():  # touches every 2 KiB of every weight: all mapped pages count in RSS (and in the time)
        checksum = float(sum(p.reshape(-1)[::1024].float().abs().sum() for p in model.parameters()))
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"seconds": total, "load_call_seconds": seconds, "checksum": checksum, "peak_rss": peak, "rss_before": before}


def _child(kind: str, folder: str, smoke: bool) -> None:
    if kind == "write":
        print(json.dumps(write_checkpoints(Path(folder), smoke)))
    else:
        print(json.dumps(measure(Path(folder), smoke)))


def _warm(folder: Path) -> None:
    """Read every file of ``folder`` once, so both layouts load from the page cache (disk speed is not the loader's)."""
    buffer = bytearray(64 * 2**20)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(file, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


def _drop_page_cache() -> None:
    """Empty the kernel's page cache (Linux, as root): the next load reads from the disk, as a first load does."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        raise SystemExit(f"--cold needs root on Linux to empty the page cache ({e})") from e


def _run(kind: str, folder: Path, smoke: bool, cold: bool = False) -> dict:
    if kind == "load":
        _drop_page_cache() if cold else _warm(folder)
    command = [sys.executable, __file__, "--child", kind, str(folder)] + (["--smoke"] if smoke else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help="write the checkpoints here once and reuse them")
    parser.add_argument("--repeat", type=int, default=2, help="alternate the two loads this many times; the fastest of each counts")
    parser.add_argument("--smoke", action="store_true", help="a tiny model: checks the benchmark runs, measures nothing useful")
    parser.add_argument("--cold", action="store_true", help="load from the disk: empty the page cache before each load (root)")
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child, args.smoke)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="cogvid-bench-"))
    folder = args.keep or tmp / "checkpoints"
    try:
        sizes_file = folder / "sizes.json"
        if not sizes_file.is_file():
            start = time.perf_counter()
            folder.mkdir(parents=True, exist_ok=True)
            sizes = _run("write", folder, args.smoke)
            sizes_file.write_text(json.dumps(sizes))
            print(f"wrote both layouts ({sizes['sat_bytes'] / 2**30:.2f} GiB each) in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        sizes = json.loads(sizes_file.read_text())
        runs = [(_run("load", folder / "sat", args.smoke, args.cold), _run("load", folder / "diffusers", args.smoke, args.cold))
                for _ in range(args.repeat)]
        sat = min((pair[0] for pair in runs), key=lambda row: row["seconds"])  # the least disturbed run of each
        diffusers = min((pair[1] for pair in runs), key=lambda row: row["seconds"])
        if abs(sat["checksum"] - diffusers["checksum"]) > 1e-3 * max(1.0, abs(sat["checksum"])):
            raise SystemExit(f"loaded weights differ: {sat['checksum']} vs {diffusers['checksum']}")
        print(f"{'layout':<12}{'file (GiB)':>12}{'time (s)':>10}{'call (s)':>10}{'peak RSS (GiB)':>16}{'growth / file':>15}")
        rows = (("SAT", sat, sizes["sat_bytes"]), ("diffusers", diffusers, sizes["diffusers_bytes"]))
        for name, row, size in rows:
            row["growth_ratio"] = (row["peak_rss"] - row["rss_before"]) / size
            print(f"{name:<12}{size / 2**30:>12.2f}{row['seconds']:>10.2f}{row['load_call_seconds']:>10.2f}"
                  f"{row['peak_rss'] / 2**30:>16.2f}{row['growth_ratio']:>15.2f}")
        time_ratio = diffusers["seconds"] / sat["seconds"]
        ok = diffusers["growth_ratio"] <= RSS_BUDGET and time_ratio <= TIME_BUDGET
        print(f"diffusers/SAT time {time_ratio:.2f} (budget {TIME_BUDGET}); diffusers RSS growth / file "
              f"{diffusers['growth_ratio']:.2f} (budget {RSS_BUDGET}) -> {'ok' if ok else 'OVER'}")
        print(json.dumps({"sat": sat, "diffusers": diffusers, "sizes": sizes, "time_ratio": time_ratio, "ok": ok}))
        return 0 if ok or args.smoke else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
