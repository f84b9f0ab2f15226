"""Write the embedded demo model `cogvideox-tiny` (random weights) into cogvid/demo/cogvideox-tiny/.

Usage: python tools/make_demo_model.py [--out DIR] [--seed N]
The architecture comes from configs/models/cogvideox_tiny.yaml; the weights are seeded random
tensors in the released SAT layouts (transformer/, vae/3d-vae.pt, t5-v1_1-xxl/).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-model builders in tests/fixtures


def random_state(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """Fan-in scaled random matrices, norms near 1, small biases."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if len(shape) == 1:
            is_norm = "norm" in name or "layernorm" in name
            state[name] = 1.0 + 0.1 * noise if is_norm and name.endswith("weight") else 0.02 * noise
        else:
            state[name] = noise / math.sqrt(math.prod(shape[1:]))
    return state


def build(out: Path, seed: int) -> None:
    from fixtures.tiny_t5 import build_tiny_t5

    from cogvid.checkpoint import DIT_PREFIX, save_checkpoint
    from cogvid.config import instantiate, load_config

    cfg = load_config([ROOT / "configs" / "models" / "cogvideox_tiny.yaml"])
    if out.exists():
        shutil.rmtree(out)
    dit = instantiate(cfg.model.network_config, dtype="fp32", device="meta")
    optional = set(dit.optional_state_keys())
    shapes = {k: v.shape for k, v in dit.state_dict().items() if k not in optional}
    save_checkpoint(out / "transformer", {DIT_PREFIX + k: v for k, v in random_state(shapes, seed).items()}, iteration=1)
    vae_node = cfg.model.first_stage_config.copy()
    vae_node.params.ckpt_path = None
    vae_shapes = {k: v.shape for k, v in instantiate(vae_node).state_dict().items()}
    (out / "vae").mkdir(parents=True)
    torch.save({"state_dict": random_state(vae_shapes, seed + 1)}, out / "vae" / "3d-vae.pt")
    build_tiny_t5(out / "t5-v1_1-xxl", d_model=32, seed=seed + 2, sharded=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "cogvid" / "demo" / "cogvideox-tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, args.seed)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
