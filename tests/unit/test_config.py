"""cogvid.config: loading, merging, --set overrides, the target allow-list and instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cogvid import config
from cogvid.config import ConfigError, instantiate, load_config
from cogvid.registry import configs_dir, load_registry

ORIGINAL_STYLE = Path(__file__).parent / "original_style"
BUNDLED_MODELS = sorted((configs_dir() / "models").glob("*.yaml"))
BUNDLED_INFERENCE = sorted((configs_dir() / "inference").glob("*.yaml"))


def _targets(cfg):
    return [node.target for _, node in config._walk_targets(cfg, "")]


@pytest.mark.parametrize("path", BUNDLED_MODELS + BUNDLED_INFERENCE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_bundled_yaml_loads_and_all_targets_are_known(path):
    cfg = load_config([path])
    for target in _targets(cfg):
        assert target in config.TARGETS


def test_bundled_set_covers_every_released_model_and_lora_variant():
    names = {p.stem for p in BUNDLED_MODELS}
    assert names == {
        "cogvideox_2b", "cogvideox_5b", "cogvideox_5b_i2v", "cogvideox1.5_5b", "cogvideox1.5_5b_i2v",
        "cogvideox_2b_lora", "cogvideox_5b_lora", "cogvideox_5b_i2v_lora", "cogvideox_tiny",
    }


@pytest.mark.parametrize(
    "name, layers, hidden, heads, scale_factor, shift, patch, in_ch, text_len",
    [
        ("cogvideox_2b", 30, 1920, 30, 1.15258426, 3.0, 2, 16, 226),
        ("cogvideox_5b", 42, 3072, 48, 0.7, 1.0, 2, 16, 226),
        ("cogvideox_5b_i2v", 42, 3072, 48, 0.7, 1.0, 2, 32, 226),
        ("cogvideox1.5_5b", 42, 3072, 48, 0.7, None, [2, 2, 2], 16, 224),
        ("cogvideox1.5_5b_i2v", 42, 3072, 48, 0.7, None, [2, 2, 2], 32, 224),
    ],
)
def test_bundled_hyperparameters_are_the_released_ones(name, layers, hidden, heads, scale_factor, shift, patch, in_ch, text_len):
    m = load_config([configs_dir() / "models" / f"{name}.yaml"]).model
    net = m.network_config.params
    assert (net.num_layers, net.hidden_size, net.num_attention_heads) == (layers, hidden, heads)
    assert OmegaConf.to_container(net.patch_size) == patch if isinstance(patch, list) else net.patch_size == patch
    assert net.in_channels == in_ch and net.out_channels == 16 and net.time_embed_dim == 512
    assert m.scale_factor == pytest.approx(scale_factor)
    assert net.modules.pos_embed_config.params.text_length == text_len
    assert m.conditioner_config.params.emb_models[0].params.max_length == text_len
    for section in (m.denoiser_config.params, m.sampler_config.params):
        params = section.discretization_config.get("params") or {}
        assert params.get("shift_scale") == shift
    guider = m.sampler_config.params.guider_config
    assert guider.target.endswith("DynamicCFG") and dict(guider.params) == {"scale": 6, "exp": 5, "num_steps": 50}


@pytest.mark.parametrize("name", ["inference_v1.yaml", "inference_main.yaml", "sft_like.yaml", "model_i2v_style.yaml"])
def test_original_style_yamls_load_unchanged(name):
    cfg = load_config([ORIGINAL_STYLE / name])
    assert "args" in cfg or "model" in cfg


def test_original_style_model_and_inference_merge():
    cfg = load_config([ORIGINAL_STYLE / "model_i2v_style.yaml", ORIGINAL_STYLE / "inference_v1.yaml"])
    assert cfg.model.network_config.params.in_channels == 32
    assert cfg.args.sampling_num_frames == 13 and cfg.args.bf16 is True
    assert cfg.model.first_stage_config.target == "vae_modules.autoencoder.VideoAutoencoderInferenceWrapper"


def test_precedence_defaults_model_inference_extra_set(tmp_path):
    model = tmp_path / "model.yaml"
    model.write_text("model: {scale_factor: 0.7}\nargs: {sampling_fps: 1, a: 1}\n")
    inference = tmp_path / "inference.yaml"
    inference.write_text("args: {sampling_fps: 2, b: 2}\n")
    extra = tmp_path / "extra.yaml"
    extra.write_text("args: {sampling_fps: 3, c: 3}\n")
    defaults = {"args": {"sampling_fps": 0, "d": 0, "a": 0}}
    cfg = load_config([model, inference], defaults=defaults)
    assert cfg.args.sampling_fps == 2 and cfg.args.a == 1 and cfg.args.d == 0
    cfg = load_config([model, inference, extra], ["args.sampling_fps=4"], defaults=defaults)
    assert cfg.args.sampling_fps == 4 and cfg.args.c == 3 and cfg.args.b == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("args.sampling_fps=16", 16),
        ("model.scale_factor=0.5", 0.5),
        ("args.bf16=false", False),
        ("args.sampling_image_size=[240, 368]", [240, 368]),  # 1.5: any size; 1.0's is fixed (test_config_safety)
        ("model.first_stage_config.params.ckpt_path=my vae.pt", "my vae.pt"),
    ],
)
def test_set_overrides_are_typed(text, expected):
    cfg = load_config(
        [configs_dir() / "models" / "cogvideox1.5_5b.yaml", configs_dir() / "inference" / "cogvideox1.5_5b.yaml"], [text]
    )
    key = text.split("=")[0]
    value = OmegaConf.select(cfg, key)
    value = OmegaConf.to_container(value) if not isinstance(value, (int, float, str, bool)) else value
    assert value == expected and type(value) is type(expected)


def test_set_missing_key_names_it_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config([configs_dir() / "inference" / "cogvideox_5b.yaml"], ["args.sampling_fsp=16"])
    assert "args.sampling_fsp" in str(e.value)
    # a new args key would have no effect (test_config_safety), so the hint lists the keys that do
    assert "args.sampling_fps" in e.value.hint and "+args.sampling_fsp" not in e.value.hint
    with pytest.raises(ConfigError) as e:
        load_config([configs_dir() / "models" / "cogvideox_5b.yaml"], ["model.scale_factr=0.5"])
    assert "model.scale_factor" in e.value.hint and "+model.scale_factr" in e.value.hint


def test_set_plus_adds_a_new_key():
    inference = configs_dir() / "inference" / "cogvideox1.5_5b_i2v.yaml"  # has no sampling_image_size
    cfg = load_config([inference], ["+model.extra.deep=x", "+args.sampling_image_size=[480, 720]"])
    assert cfg.model.extra.deep == "x" and list(cfg.args.sampling_image_size) == [480, 720]


@pytest.mark.parametrize(
    "text, message",
    [
        ("args.sampling_fps=fast", "expected a number"),
        ("args.bf16=3", "expected a boolean"),
        ("args.sampling_image_size=480", "expected a list"),
        ("args.sampling_fps", "expected KEY=VALUE"),
        ("args..x=1", "expected KEY=VALUE"),
    ],
)
def test_set_bad_values(text, message):
    with pytest.raises(ConfigError, match=message):
        load_config([configs_dir() / "inference" / "cogvideox_5b.yaml"], [text])


def test_malformed_yaml_reports_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  scale_factor: 0.7\n  network_config: [unclosed\n  other: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config([bad])
    assert str(bad) in str(e.value)
    assert ":3:" in str(e.value) or ":4:" in str(e.value)


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config([scalar])


def test_unknown_target_names_key_file_and_closest(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(
        "model:\n  sampler_config:\n    target: sgm.modules.diffusionmodules.sampling.VPSDEDPMPP2MSamplr\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config([path])
    assert "model.sampler_config.target" in str(e.value) and str(path) in str(e.value)
    assert "sgm.modules.diffusionmodules.sampling.VPSDEDPMPP2MSampler" in e.value.hint


def test_arbitrary_modules_are_never_imported(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model:\n  network_config:\n    target: os.system\n    params: {command: 'echo hi'}\n")
    with pytest.raises(ConfigError, match="unknown target 'os.system'"):
        load_config([path])
    with pytest.raises(ConfigError, match="unknown target"):
        instantiate({"target": "subprocess.call", "params": {}})


def test_training_only_targets_are_accepted_but_not_built():
    cfg = load_config([configs_dir() / "models" / "cogvideox_2b.yaml"])
    with pytest.raises(ConfigError, match="only in training"):
        instantiate(cfg.model.loss_fn_config)


@pytest.fixture
def dummy_targets(monkeypatch):
    monkeypatch.setitem(config.TARGETS, "test.Leaf", "fixtures.dummy_targets:Leaf")
    monkeypatch.setitem(config.TARGETS, "test.Parent", "fixtures.dummy_targets:Parent")


def test_instantiate_builds_nested_nodes_with_typed_params(dummy_targets):
    cfg = OmegaConf.create(
        {"thing": {"target": "test.Parent", "params": {"depth": 2, "child_config": {
            "target": "test.Leaf", "params": {"width": 4, "scale": 2, "flags": [1, 2]}}}}}
    )
    obj = instantiate(cfg.thing, extra_arg="x")
    assert obj.depth == 2 and obj.extra == {"extra_arg": "x"}
    assert obj.child.width == 4 and obj.child.scale == 2 and obj.child.flags == [1, 2]
    assert isinstance(obj.child.flags, list)


def test_instantiate_errors_name_the_dotted_key(dummy_targets):
    cfg = OmegaConf.create({"model": {"part": {"target": "test.Leaf", "params": {"width": "wide"}}}})
    with pytest.raises(ConfigError) as e:
        instantiate(cfg.model.part)
    assert "model.part.params.width" in str(e.value) and "expected int" in str(e.value)

    cfg = OmegaConf.create({"model": {"part": {"target": "test.Leaf", "params": {"widht": 3}}}})
    with pytest.raises(ConfigError) as e:
        instantiate(cfg.model.part)
    assert "model.part.params.widht" in str(e.value) and "'width'" in e.value.hint

    cfg = OmegaConf.create({"model": {"part": {"target": "test.Leaf"}}})
    with pytest.raises(ConfigError, match="needs 'width'"):
        instantiate(cfg.model.part)

    with pytest.raises(ConfigError, match="expected a node with 'target'"):
        instantiate(OmegaConf.create({"params": {}}))


def test_registry_entries_point_at_bundled_configs():
    registry = load_registry()
    assert set(registry) >= {"cogvideox-2b", "cogvideox-5b", "cogvideox-5b-i2v", "cogvideox1.5-5b", "cogvideox1.5-5b-i2v"}
    for entry in registry.values():
        for path in entry.config_files():
            assert path.is_file(), path
        cfg = load_config(entry.config_files(), defaults=entry.defaults())
        assert bool(cfg.args.get("image2video", False)) == (entry.task == "i2v")
        assert cfg.args.sampling_fps == entry.fps
        if entry.task == "t2v":
            assert list(cfg.args.sampling_image_size) == [entry.height, entry.width]
