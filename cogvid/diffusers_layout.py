"""Model folders in the Hugging Face diffusers layout: detect them, read their configs, derive the original's.

A diffusers CogVideoX folder (what ``save_pretrained`` writes and the Hub's THUDM/CogVideoX-* repos hold)::

    model_index.json                  the pipeline class and its parts
    transformer/config.json           + diffusion_pytorch_model.safetensors (or shards + .index.json)
    vae/config.json                   + diffusion_pytorch_model.safetensors
    text_encoder/config.json          + model.safetensors (or shards + model.safetensors.index.json)
    tokenizer/spiece.model            + tokenizer_config.json, special_tokens_map.json
    scheduler/scheduler_config.json

cogvid runs such a folder with the original's numbers: the sampler, the guider (DynamicCFG), the
discretization, the conditioning and the decode come from the original configuration of the model family
the folder matches (:func:`family_of`); only sizes and scale factors are read from the folder
(:func:`derived_config`). The reverse, :func:`export_configs`, writes the configs of an exported folder.
No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cogvid.errors import CheckpointError, ConfigError, MissingFileError
from cogvid.spec import Generation

MODEL_INDEX = "model_index.json"
DIFFUSERS_STEM = "diffusion_pytorch_model"
TRANSFORMERS_STEM = "model"
MAX_CONFIG_BYTES = 1 * 2**20
DIFFUSERS_VERSION = "0.30.0"  # the oldest diffusers with CogVideoX (1.5 needs 0.32; the configs are the same)
ORIGINAL_V15_TEXT_LENGTH = 224  # sample_video HEAD's T5 length for 1.5; diffusers' converter leaves its default 226
DIFFUSERS_DEFAULT_TEXT_LENGTH = 226
TOKENIZER_FILES = ("spiece.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.json")

LAYOUT = """\
a diffusers-layout CogVideoX folder holds model_index.json, transformer/ and vae/ (config.json +
diffusion_pytorch_model.safetensors or shards with their .index.json), text_encoder/ (config.json +
model.safetensors or shards), tokenizer/ (spiece.model) and scheduler/scheduler_config.json"""

# What the original DiT has no setting for: a folder must hold these values (diffusers' defaults).
_FIXED_TRANSFORMER = {
    "flip_sin_to_cos": True, "freq_shift": 0, "attention_bias": True, "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu", "norm_elementwise_affine": True, "norm_eps": 1e-5, "dropout": 0.0,
    "temporal_interpolation_scale": 1.0,
}
_FIXED_VAE = {"in_channels": 3, "out_channels": 3, "norm_num_groups": 32, "temporal_compression_ratio": 4, "act_fn": "silu"}
# Registry names of the released families, by (generation, image-to-video, rotary positions).
_FAMILIES = {
    (Generation.V1_0, False, False): "cogvideox-2b",
    (Generation.V1_0, False, True): "cogvideox-5b",
    (Generation.V1_0, True, True): "cogvideox-5b-i2v",
    (Generation.V1_5, False, True): "cogvideox1.5-5b",
    (Generation.V1_5, True, True): "cogvideox1.5-5b-i2v",
}
_PIPELINES = {False: "CogVideoXPipeline", True: "CogVideoXImageToVideoPipeline"}


def is_diffusers_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding ``model_index.json``."""
    return (path / MODEL_INDEX).is_file()


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a small config file (MissingFileError / ConfigError naming the file)."""
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}", hint=LAYOUT)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


class DiffusersFolder:
    """The configs of a diffusers-layout CogVideoX folder (read once, checked, nothing heavy loaded)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder).expanduser()
        self.index = read_json(self.folder / MODEL_INDEX, "diffusers model index")
        self.transformer = read_json(self.folder / "transformer" / "config.json", "transformer config")
        self.vae = read_json(self.folder / "vae" / "config.json", "VAE config")
        scheduler = self.folder / "scheduler" / "scheduler_config.json"
        self.scheduler = read_json(scheduler, "scheduler config") if scheduler.is_file() else {}
        self._check()

    def _get(self, config: dict[str, Any], key: str, kind: type, where: str) -> Any:
        value = config.get(key)
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise ConfigError(f"{self.folder / where}: {key} must be {kind.__name__}, found {value!r}", hint=LAYOUT)
        return value

    def _check(self) -> None:
        t, v = self.transformer, self.vae
        if t.get("_class_name") != "CogVideoXTransformer3DModel":
            raise ConfigError(
                f"{self.folder} is a diffusers folder, but its transformer is {t.get('_class_name')!r}, not CogVideoXTransformer3DModel",
                hint="cogvid runs CogVideoX models only",
            )
        for config, fixed, where in ((t, _FIXED_TRANSFORMER, "transformer/config.json"), (v, _FIXED_VAE, "vae/config.json")):
            for key, value in fixed.items():
                if key in config and config[key] != value:
                    raise ConfigError(
                        f"{self.folder / where}: {key} = {config[key]!r}; the original CogVideoX has {value!r} and no setting for it",
                        hint="cogvid builds the model as the original does; this folder's model is not one it can run",
                    )

    @property
    def generation(self) -> Generation:
        return Generation.V1_5 if self.transformer.get("patch_size_t") is not None else Generation.V1_0

    @property
    def image_to_video(self) -> bool:
        t = self.transformer
        return int(t.get("in_channels", 16)) > int(t.get("out_channels", 16)) or "ImageToVideo" in str(self.index.get("_class_name", ""))

    @property
    def rotary(self) -> bool:
        return bool(self.transformer.get("use_rotary_positional_embeddings", False))

    def family(self) -> str:
        """The registry model whose original configuration this folder's model follows."""
        key = (self.generation, self.image_to_video, self.rotary)
        if key not in _FAMILIES:
            raise ConfigError(
                f"{self.folder}: a CogVideoX {self.generation} {'image' if key[1] else 'text'}-to-video transformer "
                f"{'with' if key[2] else 'without'} rotary positions matches no released model family",
                hint="cogvid takes its sampler and conditioning from the original configuration of a released family",
            )
        return _FAMILIES[key]

    def describe(self) -> str:
        """E.g. "resembles cogvideox-5b (hidden 3072, 42 layers, 48 heads, in-channels 16)"."""
        t = self.transformer
        hidden = int(t.get("num_attention_heads", 0)) * int(t.get("attention_head_dim", 0))
        return (f"resembles {self.family()} (hidden {hidden}, {t.get('num_layers')} layers, "
                f"{t.get('num_attention_heads')} heads, in-channels {t.get('in_channels')})")

    def derived_config(self, family: Any) -> dict[str, Any]:
        """This folder's sizes and scale factors, as a layer over ``family`` (its family's merged original config)."""
        from omegaconf import OmegaConf

        t, v, where = self.transformer, self.vae, "transformer/config.json"
        heads = self._get(t, "num_attention_heads", int, where)
        head_dim = self._get(t, "attention_head_dim", int, where)
        v15 = self.generation is Generation.V1_5
        patch = self._get(t, "patch_size", int, where) if "patch_size" in t else 2  # diffusers' default
        text_length = self._get(t, "max_text_seq_length", int, where)
        if v15 and text_length == DIFFUSERS_DEFAULT_TEXT_LENGTH:
            text_length = ORIGINAL_V15_TEXT_LENGTH  # no 1.5 tensor depends on it; the original encodes 224 tokens
        if self.rotary:
            pos = {"hidden_size_head": head_dim, "text_length": text_length}
            if t.get("use_learned_positional_embeddings"):
                pos["learnable_pos_embed"] = True  # 5B-I2V
        else:
            scale = float(t.get("spatial_interpolation_scale", 1.875))
            pos = {"text_length": text_length, "height_interpolation": scale, "width_interpolation": scale}
        net: dict[str, Any] = {
            "num_layers": self._get(t, "num_layers", int, where),
            "hidden_size": heads * head_dim,
            "num_attention_heads": heads,
            "in_channels": self._get(t, "in_channels", int, where),
            "out_channels": self._get(t, "out_channels", int, where),
            "time_embed_dim": self._get(t, "time_embed_dim", int, where),
            "latent_width": self._get(t, "sample_width", int, where),
            "latent_height": self._get(t, "sample_height", int, where),
            "num_frames": self._get(t, "sample_frames", int, where),
            "time_compressed_rate": int(t.get("temporal_compression_ratio", 4)),
            "patch_size": [self._get(t, "patch_size_t", int, where), patch, patch] if v15 else patch,
            "modules": {"pos_embed_config": {"params": pos},
                        "patch_embed_config": {"params": {"text_hidden_size": self._get(t, "text_embed_dim", int, where)}}},
        }
        if t.get("ofs_embed_dim") is not None:
            net["ofs_embed_dim"] = self._get(t, "ofs_embed_dim", int, where)
        channels = [int(c) for c in self._get(v, "block_out_channels", list, "vae/config.json")]
        if not channels or any(c % channels[0] for c in channels):
            raise ConfigError(f"{self.folder / 'vae/config.json'}: block_out_channels {channels} are not multiples of the first")
        coder = {"ch": channels[0], "ch_mult": [c // channels[0] for c in channels],
                 "num_res_blocks": self._get(v, "layers_per_block", int, "vae/config.json"),
                 "z_channels": self._get(v, "latent_channels", int, "vae/config.json")}
        # OmegaConf replaces lists whole: the T5 entry is the family's with this folder's token length.
        emb_models = OmegaConf.to_container(family.model.conditioner_config.params.emb_models, resolve=True)
        emb_models[0].setdefault("params", {})["max_length"] = text_length
        scaling = v.get("scaling_factor")
        if isinstance(scaling, bool) or not isinstance(scaling, (int, float)):
            raise ConfigError(f"{self.folder / 'vae/config.json'}: scaling_factor must be a number, found {scaling!r}")
        model: dict[str, Any] = {
            "scale_factor": float(scaling),
            "network_config": {"params": net},
            "conditioner_config": {"params": {"emb_models": emb_models}},
            "first_stage_config": {"params": {"encoder_config": {"params": coder}, "decoder_config": {"params": coder}}},
        }
        shift = self.shift_scale()
        if shift is not None:
            for node in _DISCRETIZATIONS:
                if OmegaConf.select(family, "model." + node) is not None:
                    _set(model, node + ".params.shift_scale", shift)
        args: dict[str, Any] = {}
        if not v15:  # 1.0 runs at its training grid; 1.5 keeps its family's default size and length
            args["sampling_image_size"] = [8 * net["latent_height"], 8 * net["latent_width"]]
            args["sampling_num_frames"] = (net["num_frames"] - 1) // 4 + 1
        return {"model": model, "args": args}

    def shift_scale(self) -> float | None:
        """The scheduler's ``snr_shift_scale`` (the original's ``ZeroSNRDDPMDiscretization.shift_scale``)."""
        value = self.scheduler.get("snr_shift_scale")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


_DISCRETIZATIONS = (  # every discretization node of the original configs (model-relative)
    "denoiser_config.params.discretization_config",
    "sampler_config.params.discretization_config",
    "loss_fn_config.params.sigma_sampler_config.params.discretization_config",
)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        tree = tree.setdefault(name, {})
    tree[leaf] = value


# --------------------------------------------------------------------------------------------
# Export: the configs of a diffusers folder for a model in the original schema


def export_configs(cfg: Any, image_to_video: bool) -> dict[str, dict[str, Any]]:
    """``{relative path: JSON object}`` of the config files of a diffusers folder for merged config ``cfg``."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(container, dict)
    net = container["network_config"]["params"]
    pos = net["modules"]["pos_embed_config"]
    pos_params = pos.get("params") or {}
    rotary = str(pos["target"]).endswith("Rotary3DPositionEmbeddingMixin")
    patch = net["patch_size"]
    v15 = not isinstance(patch, int)
    heads = int(net["num_attention_heads"])
    transformer = {
        "_class_name": "CogVideoXTransformer3DModel", "_diffusers_version": DIFFUSERS_VERSION,
        "num_attention_heads": heads, "attention_head_dim": int(net["hidden_size"]) // heads,
        "in_channels": int(net["in_channels"]), "out_channels": int(net["out_channels"]),
        "time_embed_dim": int(net.get("time_embed_dim") or net["hidden_size"]),
        "ofs_embed_dim": net.get("ofs_embed_dim"),
        "text_embed_dim": int(net["modules"]["patch_embed_config"]["params"]["text_hidden_size"]),
        "num_layers": int(net["num_layers"]),
        "sample_width": int(net["latent_width"]), "sample_height": int(net["latent_height"]),
        "sample_frames": int(net["num_frames"]),
        "patch_size": int(patch[1]) if v15 else int(patch), "patch_size_t": int(patch[0]) if v15 else None,
        "patch_bias": not v15,
        "temporal_compression_ratio": int(net["time_compressed_rate"]),
        "max_text_seq_length": int(pos_params["text_length"]),
        "spatial_interpolation_scale": float(pos_params.get("height_interpolation", 1.875)) if not rotary else 1.875,
        "use_rotary_positional_embeddings": rotary,
        "use_learned_positional_embeddings": bool(pos_params.get("learnable_pos_embed", False)),
        **_FIXED_TRANSFORMER,
    }
    coder = container["first_stage_config"]["params"]["decoder_config"]["params"]
    levels = len(coder["ch_mult"])
    vae = {
        "_class_name": "AutoencoderKLCogVideoX", "_diffusers_version": DIFFUSERS_VERSION,
        "down_block_types": ["CogVideoXDownBlock3D"] * levels, "up_block_types": ["CogVideoXUpBlock3D"] * levels,
        "block_out_channels": [int(coder["ch"]) * int(m) for m in coder["ch_mult"]],
        "latent_channels": int(coder["z_channels"]), "layers_per_block": int(coder["num_res_blocks"]),
        "norm_eps": 1e-6, "sample_height": 480, "sample_width": 720,
        "scaling_factor": float(container["scale_factor"]), "shift_factor": None, "latents_mean": None, "latents_std": None,
        "force_upcast": True, "use_quant_conv": False, "use_post_quant_conv": False, "invert_scale_latents": v15,
        **_FIXED_VAE,
    }
    discretization = container["denoiser_config"]["params"]["discretization_config"]
    scheduler = {
        "_class_name": "CogVideoXDDIMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
        "num_train_timesteps": 1000, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
        "set_alpha_to_one": True, "timestep_spacing": "trailing", "steps_offset": 0,
        "snr_shift_scale": float((discretization.get("params") or {}).get("shift_scale", 1.0)),
    }
    index = {
        "_class_name": _PIPELINES[image_to_video], "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "CogVideoXDDIMScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLCogVideoX"],
    }
    return {MODEL_INDEX: index, "transformer/config.json": transformer, "vae/config.json": vae,
            "scheduler/scheduler_config.json": scheduler}


def check_part(path: Path, stem: str) -> str | None:
    """Why a diffusers part folder (config.json + safetensors) is incomplete; None when it looks complete."""
    if not (path / "config.json").is_file():
        return f"no {path / 'config.json'}"
    index = path / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            names = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            return f"unreadable {index} ({e})"
        missing = sorted(name for name in names if not (path / str(name)).is_file())
        return f"{path} lacks {', '.join(missing[:3])} (listed in {index.name})" if missing else None
    if not (path / f"{stem}.safetensors").is_file():
        return f"no {path / (stem + '.safetensors')} (nor {index.name})"
    return None


def check_tokenizer(path: Path) -> str | None:
    if (path / "spiece.model").is_file() or (path / "tokenizer.json").is_file():
        return None
    return f"no {path / 'spiece.model'}"


def require_part(path: Path, stem: str, what: str) -> None:
    problem = check_part(path, stem)
    if problem:
        raise CheckpointError(f"the {what} folder is incomplete: {problem}", hint=LAYOUT)
