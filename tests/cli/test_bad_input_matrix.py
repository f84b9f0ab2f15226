"""The bad-input matrix: every mistake gives one `error:` line, a `hint:`, the documented exit code, and
creates or changes no file (CLI commands, the REPL, `models`, `lora`, configuration, and the Python API)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cogvid.cli.app import app
from cogvid.errors import ArgumentTypeError, CogvidError, MissingFileError, UsageError

runner = CliRunner()
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder of bad (and some good) input files; the test checks none of them changes."""
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "good.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("L", (20000, 20000)).save(folder / "huge.png")
    (folder / "empty.txt").write_text("# only a comment\n\n")
    (folder / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (folder / "bad.jsonl").write_text('{"prompt": "x", "steps": 0}\n{"prompt": ""}\n{oops\n{"prompt": "x", "lora": "a:1e30"}\n')
    (folder / "ok.txt").write_text("a red ball\n")
    (folder / "malformed.yaml").write_text("model: [unclosed\n")
    (folder / "bomb.yaml").write_text(BOMB)
    (folder / "not-a-sidecar.json").write_text("[1, 2]")
    (folder / "newer.json").write_text(json.dumps({"request": {"schema": 99, "prompt": "x"}}))
    (folder / "a-file").write_text("not a folder")
    (folder / "not-a-lora").mkdir()
    return folder


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots if root.exists() for p in root.rglob("*")}


def _args(args: list[str], folder: Path) -> list[str]:
    return [a.replace("IN/", f"{folder}/") for a in args]


