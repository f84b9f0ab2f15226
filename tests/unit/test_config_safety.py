"""Configuration safety: hostile YAML refused fast, --set validated before loading, no silently ignored args."""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cogvid import config_checks, safe_yaml
from cogvid.cli.app import app
from cogvid.config import load_config
from cogvid.errors import ConfigError
from cogvid.registry import configs_dir, get_model
from cogvid.spec import spec_from_config

runner = CliRunner()
BUNDLED = sorted(configs_dir().rglob("*.yaml"))
ORIGINAL_STYLE = Path(__file__).parent / "original_style"

# "Billion laughs": 9 levels of 9 aliases, 9**9 (387 million) strings once expanded, 414 bytes on disk.
BILLION_LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


@pytest.fixture
def bomb(tmp_path) -> Path:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    return path


def _timed(call):
    started = time.perf_counter()
    try:
        result = call()
    finally:
        elapsed = time.perf_counter() - started
    return result, elapsed


# --------------------------------------------------------------------------------------------
# The safe YAML reader


def test_the_bomb_really_is_one():
    data = yaml.safe_load(BILLION_LAUGHS)  # PyYAML shares aliased objects: cheap to build, not to copy
    assert len(BILLION_LAUGHS) < 450 and data["i"][0][0][0][0][0][0][0][0][0] == "lol"


def test_billion_laughs_refused_fast_by_load_config(bomb):
    started = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_config([configs_dir() / "models" / "cogvideox_2b.yaml", bomb])
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
    assert str(bomb) in str(e.value) and "expands to more than 10,000 values" in str(e.value)
    assert e.value.exit_code == 2


def test_billion_laughs_refused_fast_by_models_show(bomb):
    result, elapsed = _timed(lambda: runner.invoke(app, ["models", "show", "cogvideox-2b", "--config", str(bomb)]))
    assert elapsed < 1.0, elapsed
    assert result.exit_code == 2, result.output
    assert f"refused config file {bomb}:" in result.output and "Traceback" not in result.output


def test_billion_laughs_refused_fast_as_user_registry(bomb, monkeypatch):
    monkeypatch.setenv("COGVID_MODELS", str(bomb))
    result, elapsed = _timed(lambda: runner.invoke(app, ["models", "list"]))
    assert elapsed < 1.0, elapsed
    assert result.exit_code == 2, result.output
    assert f"refused model registry {bomb}:" in result.output and "Traceback" not in result.output


def test_billion_laughs_refused_in_a_lora_training_config(tmp_path, bomb):
    from fixtures.tiny_dit import random_dit_state
    from fixtures.tiny_lora import write_tiny_lora

    from cogvid.lora import read_lora

    write_tiny_lora(tmp_path / "lora", random_dit_state("5b", 1), 4, seed=2)
    (tmp_path / "lora" / "training_config.yaml").write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="refused LoRA training config .*training_config.yaml"):
        read_lora(tmp_path / "lora")
    assert time.perf_counter() - started < 1.0


def test_billion_laughs_in_a_set_value_is_refused():
    value = "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
        f"&{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")
    ) + "]"
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"refused --set args.sampling_image_size: the document expands"):
        load_config([configs_dir() / "inference" / "cogvideox_5b.yaml"], [f"args.sampling_image_size={value}"])
    assert time.perf_counter() - started < 1.0


def test_file_over_one_mib_refused_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("args:\n  note: '" + "x" * (1 << 20) + "'\n")  # valid YAML, one value
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"refused config file .*big.yaml: it is larger than 1 MiB"):
        load_config([big])
    assert time.perf_counter() - started < 1.0
    just_under = tmp_path / "under.yaml"
    just_under.write_text("args:\n  note: '" + "x" * ((1 << 20) - 100) + "'\n")
    assert len(load_config([just_under]).args.note) == (1 << 20) - 100


@pytest.mark.parametrize(
    "text, reason",
    [
        ("a: &a [1, *a]\n", "recursive alias"),
        ("[" * 5000 + "]" * 5000, "nested more than 64 levels deep"),
        ("a: [" + ", ".join(["0"] * 20_000) + "]\n", "expands to more than 10,000 values"),
        ("a: &x 1\nb: [" + ", ".join(["*x"] * 20_000) + "]\n", "expands to more than 10,000 values"),
    ],
    ids=["recursive", "deep", "flat-list", "many-aliases"],
)
def test_other_out_of_proportion_documents_refused_fast(tmp_path, text, reason):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=reason) as e:
        safe_yaml.read_yaml(path)
    # PyYAML scans these until the limit trips: 0.33 s measured alone on 2 cores, 1.2 s beside other jobs.
    assert time.perf_counter() - started < 5.0
    assert str(path) in str(e.value)


