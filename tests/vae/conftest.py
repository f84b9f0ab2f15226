"""Tiny VAE files shared by the VAE tests (built once per session)."""

from __future__ import annotations

import pytest

from fixtures.tiny_vae import tiny_first_stage_config, write_tiny_vae


@pytest.fixture(scope="session")
def tiny_vae_file(tmp_path_factory) -> tuple:
    """(path, state_dict) of a tiny ``3d-vae.pt`` written with seed 0."""
    path = tmp_path_factory.mktemp("vae") / "3d-vae.pt"
    state = write_tiny_vae(path, seed=0)
    return path, state


@pytest.fixture(scope="session")
def tiny_vae(tiny_vae_file):
    """The tiny VAE (generation 1.0) loaded from :func:`tiny_vae_file`."""
    from cogvid.config import instantiate

    return instantiate(tiny_first_stage_config(ckpt_path=str(tiny_vae_file[0])))
