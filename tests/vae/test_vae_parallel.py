"""Context-parallel decode under torchrun (2 CPU processes, gloo) equals the single-process decode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cogvid.errors import UsageError

WORKER = Path(__file__).parent / "cp_worker.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_rank_decode_equals_single_process(tmp_path, tiny_vae_file, tiny_vae):
    generator = torch.Generator().manual_seed(11)
    latents = {"1.0": torch.randn(1, 16, 13, 2, 3, generator=generator), "1.5": torch.randn(1, 16, 22, 2, 3, generator=generator)}
    torch.save(latents, tmp_path / "latents.pt")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(WORKER), str(tiny_vae_file[0]), str(tmp_path / "latents.pt"),
        str(tmp_path / "out.pt"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    decoded = torch.load(tmp_path / "out.pt", weights_only=True)
    # Bit for bit: the same code on the same machine with the same kernels, so the reference decode
    # here runs on one thread too (the thread count changes how reductions are split).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for schedule, z in latents.items():
            assert torch.equal(decoded[schedule], tiny_vae.decode(z, schedule=schedule)), schedule
    finally:
        torch.set_num_threads(threads)
    # Chunks alternate between the ranks: 6 chunks (1.0) then 10 chunks (1.5).
    assert decoded["chunks_by_rank"] == [[0, 2, 4, 0, 2, 4, 6, 8], [1, 3, 5, 1, 3, 5, 7, 9]]


def test_needs_a_process_group(tiny_vae):
    from cogvid.vae.parallel import decode_parallel

    with pytest.raises(UsageError, match="process group"):
        decode_parallel(tiny_vae, torch.zeros(1, 16, 3, 2, 2))


def test_importing_never_starts_a_process_group():
    code = "import torch.distributed as d, cogvid.vae, cogvid.vae.parallel; print(d.is_initialized())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
