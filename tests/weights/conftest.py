"""Model copies in both layouts, shared by the weight-format tests (built once per module that asks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))  # e2e_reference: diffusers pipelines of cogvid weights


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models are fastest on one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
