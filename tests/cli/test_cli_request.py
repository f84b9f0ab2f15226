"""One request per video: replay from a sidecar (--from), --dry-run, the CLI layer's imports, values parsed once."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cogvid.cli.app import app
from cogvid.request import GenerationRequest, ModelChoice
from cogvid.sidecar import read_request
from cogvid.video import read_video

runner = CliRunner()
CLI = Path(__file__).resolve().parents[2] / "cogvid" / "cli"


def _videos(out: Path) -> list[Path]:
    return sorted(out.rglob("*.mp4"))


@pytest.mark.slow
def test_from_sidecar_replays_the_same_frames_and_an_option_changes_only_itself(tmp_path):
    out = tmp_path / "out"
    first = runner.invoke(app, ["t2v", "a red ball", "--steps", "3", "--frames", "9", "--guidance", "4.5", "--out", str(out), "--json"])
    assert first.exit_code == 0, first.output
    sidecar = Path(json.loads(first.stdout)["sidecar"])
    recorded = json.loads(sidecar.read_text())["request"]
    assert recorded["schema"] == 1 and recorded["seed"] is not None and recorded["model"]["name"] == "test-tiny"

    again = runner.invoke(app, ["t2v", "--from", str(sidecar), "--out", str(out), "--json"])
    assert again.exit_code == 0, again.output
    replay = json.loads(again.stdout)
    original, copy = (read_video(p)[0] for p in _videos(out))
    assert np.array_equal(original, copy)  # same model, settings and seed: identical frames
    assert replay["request"] == recorded  # and the same request, every field

    fewer = runner.invoke(app, ["t2v", "--from", str(sidecar), "--steps", "2", "--out", str(out), "--json"])
    assert fewer.exit_code == 0, fewer.output
    changed = json.loads(fewer.stdout)["request"]
    assert changed["steps"] == 2
    assert {k: v for k, v in changed.items() if k != "steps"} == {k: v for k, v in recorded.items() if k != "steps"}
    assert not np.array_equal(read_video(fewer.stdout and json.loads(fewer.stdout)["path"])[0], original)


def test_from_a_sidecar_whose_model_weights_are_missing_exits_3(tmp_path):
    sidecar = tmp_path / "old.json"
    request = GenerationRequest("a cat", seed=5, steps=50, model=ModelChoice("cogvideox-2b"))
    sidecar.write_text(json.dumps({"request": request.to_json()}))
    result = runner.invoke(app, ["t2v", "--from", str(sidecar), "--weights", str(tmp_path / "w"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 3, result.output
    assert "weights of cogvideox-2b not found" in result.output and "hint:" in result.output
    assert not any(p.is_file() for p in (tmp_path / "o").rglob("*"))  # nothing written


def test_from_reads_sidecars_of_cogvid_0_1(tmp_path):
    """Sidecars written before the request field existed hold the settings as flat fields."""
    old = {"prompt": "a cube", "negative_prompt": "", "model": "test-tiny", "image": None, "sampler": "ddim", "steps": 7,
           "guidance": 3.0, "seed": 11, "height": 48, "width": 64, "frames": 9, "requested_frames": 9,
           "decode": "1.0", "vae_tiling": False, "fps": 4, "loras": []}
    (tmp_path / "old.json").write_text(json.dumps(old))
    request = read_request(tmp_path / "old.json")
    assert (request.prompt, request.sampler, request.steps, request.guidance, request.seed) == ("a cube", "ddim", 7, 3.0, 11)
    assert (request.frames, request.size, request.fps, request.model.name) == (9, (48, 64), 4, "test-tiny")


@pytest.mark.parametrize("command", ["t2v", "i2v", "batch"])
def test_dry_run_prints_resolved_requests_and_writes_nothing(tmp_path, command):
    from PIL import Image

    image = tmp_path / "first.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue cube\n")
    args = {
        "t2v": ["t2v", "a red ball"],
        "i2v": ["i2v", str(image), "a red ball", "-m", "cogvideox-5b-i2v"],  # registry model: its weights are absent
        "batch": ["batch", str(prompts)],
    }[command]
    out = tmp_path / "out"
    result = runner.invoke(app, [*args, "--steps", "4", "--dry-run", "--json", "--out", str(out), "--weights", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(records) == (2 if command == "batch" else 1)
    for record in records:
        request = record["request"]
        assert request["steps"] == 4 and request["seed"] is not None and request["sampler"] == "vpsde-dpmpp2m"
        if command == "i2v":
            assert record["model"] == "cogvideox-5b-i2v" and request["image"] == str(image)
            assert (request["frames"], record["height"], record["width"]) == (49, 480, 720)
            assert not any(part["found"] for part in record["weights"])
        else:
            assert record["model"] == "test-tiny" and request["frames"] == 17
            assert all(part["found"] for part in record["weights"])
    assert not out.exists()


def test_dry_run_on_a_registry_model_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "from cogvid.cli.app import main\n"
        "sys.argv = ['cogvid', 't2v', 'a cat', '-m', 'cogvideox-5b', '--dry-run', '--json', '--weights', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "NO-TORCH 0", result.stdout + result.stderr
    record = json.loads(result.stdout.strip().splitlines()[0])
    assert record["request"]["frames"] == 49 and (record["height"], record["width"]) == (480, 720)
    assert not any(part["found"] for part in record["weights"])  # dry run says what is missing, loads nothing


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_cli_does_no_library_work():
    """cli/ turns options into requests and renders results: it imports none of the heavy layers, and stays small."""
    forbidden = ("torch", "cogvid.diffusion", "cogvid.lora", "cogvid.distributed", "cogvid.engine", "cogvid.dit", "cogvid.vae")
    files = sorted(CLI.glob("*.py"))
    assert len(files) >= 8
    for file in files:
        bad = [name for name in _imports(file) if any(name == f or name.startswith(f + ".") for f in forbidden)]
        assert not bad, f"{file.name} imports {bad}"
    lines = sum(len(file.read_text().splitlines()) for file in files)
    assert lines <= 1250, lines  # 1746 before the request object; 1071 with it (42 of them help examples); then export, models pull, speed options, cache, plan


def test_each_value_is_parsed_once_on_its_way_to_use(tmp_path, monkeypatch):
    """The sampler name, the LoRA values and the prompt are each checked and resolved exactly once between
    the command line and the engine (counted through a real t2v run)."""
    import cogvid.diffusion
    import cogvid.prepare
    import cogvid.request

    from fixtures.tiny_lora import write_tiny_lora

    from cogvid.checkpoint import read_state_dict, split_engine_state
    from cogvid.registry import get_model

    lora = tmp_path / "lora"
    write_tiny_lora(lora, split_engine_state(read_state_dict(get_model("test-tiny").weight_paths()["transformer"]))["dit"], 4, seed=3)
    calls: dict[str, list] = {"sampler_name": [], "sampler_config_with": [], "LoraSpec.parse": [], "check_text": []}

    def counted(name, function, record=lambda *a: a[0]):
        def wrapper(*args, **kwargs):
            calls[name].append(record(*args))
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(cogvid.request, "sampler_name", counted("sampler_name", cogvid.request.sampler_name))
    monkeypatch.setattr(cogvid.prepare, "sampler_config_with", counted("sampler_config_with", cogvid.diffusion.sampler_config_with))
    parse = cogvid.request.LoraSpec.parse.__func__
    monkeypatch.setattr(cogvid.request.LoraSpec, "parse", classmethod(counted("LoraSpec.parse", parse, lambda cls, text, *a: text)))
    check_text = cogvid.request.check_text
    monkeypatch.setattr(cogvid.request, "check_text", counted("check_text", check_text, lambda value, what: what))
    # The field table captured the functions at import: route it through the counted ones.
    monkeypatch.setitem(cogvid.request._REQUEST_CHECKS, "sampler", lambda v: None if v is None else cogvid.request.sampler_name(v))
    monkeypatch.setitem(cogvid.request._REQUEST_CHECKS, "prompt", lambda v: cogvid.request.check_text(v, "the prompt"))

    result = runner.invoke(app, ["t2v", "a red ball", "--sampler", "ddim", "--lora", f"{lora}:0.5", "--steps", "2",
                                 "--frames", "9", "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    assert calls["sampler_name"] == ["ddim"]  # the name is checked once, where the request is built
    assert len(calls["sampler_config_with"]) == 1  # and turned into its configuration once, in prepare
    assert [str(text) for text in calls["LoraSpec.parse"] if not isinstance(text, cogvid.request.LoraSpec)] == [f"{lora}:0.5"]
    assert calls["check_text"].count("the prompt") == 1
    sidecar = json.loads(Path(json.loads(result.stdout)["sidecar"]).read_text())
    assert sidecar["sampler"] == "ddim" and sidecar["loras"] == [{"path": str(lora), "scale": 0.5}]