# (command line with IN/ for the inputs folder, exit code, a phrase of the error)
CLI_CASES = [
    # t2v: option values
    (["t2v", "x", "--steps", "0"], 2, "step count must be between 1 and 1000"),
    (["t2v", "x", "--steps", "abc"], 2, "invalid value for '--steps'"),
    (["t2v", "x", "--steps", "1001"], 2, "step count must be between 1 and 1000"),
    (["t2v", "x", "--guidance", "nan"], 2, "guidance scale must be a finite number"),
    (["t2v", "x", "--guidance", "-1"], 2, "guidance scale must be a finite number"),
    (["t2v", "x", "--seed", "abc"], 2, "invalid value for '--seed'"),
    (["t2v", "x", "--seed", "-1"], 2, "seed must be between 0 and"),
    (["t2v", "x", "--seed", "1180591620717411303424"], 2, "seed must be between 0 and"),
    (["t2v", "x", "--fps", "0"], 2, "fps must be between 1 and 240"),
    (["t2v", "x", "--fps", "1000"], 2, "fps must be between 1 and 240"),
    (["t2v", "x", "-n", "0"], 2, "number of videos must be between 1"),
    (["t2v", "x", "--frames", "10"], 2, "cannot make 10 frames"),
    (["t2v", "x", "--frames", "0"], 2, "frame count must be at least 1"),
    (["t2v", "x", "--size", "30x30"], 2, "48x64 (HxW) only"),
    (["t2v", "x", "--size", "big"], 2, "bad size"),
    (["t2v", "x", "--size", "³²x³²"], 2, "bad size"),
    (["t2v", "x", "--size", "0x0"], 2, "height must be at least 1"),
    (["t2v", "x", "--sampler", "nope"], 2, "unknown sampler 'nope'"),
    (["t2v", "x", "--dtype", "fp8"], 2, "unknown dtype 'fp8'"),
    (["t2v", "x", "--device", "tpu:0"], 2, "unknown device"),
    (["t2v", "x", "--device", "cuda:7"], 4, "CUDA"),
    (["t2v", ""], 2, "the prompt is empty"),
    (["t2v", "   "], 2, "the prompt is empty"),
    (["t2v"], 2, "missing argument PROMPT"),
    (["t2v", "x", "--unknown-option"], 2, "no such option"),
    # t2v: models, LoRAs, sidecars, output folder
    (["t2v", "x", "--lora", "IN/nope"], 3, "LoRA checkpoint"),
    (["t2v", "x", "--lora", "IN/nope:abc"], 2, "is not a number"),
    (["t2v", "x", "--lora", "IN/nope:1e30"], 2, "LoRA scale 1e+30 is out of range"),
    (["t2v", "x", "--lora", "IN/not-a-lora"], 3, "has no 'latest' file"),
    (["t2v", "x", "--model", "nope"], 2, "unknown model 'nope'"),
    (["t2v", "x", "--model", "cogvideox-2b", "--weights", "IN/"], 3, "weights of cogvideox-2b not found"),
    (["t2v", "x", "--model", "cogvideox-5b-i2v"], 2, "needs an image"),
    (["t2v", "--from", "IN/missing.json"], 3, "sidecar not found"),
    (["t2v", "--from", "IN/not-a-sidecar.json"], 2, "is not a cogvid sidecar"),
    (["t2v", "--from", "IN/newer.json"], 2, "request schema 99"),
    (["t2v", "x", "--out", "IN/a-file"], 2, "is a file, not a folder"),
    (["t2v", "x", "--out", "/proc/cogvid-out"], 2, "cannot write videos to /proc/cogvid-out"),
    # configuration
    (["t2v", "x", "--config", "IN/missing.yaml"], 2, "config file not found"),
    (["t2v", "x", "--config", "IN/malformed.yaml"], 2, "malformed.yaml"),
    (["t2v", "x", "--config", "IN/bomb.yaml"], 2, "bomb.yaml"),
    (["t2v", "x", "--set", "novalue"], 2, "bad --set value"),
    (["t2v", "x", "--set", "model.network_config.params.num_layers=-3"], 2, "num_layers"),
    (["t2v", "x", "--set", "model.network_config.params.hidden_size=-128"], 2, "hidden_size"),
    (["t2v", "x", "--set", "+model.network_config.params.evil=1"], 2, "evil"),
    (["t2v", "x", "--set", "args.output_dir=elsewhere"], 2, "output_dir"),
    (["t2v", "x", "--set", "model.nope=1"], 2, "no key 'model.nope'"),
    # i2v
    (["i2v", "IN/missing.png", "x", "-m", "cogvideox-5b-i2v"], 3, "image not found"),
    (["i2v", "IN/corrupt.png", "x", "-m", "cogvideox-5b-i2v"], 3, "cannot read image"),
    (["i2v", "IN/huge.png", "x", "-m", "cogvideox-5b-i2v"], 3, "is too large"),
    (["i2v", "IN/not-a-lora", "x", "-m", "cogvideox-5b-i2v"], 3, "image path is not a file"),
    (["i2v", "IN/good.png", "x", "-m", "test-tiny"], 2, "takes no image"),
    (["i2v", "IN/good.png"], 2, "missing argument PROMPT"),
    (["i2v", "IN/good.png", "x", "-m", "cogvideox-5b-i2v", "--frames", "50"], 2, "cannot make 50 frames"),
    # batch
    (["batch", "IN/missing.txt"], 3, "prompt file not found"),
    (["batch", "IN/empty.txt"], 2, "no prompts"),
    (["batch", "IN/latin1.txt"], 2, "is not UTF-8"),
    (["batch", "IN/not-a-lora"], 3, "is not a file"),
    (["batch", "IN/ok.txt", "--lora", "IN/nope"], 3, "LoRA checkpoint"),
    (["batch", "IN/ok.txt", "--steps", "0"], 2, "step count must be between 1 and 1000"),
    (["batch", "IN/ok.txt", "--out", "IN/a-file"], 2, "is a file, not a folder"),
    (["batch", "IN/ok.txt", "--wandb", "project"], 2, "needs a Weights & Biases login"),
    # repl: checked before the model loads
    (["repl", "--frames", "10"], 2, "cannot make 10 frames"),
    (["repl", "--image", "IN/missing.png", "-m", "cogvideox-5b-i2v"], 3, "image not found"),
    (["repl", "--sampler", "nope"], 2, "unknown sampler"),
    # models
    (["models", "show", "nope"], 2, "unknown model 'nope'"),
    (["models", "show", "cogvideox-2b", "--set", "novalue"], 2, "bad --set value"),
    (["models", "show", "cogvideox-2b", "--config", "IN/bomb.yaml"], 2, "bomb.yaml"),
    (["models", "frobnicate"], 2, "no such command"),
    # lora
    (["lora", "inspect", "IN/nope"], 3, "does not exist"),
    (["lora", "inspect", "IN/not-a-lora"], 3, "has no 'latest' file"),
    (["lora", "apply", "IN/nope", "IN/not-a-lora", "--out", "IN/merged"], 3, "neither an existing checkpoint folder"),
    (["lora", "apply", "cogvideox-2b", "IN/not-a-lora", "--out", "IN/merged", "--scale", "nan"], 2, "finite number"),
]


@pytest.mark.parametrize("args, code, message", CLI_CASES, ids=[" ".join(c[0])[:60] for c in CLI_CASES])
def test_bad_command_line(tmp_path, inputs, monkeypatch, args, code, message):
    if "cuda:7" in args and torch.cuda.is_available():
        pytest.skip("CUDA present")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    out = tmp_path / "out"
    full = _args(args, inputs)
    if "--out" not in full and args[0] in ("t2v", "i2v", "batch", "repl"):
        full += ["--out", str(out)]
    before = _snapshot(inputs)
    result = runner.invoke(app, full, input="")
    text = result.output
    assert result.exit_code == code, text
    assert text.count("error:") == 1 and "hint:" in text, text
    assert message in text, text
    assert "Traceback" not in text and "internal error" not in text
    assert _snapshot(inputs) == before  # nothing changed or created among the inputs
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_a_batch_whose_lines_are_all_bad_names_each_line_and_writes_nothing(tmp_path, inputs):
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(inputs / "bad.jsonl"), "--out", str(out)])
    assert result.exit_code == 1, result.output
    for line, phrase in ((1, "'steps'"), (2, "'prompt' is missing or empty"), (3, "invalid JSON"), (4, "'lora'")):
        assert f"line {line}: " in result.output and phrase in result.output
    assert "4 of 4 prompt line(s) failed" in result.output and "loading model" not in result.output
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def _run(args: list[bytes], stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "cogvid", *args], input=stdin, capture_output=True, env=env, timeout=300)


