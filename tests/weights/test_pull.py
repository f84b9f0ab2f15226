"""`cogvid models pull` without the network (issue 15, must-show 3).

A Hugging Face cache is filled by hand in the Hub's own layout (blobs, snapshot links, refs/main); with
``HF_HUB_OFFLINE=1`` the pull goes through huggingface_hub's real ``snapshot_download``, links the model
folder and the model runs. The refusal when the disk is too small is checked with huggingface_hub's dry run
replaced (nothing may be fetched); offline and not cached is a clear error. No test touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import cogvid
from cogvid.cli.app import app
from cogvid.errors import MissingFileError, UsageError
from fixtures.diffusers_copy import save_diffusers_copy

pytestmark = pytest.mark.slow

REPO = "cogvid-tests/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hf_cache(cache: Path, repo: str, source: Path, commit: str = COMMIT) -> Path:
    """``source``'s files as huggingface_hub stores a download: content-addressed blobs, a snapshot of
    relative links to them, and ``refs/main`` naming the commit. Returns the snapshot folder."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def hub_setup(tmp_path_factory, test_model_registry):
    """A Hugging Face cache holding a diffusers copy of test-tiny, and a registry naming it as ``tiny-hub``."""
    root = tmp_path_factory.mktemp("hub")
    copy = save_diffusers_copy(cogvid.load("test-tiny"), root / "copy")
    snapshot = populate_hf_cache(root / "hf", REPO, copy)
    registry = yaml.safe_load(Path(test_model_registry).read_text())
    tiny = registry["models"]["test-tiny"]
    registry["models"]["tiny-hub"] = {**tiny, "folder": "tiny-hub", "hub": {"diffusers": REPO}}
    registry["models"]["tiny-elsewhere"] = {**tiny, "folder": "tiny-elsewhere", "hub": {"diffusers": "cogvid-tests/not-cached"}}
    (root / "models.yaml").write_text(yaml.safe_dump(registry))
    return {"cache": root / "hf", "snapshot": snapshot, "registry": root / "models.yaml"}


def _env(setup: dict, weights: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(setup["cache"]), COGVID_MODELS=str(setup["registry"]),
               COGVID_WEIGHTS=str(weights), **extra)
    return env


def _cogvid(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cogvid", *args], env=env, capture_output=True, text=True, timeout=300)


def test_offline_pull_from_the_cache_links_the_model_and_it_runs(hub_setup, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    env = _env(hub_setup, weights)
    shown = _cogvid(["models", "show", "tiny-hub"], env)
    assert shown.returncode == 0 and "cogvid models pull tiny-hub" in shown.stdout
    result = _cogvid(["models", "pull", "tiny-hub", "--json"], env)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    folder = weights / "tiny-hub-diffusers"
    assert record["folder"] == str(folder) and record["offline"] and record["missing_bytes"] is None
    assert folder.is_symlink() and folder.resolve() == hub_setup["snapshot"].resolve()
    listed = json.loads(_cogvid(["models", "list", "--json"], env).stdout)
    entry = next(m for m in listed["models"] if m["name"] == "tiny-hub")
    assert entry["layout"] == "diffusers" and entry["weights_found"] and entry["model_dir"] == str(folder)
    again = _cogvid(["models", "pull", "tiny-hub", "--json"], env)  # a second pull replaces its own link
    assert again.returncode == 0, again.stderr
    # The pulled model runs, and gives test-tiny's frames.
    noise = torch.randn((1, 3, 16, 6, 8), generator=torch.Generator().manual_seed(0))
    expected = cogvid.load("test-tiny").generate("a cat", num_frames=9, steps=2, seed=1, latents=noise)
    monkeypatch.setenv("COGVID_MODELS", str(hub_setup["registry"]))
    pulled = cogvid.load("tiny-hub", weights=weights).generate("a cat", num_frames=9, steps=2, seed=1, latents=noise)
    assert np.array_equal(pulled.frames, expected.frames)


def test_offline_and_not_cached_is_a_clear_error(hub_setup, tmp_path):
    result = _cogvid(["models", "pull", "tiny-elsewhere"], _env(hub_setup, tmp_path / "w"))
    assert result.returncode == 3, result.stderr
    assert "not in the Hugging Face cache" in result.stderr and "HF_HUB_OFFLINE" in result.stderr
    assert not (tmp_path / "w" / "tiny-elsewhere-diffusers").exists()


def test_refuses_when_the_disk_is_too_small(hub_setup, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.file_download import DryRunFileInfo

    import cogvid.hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(kwargs)
        assert kwargs.get("dry_run"), "the pull fetched files although the disk is too small"
        return [DryRunFileInfo(COMMIT, 3 * 2**30, "transformer/diffusion_pytorch_model.safetensors", "", False, True),
                DryRunFileInfo(COMMIT, 10, "model_index.json", "", True, False)]

    monkeypatch.setenv("COGVID_MODELS", str(hub_setup["registry"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(cogvid.hub.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100 * 2**30, 98 * 2**30, 2 * 2**30))
    plan = cogvid.hub.plan_pull("tiny-hub", weights=tmp_path / "w")
    assert (plan.missing_bytes, plan.total_bytes, plan.files) == (3 * 2**30, 3 * 2**30 + 10, 2) and not plan.fits
    with pytest.raises(cogvid.hub.DownloadError, match="needs 3.00 GiB more") as error:
        cogvid.hub.pull(plan)
    assert error.value.exit_code == 1 and "HF_HUB_CACHE" in error.value.hint
    assert len(calls) == 1 and not (tmp_path / "w").exists()
    result = CliRunner().invoke(app, ["models", "pull", "tiny-hub", "--weights", str(tmp_path / "w")])
    assert result.exit_code == 1 and "3.00 GiB to download" in result.output and "needs 3.00 GiB more" in result.output


def test_pull_refuses_what_it_cannot_do(hub_setup, tmp_path, monkeypatch):
    from cogvid.hub import plan_pull, pull

    with pytest.raises(UsageError, match="no sat-layout copy"):
        plan_pull("cogvideox-2b", "sat")
    with pytest.raises(UsageError, match="unknown layout"):
        plan_pull("cogvideox-2b", "ckpt")
    monkeypatch.setenv("COGVID_MODELS", str(hub_setup["registry"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_setup["cache"]))
    own = tmp_path / "w" / "tiny-hub-diffusers"
    own.mkdir(parents=True)
    with pytest.raises(UsageError, match="not a link made by"):
        pull(plan_pull("tiny-hub", weights=tmp_path / "w"))
    assert own.is_dir() and not own.is_symlink()
    with pytest.raises(MissingFileError):
        pull(plan_pull("tiny-elsewhere", weights=tmp_path / "w"))
