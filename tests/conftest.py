"""Shared fixtures: every test runs with its own weights root and cache, never the user's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Make `tests/fixtures` importable as `fixtures` (tiny-model builders shared by all test areas).
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def test_model_registry(tmp_path_factory):
    """Build the random `test-tiny` model once per session, register it (``$COGVID_MODELS``) and
    make it the default model for every test, module-scoped fixtures included (the shipped demo
    model has its own tests). Yields the registry file."""
    from fixtures.test_model import build_test_model

    registry = build_test_model(tmp_path_factory.mktemp("test-model"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COGVID_MODELS", str(registry))
        patch.setenv("COGVID_DEFAULT_MODEL", "test-tiny")
        yield registry


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Point cogvid's weights root, caches and history at a fresh temporary folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("COGVID_WEIGHTS", str(home / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    return home


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
