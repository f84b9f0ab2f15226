"""Importing cogvid's DiT (and so SAT) and building a model leaves global state alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import logging, random, sys
import numpy as np
import torch
sys.path.insert(0, TESTS)
logging.basicConfig(level=logging.ERROR)
logging.getLogger("caller").setLevel(logging.DEBUG)
random.seed(5); np.random.seed(5); torch.manual_seed(5)
before = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().clone())
def logging_state():
    loggers = {n: (l.level, list(l.handlers)) for n, l in logging.Logger.manager.loggerDict.items() if isinstance(l, logging.Logger)}
    return logging.root.level, list(logging.root.handlers), loggers
root_before = logging_state()

import cogvid, cogvid.dit, cogvid.checkpoint
assert "sat" not in sys.modules, "importing cogvid.dit / cogvid.checkpoint must not import SAT"
from cogvid.config import instantiate
from fixtures.tiny_dit import tiny_network_config
model = instantiate(tiny_network_config("5b", lora_r=2), dtype="fp32").eval()
assert "sat" in sys.modules
out = model(torch.zeros(1, 1, 4, 8, 8), torch.tensor([1.0]), torch.zeros(1, 8, 32))

after = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state())
assert before[0] == after[0], "python random state changed"
assert before[1] == after[1], "numpy random state changed"
assert torch.equal(before[2], after[2]), "torch random state changed"
level, handlers, loggers = logging_state()
assert (level, handlers) == root_before[:2], "root logger changed"
assert all(loggers[n] == v for n, v in root_before[2].items()), "a caller's logger changed"
assert not torch.distributed.is_initialized(), "a process group was left behind"
from sat import mpu
assert not mpu.model_parallel_is_initialized(), "SAT model-parallel state was left behind"
assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.deterministic
print("ok")
"""


def test_import_and_build_leave_rng_logging_and_distributed_state_alone():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("TESTS", repr(str(TESTS)))],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
    assert "WARNING" not in result.stderr and "INFO" not in result.stderr, result.stderr[-2000:]