@pytest.mark.parametrize("flag", [None, b"--negative"])
def test_prompt_bytes_that_are_not_utf8_are_refused_cleanly(tmp_path, flag):
    text = b"a red \xff ball"
    args = [b"t2v", text] if flag is None else [b"t2v", b"a red ball", flag, text]
    result = _run([*args, b"--out", str(tmp_path / "out").encode()])
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "is not valid UTF-8 text (byte 0xff at position 6)" in err and "hint:" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_repl_line_that_is_not_utf8_fails_alone(tmp_path):
    out = tmp_path / "out"
    result = _run([b"repl", b"--steps", b"2", b"--frames", b"9", b"--out", str(out).encode()], stdin=b"a \xfe ball\n/show\n")
    err = result.stderr.decode()
    assert "error: the prompt is not valid UTF-8 text" in err and "Traceback" not in err
    assert "steps    2" in err  # the session went on
    assert result.returncode == 1 and "1 of 2 lines failed" in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_a_user_registry_that_is_malformed_is_one_error(tmp_path, monkeypatch):
    registry = tmp_path / "models.yaml"
    registry.write_text("models: [broken\n")
    monkeypatch.setenv("COGVID_MODELS", str(registry))
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "models.yaml" in result.output


# ------------------------------------------------------------------------------------------- Python API


@pytest.fixture(scope="module")
def pipe():
    import cogvid

    return cogvid.load("test-tiny", device="cpu")


API_CASES = [
    ({"seed": "abc"}, ArgumentTypeError, TypeError, "the seed must be a whole number"),
    ({"seed": 2**70}, UsageError, ValueError, "the seed must be between 0 and"),
    ({"seed": -1}, UsageError, ValueError, "the seed must be between 0 and"),
    ({"num_frames": "9"}, ArgumentTypeError, TypeError, "the frame count must be a whole number"),
    ({"height": 32.0, "width": 32}, ArgumentTypeError, TypeError, "the height must be a whole number"),
    ({"height": 48}, UsageError, ValueError, "give both height and width"),
    ({"steps": 0}, UsageError, ValueError, "step count must be between 1 and 1000"),
    ({"steps": True}, ArgumentTypeError, TypeError, "step count must be a whole number"),
    ({"guidance": math.inf}, UsageError, ValueError, "guidance scale must be a finite number"),
    ({"sampler": 3}, ArgumentTypeError, TypeError, "the sampler must be text"),
    ({"decode": "fast"}, UsageError, ValueError, "unknown decode 'fast'"),
    ({"image": "missing.png"}, MissingFileError, None, "image not found"),
    ({"latents": torch.zeros(1, 2, 3)}, UsageError, ValueError, "latents have shape"),
]


@pytest.mark.parametrize("kwargs, error, builtin, message", API_CASES, ids=[next(iter(c[0])) + str(i) for i, c in enumerate(API_CASES)])
def test_bad_api_arguments_raise_cogvid_errors(pipe, tmp_path, monkeypatch, kwargs, error, builtin, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message) as info:
        pipe.generate("a red ball", **kwargs)
    assert isinstance(info.value, CogvidError) and info.value.exit_code in (2, 3)
    if builtin is not None:
        assert isinstance(info.value, builtin)
    assert list(tmp_path.iterdir()) == []


def test_nan_latents_are_refused(pipe):
    from cogvid.request import GenerationRequest

    shape = pipe.prepare(GenerationRequest("a red ball")).latent_shape
    with pytest.raises(UsageError, match="latents hold NaN or infinite values"):
        pipe.generate("a red ball", latents=torch.full(shape, math.nan))


def test_bad_load_arguments_raise_cogvid_errors(tmp_path):
    import cogvid
    from cogvid.request import GenerationRequest

    with pytest.raises(ArgumentTypeError, match="the weights root must be a path") as info:
        cogvid.load("test-tiny", weights=123)
    assert isinstance(info.value, TypeError)
    with pytest.raises(UsageError, match="LoRA scale 1e\\+30 is out of range"):
        cogvid.load("test-tiny", lora=["x:1e30"])
    with pytest.raises(UsageError, match="unknown dtype"):
        cogvid.load("test-tiny", dtype="fp8")
    with pytest.raises(UsageError, match="the prompt is empty"):
        cogvid.load("test-tiny").prepare(GenerationRequest(""))


def test_saving_never_replaces_and_needs_mp4(pipe, tmp_path):
    video = pipe.generate("a red ball", steps=1, seed=1)
    with pytest.raises(UsageError, match="cogvid writes H.264 MP4 files"):
        video.save(tmp_path / "noext")
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"")  # an empty file of the user's is still theirs
    with pytest.raises(UsageError, match="already exists"):
        video.save(taken)
    (tmp_path / "side.json").write_text("{}")
    with pytest.raises(UsageError, match="already exists"):
        video.save(tmp_path / "side.mp4")  # the sidecar's name is taken: nothing is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["side.json", "taken.mp4"]
    assert taken.read_bytes() == b""
