"""Checkpoint loading budget: cogvid ``load_dit`` vs SAT's ``load_checkpoint`` path on a CogVideoX-2B-sized file.

Writes a random fp16 checkpoint with the real 2B DiT keys and shapes (~3.5 GB, in a temporary
folder deleted afterwards; ``--config`` takes another model YAML), then measures in fresh subprocesses:

(a) ``cogvid.dit.load_dit`` (meta build, mmap, assign), and
(b) the original's path: build the model (random init), ``.half()``, ``torch.load`` the whole
    file, ``load_state_dict`` (SAT's ``load_checkpoint``).

Prints peak RSS (``ru_maxrss``), the ratio peak-RSS / file size (budget: <= 1.3) and the
wall-time ratio. Usage: ``python benchmarks/load_checkpoint.py [--keep DIR] [--config MODEL_YAML] [--smoke]``;
``--smoke`` uses the tiny demo model's config (a file of a few MB: checks that it runs, not a measurement).
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
SMOKE_CONFIG = ROOT / "configs" / "models" / "cogvideox_tiny.yaml"


def _network_config(config: Path):  # noqa: ANN202
    from omegaconf import OmegaConf

    return OmegaConf.load(config).model.network_config


def write_checkpoint(folder: Path, config: Path) -> int:
    """Write random fp16 2B-shaped weights in the SAT layout; returns the file size in bytes."""
    import torch

    from cogvid.checkpoint import DIT_PREFIX, save_checkpoint
    from cogvid.dit.model import build_dit

    model = build_dit(_network_config(config), dtype=torch.float16, device="meta")
    optional = model.optional_state_keys()
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, value in model.state_dict().items():
        if key in optional:
            continue
        state[DIT_PREFIX + key] = (torch.randn(value.shape, generator=generator) * 0.02).half()
    path = save_checkpoint(folder, state)
    return path.stat().st_size


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _checksum(model) -> float:  # noqa: ANN001
    import torch

    with torch.no_grad():  # no autograd graph holding float copies
        return float(sum(p.float().abs().sum() for p in model.parameters()))


def measure_cogvid(folder: Path, config: Path) -> dict:
    import torch

    from cogvid.dit import load_dit

    start = time.perf_counter()
    model = load_dit(_network_config(config), folder, dtype=torch.float16, device="cpu")
    loaded_rss = _peak_rss()
    checksum = _checksum(model)  # reads every weight, so mapped pages count in RSS
    return {"seconds": time.perf_counter() - start, "checksum": checksum, "rss_after_load": loaded_rss}


def measure_sat(folder: Path, config: Path) -> dict:
    import torch
    import torch.distributed as dist

    from cogvid.config import instantiate

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    from sat import mpu
    from sat.training.model_io import load_checkpoint

    mpu.initialize_model_parallel(1)
    start = time.perf_counter()
    dit = instantiate(_network_config(config), dtype="fp32")  # as the original: built in fp32 with random init
    engine = torch.nn.Module()
    engine.model = torch.nn.Module()
    engine.model.diffusion_model = dit
    engine.half()
    load_checkpoint(engine, argparse.Namespace(mode="inference", force_inference=True), load_path=str(folder))
    checksum = _checksum(dit)
    return {"seconds": time.perf_counter() - start, "checksum": checksum}


def _child(kind: str, folder: str, config: str) -> None:
    if kind == "write":
        print(json.dumps({"size": write_checkpoint(Path(folder), Path(config))}))
        return
    result = (measure_cogvid if kind == "cogvid" else measure_sat)(Path(folder), Path(config))
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps(result))


def _run(kind: str, folder: Path, config: Path) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(folder), str(config)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help="write the checkpoint here and keep it")
    parser.add_argument("--config", type=Path, default=CONFIG, help="model YAML whose DiT is written (default: CogVideoX-2B)")
    parser.add_argument("--smoke", action="store_true", help="the tiny demo model's DiT: checks that it runs")
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    config = SMOKE_CONFIG if args.smoke else args.config.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="cogvid-bench-"))
    folder = args.keep or tmp / "transformer"
    try:
        start = time.perf_counter()
        size = _run("write", folder, config)["size"]  # in a child: ru_maxrss survives fork+exec
        print(f"wrote {size / 2**30:.2f} GiB checkpoint in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        cogvid, sat = _run("cogvid", folder, config), _run("sat", folder, config)
        if abs(cogvid["checksum"] - sat["checksum"]) > 1e-3 * max(1.0, abs(sat["checksum"])):
            raise SystemExit(f"loaded weights differ: {cogvid['checksum']} vs {sat['checksum']}")
        print(f"{config.name} DiT")
        print(f"{'loader':<28}{'time (s)':>10}{'peak RSS (GiB)':>16}{'RSS / file':>12}")
        for name, row in (("cogvid load_dit", cogvid), ("SAT load_checkpoint path", sat)):
            print(f"{name:<28}{row['seconds']:>10.2f}{row['peak_rss_bytes'] / 2**30:>16.2f}{row['peak_rss_bytes'] / size:>12.2f}")
        print(f"file size {size / 2**30:.2f} GiB; time ratio cogvid/SAT {cogvid['seconds'] / sat['seconds']:.2f}; "
              f"budget: RSS/file <= 1.3 -> {'ok' if cogvid['peak_rss_bytes'] / size <= 1.3 else 'OVER'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
