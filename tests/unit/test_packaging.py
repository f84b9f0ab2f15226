"""A plain (non-editable) install ships the bundled configs and completions-free package data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_configs_as_package_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cogvid-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"cogvid/configs/registry.yaml", "cogvid/configs/models/cogvideox_2b.yaml",
                "cogvid/configs/inference/cogvideox1.5_5b_i2v.yaml", "cogvid/cli/app.py",
                "cogvid/demo/cogvideox-tiny-trained/transformer/latest", "cogvid/demo/cogvideox-tiny-trained/vae/3d-vae.pt",
                "cogvid/demo/cogvideox-tiny-trained/t5-v1_1-xxl/spiece.model", "cogvid/dit/model.py", "cogvid/vae/autoencoder.py"}
    assert expected <= names
    assert any(n.endswith("entry_points.txt") for n in names)