def test_aliases_count_as_the_nodes_they_repeat():
    # root mapping, key a, the list and its 2 items (5); key b and the alias, worth 3 more (4)
    text = "a: &x [1, 2]\nb: *x\n"
    assert safe_yaml.parse_yaml(text, "t.yaml", max_nodes=9) == {"a": [1, 2], "b": [1, 2]}
    with pytest.raises(ConfigError, match="more than 8 values"):
        safe_yaml.parse_yaml(text, "t.yaml", max_nodes=8)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bundled_yamls_read_as_pyyaml_reads_them_far_below_the_limits(path):
    # the largest bundled file has 303 nodes and nests 10 deep: 400 / 12 leave a small margin
    data = safe_yaml.parse_yaml(path.read_text(encoding="utf-8"), path, max_nodes=400, max_depth=12)
    assert data == yaml.safe_load(path.read_text(encoding="utf-8"))
    assert 400 * 25 <= safe_yaml.MAX_NODES and path.stat().st_size * 100 < safe_yaml.MAX_BYTES


def test_malformed_yaml_keeps_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("args:\n  sampling_fps: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"malformed YAML in {bad}:3:1"):
        load_config([bad])
    registry = tmp_path / "models.yaml"
    registry.write_text("models:\n  x: {task: t2v\n")
    with pytest.raises(ConfigError, match=rf"malformed YAML in {registry}:3:1"):
        safe_yaml.read_yaml(registry, "model registry")


def test_merge_keys_and_plain_aliases_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("base: &b {sampling_fps: 12, sampling_num_frames: 9}\nargs: {<<: *b, sampling_fps: 16}\n")
    cfg = load_config([path])
    assert cfg.args.sampling_fps == 16 and cfg.args.sampling_num_frames == 9


# --------------------------------------------------------------------------------------------
# The DiT's parameters


def test_dit_parameter_table_matches_the_constructor():
    from cogvid.dit.model import DiffusionTransformer

    params = {
        name: p
        for name, p in inspect.signature(DiffusionTransformer.__init__).parameters.items()
        if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    assert set(config_checks.DIT_PARAMETERS) | set(config_checks.DIT_INJECTED) == set(params)
    assert not set(config_checks.DIT_PARAMETERS) & set(config_checks.DIT_INJECTED)
    for name, entry in config_checks.DIT_PARAMETERS.items():
        assert entry.required == (params[name].default is inspect.Parameter.empty), name
    for name, p in params.items():  # every default the constructor has is a value the table accepts
        if name in config_checks.DIT_PARAMETERS and p.default is not inspect.Parameter.empty:
            assert config_checks.DIT_PARAMETERS[name].check(p.default) is None, name


def test_config_checks_stay_torch_free():
    import subprocess
    import sys

    code = "import sys, cogvid.config, cogvid.config_checks, cogvid.safe_yaml; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_position_split_predicates_agree_with_the_position_tables():
    import torch

    from cogvid.dit import positions

    for size in range(4, 260, 4):
        try:
            built = positions.rope_3d_angles(size, 2, 2, 2).shape[-1] == size
        except RuntimeError:
            built = False
        assert config_checks.rope_fits(size) == built, size
        try:
            built = positions.sincos_3d_table(size, 2, 2, 2).shape[-1] == size
        except (RuntimeError, ValueError):
            built = False
        assert config_checks.sincos_fits(size) == built, size
    assert config_checks.rope_fits(64) and config_checks.sincos_fits(1920) and not config_checks.rope_fits(24)
    del torch


NET = "model.network_config.params"


@pytest.mark.parametrize(
    "model, setting, message",
    [
        ("cogvideox-2b", f"{NET}.num_layers=-3", "expected a positive integer, found -3"),
        ("cogvideox-2b", f"{NET}.num_layers=0", "expected a positive integer, found 0"),
        ("cogvideox-2b", f"{NET}.hidden_size=-128", "expected a positive integer, found -128"),
        ("cogvideox-2b", f"+{NET}.evil=1", "the CogVideoX DiT has no such parameter"),
        ("cogvideox-2b", f"+{NET}.num_layer=1", "the CogVideoX DiT has no such parameter"),
        ("cogvideox-2b", f"+{NET}.dtype=fp16", "cogvid sets this itself"),
        ("cogvideox-2b", f"{NET}.num_attention_heads=7", "hidden_size 1920 is not divisible by num_attention_heads 7"),
        ("cogvideox-2b", f"{NET}.patch_size=0", "expected a positive integer (1.0) or a list"),
        ("cogvideox-2b", f"{NET}.latent_width=0", "expected a positive integer, found 0"),
        ("cogvideox-2b", f"{NET}.latent_width=91", "latent_width 91 is not a multiple of the spatial patch size 2"),
        ("cogvideox-2b", f"{NET}.num_frames=-49", "expected a positive integer, found -49"),
        ("cogvideox-2b", f"{NET}.in_channels=-16", "expected a positive integer, found -16"),
        ("cogvideox-2b", f"{NET}.time_compressed_rate=0", "expected a positive integer, found 0"),
        ("cogvideox-2b", f"{NET}.time_embed_dim=0", "expected a positive integer or null"),
        ("cogvideox-2b", f"{NET}.hidden_size=1950", "sin-cos position table cannot split 1950"),
        ("cogvideox-2b", f"{NET}.transformer_args.layernorm_order=middle", "expected 'pre', 'post' or 'sandwich'"),
        ("cogvideox-5b", f"{NET}.num_attention_heads=128", "3D RoPE cannot split a head of 24 channels"),
        ("cogvideox1.5-5b", f"{NET}.patch_size=[2, 2]", "a list [t, h, w] of three positive integers"),
        ("cogvideox1.5-5b", f"{NET}.patch_size=[2, 0, 2]", "a list [t, h, w] of three positive integers"),
    ],
)
def test_bad_structure_is_a_config_error_naming_the_key(model, setting, message):
    result = runner.invoke(app, ["models", "show", model, "--set", setting])
    assert result.exit_code == 2, result.output
    key = setting.lstrip("+").split("=")[0]
    assert f"error: {key} (from --set): " in result.output and message in result.output
    assert "Traceback" not in result.output


def test_unknown_parameter_hint_names_close_matches():
    with pytest.raises(ConfigError) as e:
        load_config(get_model("cogvideox-2b").config_files(), [f"+{NET}.num_layer=1"])
    assert "num_layers" in e.value.hint


def test_bad_structure_in_a_yaml_names_the_file(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  network_config:\n    params:\n      hidden_size: -128\n")
    with pytest.raises(ConfigError, match=rf"{NET}.hidden_size \(in {extra}\): expected a positive integer"):
        load_config([*get_model("cogvideox-2b").config_files(), extra])


def test_bad_structure_stops_a_generation_before_loading(tmp_path):
    # test-tiny (tests/fixtures/test_model.py) has weights: without the check, these end in exit 70
    for setting in (f"{NET}.num_layers=-3", f"{NET}.hidden_size=-128", f"+{NET}.evil=1"):
        result = runner.invoke(app, ["t2v", "a cat", "--steps", "1", "--out", str(tmp_path), "--set", setting])
        assert result.exit_code == 2, result.output
        assert setting.lstrip("+").split("=")[0] in result.output and "loading" not in result.output
    assert not list(tmp_path.rglob("*.mp4"))


# --------------------------------------------------------------------------------------------
# args: what inference reads


def test_set_sampling_fps_sets_the_fps_a_run_uses():
    from cogvid.prepare import resolve_model
    from cogvid.request import ModelChoice

    resolved = resolve_model(ModelChoice("cogvideox-2b", overrides=("args.sampling_fps=16",)))
    assert resolved.spec.fps == 16
    assert resolve_model(ModelChoice("cogvideox-2b")).spec.fps == 8
    result = runner.invoke(app, ["models", "show", "cogvideox-2b", "--json", "--set", "args.sampling_fps=16"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["generation_defaults"] == {"frames": 49, "fps": 16, "height": 480, "width": 720}
    assert data["config"]["args"]["sampling_fps"] == 16


def test_fps_precedence_registry_model_inference_config_set(tmp_path):
    entry = get_model("cogvideox-2b")  # registry fps 8; the inference YAML says 8 too

    def fps(*layers: str, overrides: tuple[str, ...] = ()) -> int:
        files = []
        for i, text in enumerate(layers):
            path = tmp_path / f"layer{i}.yaml"
            path.write_text(text)
            files.append(path)
        cfg = load_config([*entry.config_files(), *files], overrides, defaults=entry.defaults())
        return spec_from_config(cfg, task=entry.task, default_fps=entry.fps).fps

    assert fps() == 8
    assert fps("args: {sampling_fps: 10}\n") == 10
    assert fps("args: {sampling_fps: 10}\n", "args: {sampling_fps: 12}\n") == 12
    assert fps("args: {sampling_fps: 10}\n", overrides=("args.sampling_fps=14",)) == 14
    model_only = load_config([configs_dir() / "models" / "cogvideox_2b.yaml"], defaults={"args": {"sampling_fps": 6}})
    assert spec_from_config(model_only, task="t2v", default_fps=6).fps == 6  # registry layer when no YAML says


@pytest.mark.slow
def test_set_sampling_fps_is_the_fps_of_the_written_video(tmp_path):
    from cogvid.video import read_video

    out = tmp_path / "out"
    result = runner.invoke(
        app, ["t2v", "a red ball", "--steps", "1", "--seed", "1", "--out", str(out), "--json", "--set", "args.sampling_fps=5"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout.strip().splitlines()[-1])
    assert written["fps"] == 5
    assert read_video(Path(written["path"]))[1] == pytest.approx(5)


@pytest.mark.parametrize(
    "setting, hint",
    [
        ("args.output_dir=elsewhere", "use --out DIR"),
        ("+args.seed=3", "use --seed N"),
        ("args.input_file=p.txt", "cogvid batch"),
        ("args.force_inference=false", "args keys with an effect: sampling_fps"),
        ("+args.train_iters=10", "args keys with an effect: sampling_fps"),
        ("args.fp16=false", "use --dtype fp16"),  # a registry model's dtype is the registry's
        ("args.load=/elsewhere", "use --weights DIR"),
        ("args={sampling_fps: 16, seed: 3}", "use --seed N"),
    ],
)
def test_set_of_an_args_key_inference_never_reads_is_refused(setting, hint):
    result = runner.invoke(app, ["models", "show", "cogvideox-2b", "--set", setting])
    assert result.exit_code == 2, result.output
    assert "is not used at inference" in result.output and hint in result.output
    assert "sampling_fps, sampling_num_frames, sampling_image_size" in result.output


def test_config_only_runs_may_set_the_keys_a_registry_model_decides():
    files = [configs_dir() / "models" / "cogvideox_2b.yaml", configs_dir() / "inference" / "cogvideox_2b.yaml"]
    cfg = load_config(files, ["args.fp16=false", "+args.bf16=true", "args.load=/w/transformer"])
    assert spec_from_config(cfg).model_dtype == "bf16" and cfg.args.load == "/w/transformer"
    with pytest.raises(ConfigError, match="args.output_dir is not used at inference"):
        load_config(files, ["args.output_dir=x"])


def test_training_keys_in_a_users_yaml_still_load(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text("args:\n  train_iters: 1000\n  save: ckpts\n  output_dir: videos\n  seed: 3\n  sampling_fps: 12\n")
    result = runner.invoke(app, ["models", "show", "cogvideox-2b", "--json", "--config", str(extra)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["generation_defaults"]["fps"] == 12
    for name in ("inference_v1.yaml", "inference_main.yaml", "sft_like.yaml"):
        load_config([ORIGINAL_STYLE / name])


@pytest.mark.parametrize(
    "text, message",
    [
        ("args: {sampling_fps: 0}\n", "args.sampling_fps (in {file}): expected a positive integer, found 0"),
        ("args: {sampling_fps: fast}\n", "args.sampling_fps (in {file}): expected a positive integer, found 'fast'"),
        ("args: {sampling_num_frames: -1}\n", "args.sampling_num_frames (in {file}): expected a positive integer"),
        ("args: {sampling_image_size: [480]}\n", "expected [height, width], two positive integers"),
        ("args: {sampling_image_size: [240, 360]}\n", "CogVideoX 1.0 models generate 480x720 (HxW) only"),
    ],
)
def test_bad_args_values_in_a_yaml_name_the_file(tmp_path, text, message):
    extra = tmp_path / "extra.yaml"
    extra.write_text(text)
    entry = get_model("cogvideox-2b")
    with pytest.raises(ConfigError) as e:
        load_config([*entry.config_files(), extra], defaults=entry.defaults())
    assert message.format(file=extra) in str(e.value)
