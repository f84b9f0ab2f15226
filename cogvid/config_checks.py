"""What a resolved configuration may say: the DiT's parameters and the ``args`` keys inference reads.

Checked by :func:`cogvid.config.load_config` after merging and ``--set``, so a bad value is a
ConfigError (exit 2) naming the dotted key before anything heavy is built. Nothing here imports
torch: :data:`DIT_PARAMETERS` is a copy of ``cogvid.dit.model.DiffusionTransformer.__init__``'s
parameters (tests/unit/test_config_safety.py keeps the two equal).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cogvid.errors import ConfigError

DIT_TARGET = "cogvid.dit.model:DiffusionTransformer"  # the TARGETS value of the DiT
NETWORK_PARAMS = "model.network_config.params"

Origin = Callable[[str], "str | None"]  # dotted key -> where it was last set ("--set", a file)


# --------------------------------------------------------------------------------------------
# Value checks: each returns None when the value fits, else what was expected.


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> str | None:
    return None if _is_int(value) and value > 0 else "a positive integer"


def _optional_positive_int(value: Any) -> str | None:
    return None if value is None or (_is_int(value) and value > 0) else "a positive integer or null"


def _positive_number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return None if ok else "a positive number"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _false(value: Any) -> str | None:
    return None if value is False else "false (no CogVideoX model uses it)"


def _null(value: Any) -> str | None:
    return None if value is None else "null (no CogVideoX model is class-conditional)"


def _mapping(value: Any) -> str | None:
    return None if isinstance(value, Mapping) else "a mapping"


def _optional_mapping(value: Any) -> str | None:
    return None if value is None or isinstance(value, Mapping) else "a mapping"


def _patch_size(value: Any) -> str | None:
    if _is_int(value) and value > 0:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(_is_int(v) and v > 0 for v in value):
        return None
    return "a positive integer (1.0) or a list [t, h, w] of three positive integers (1.5)"


def _adaln(value: Any) -> str | None:
    return None if value == "adaln" else "'adaln' (the only input_time of the original)"


@dataclass(frozen=True)
class DitParameter:
    """One parameter of the DiT constructor: whether a config must set it and what values fit."""

    required: bool
    check: Callable[[Any], str | None]


# DiffusionTransformer.__init__'s parameters (less ``dtype``/``device``, see DIT_INJECTED).
DIT_PARAMETERS: dict[str, DitParameter] = {
    "transformer_args": DitParameter(True, _mapping),
    "num_frames": DitParameter(True, _positive_int),
    "time_compressed_rate": DitParameter(True, _positive_int),
    "latent_width": DitParameter(True, _positive_int),
    "latent_height": DitParameter(True, _positive_int),
    "patch_size": DitParameter(True, _patch_size),
    "in_channels": DitParameter(True, _positive_int),
    "out_channels": DitParameter(True, _positive_int),
    "hidden_size": DitParameter(True, _positive_int),
    "num_layers": DitParameter(True, _positive_int),
    "num_attention_heads": DitParameter(True, _positive_int),
    "elementwise_affine": DitParameter(True, _boolean),
    "time_embed_dim": DitParameter(False, _optional_positive_int),
    "num_classes": DitParameter(False, _null),
    "modules": DitParameter(False, _optional_mapping),
    "input_time": DitParameter(False, _adaln),
    "adm_in_channels": DitParameter(False, _optional_positive_int),
    "parallel_output": DitParameter(False, _boolean),
    "height_interpolation": DitParameter(False, _positive_number),
    "width_interpolation": DitParameter(False, _positive_number),
    "time_interpolation": DitParameter(False, _positive_number),
    "use_SwiGLU": DitParameter(False, _false),
    "use_RMSNorm": DitParameter(False, _false),
    "zero_init_y_embed": DitParameter(False, _boolean),
    "ofs_embed_dim": DitParameter(False, _optional_positive_int),
}
# Parameters cogvid passes itself at load time; a config value would be overwritten.
DIT_INJECTED = {"dtype": "--dtype", "device": "--device"}
# transformer_args keys SAT's BaseModel reads without a default, and what they must be.
TRANSFORMER_ARGS: dict[str, Callable[[Any], str | None]] = {
    "vocab_size": _positive_int,
    "max_sequence_length": _positive_int,
    "layernorm_order": lambda v: None if v in ("pre", "post", "sandwich") else "'pre', 'post' or 'sandwich'",
}
DIT_MODULES = ("pos_embed_config", "patch_embed_config", "adaln_layer_config", "final_layer_config")


def rope_fits(head_dim: int) -> bool:
    """Whether 3D RoPE's [t | h | w] split (1/4, 3/8, 3/8, each an even width) fills ``head_dim`` exactly."""
    dims = (head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3)
    return all(d % 2 == 0 for d in dims) and sum(dims) == head_dim


def sincos_fits(hidden_size: int) -> bool:
    """Whether the 2B's 3D sin-cos table ([t: H/4 | w, h: 3H/8 each], even halves) fills ``hidden_size`` exactly."""
    spatial, temporal = hidden_size // 4 * 3, hidden_size // 4
    width = 2 * ((spatial // 2) // 2) * 2 + 2 * (temporal // 2)
    return width == hidden_size


# --------------------------------------------------------------------------------------------
# The DiT's parameters


def _located(key: str, origin: Origin | None) -> str:
    where = origin(key) if origin is not None else None
    return f"{key} (from {where})" if where == "--set" else f"{key} (in {where})" if where else key


def check_dit_params(params: Mapping[str, Any], targets: Mapping[str, str | None], origin: Origin | None = None) -> None:
    """Raise a ConfigError for the first DiT parameter that is unknown, missing or out of range.

    ``params`` is ``model.network_config.params`` as plain data; ``targets`` maps target names
    to cogvid classes (to tell a RoPE model from a sin-cos one); ``origin`` says where a key was set.
    """

    def fail(key: str, message: str, hint: str | None = None) -> ConfigError:
        default_hint = "the released models' values are in `cogvid models show NAME --json`; fix the YAML or the --set value"
        return ConfigError(f"{_located(f'{NETWORK_PARAMS}.{key}', origin)}: {message}", hint=hint or default_hint)

    for key, value in params.items():
        if key in DIT_INJECTED:
            raise fail(key, "cogvid sets this itself when it loads the model", hint=f"use {DIT_INJECTED[key]} instead")
        if key not in DIT_PARAMETERS:
            close = difflib.get_close_matches(str(key), list(DIT_PARAMETERS), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else "the DiT's parameters: " + ", ".join(DIT_PARAMETERS)
            raise fail(key, "the CogVideoX DiT has no such parameter", hint=hint)
        expected = DIT_PARAMETERS[key].check(value)
        if expected is not None:
            raise fail(key, f"expected {expected}, found {value!r}")
    missing = [key for key, p in DIT_PARAMETERS.items() if p.required and key not in params]
    if missing:
        raise ConfigError(
            f"{NETWORK_PARAMS}: the DiT needs {', '.join(missing)}, which the configuration does not set",
            hint="start from a released model's YAML (`cogvid models show NAME`)",
        )
    for key, check in TRANSFORMER_ARGS.items():
        value = params["transformer_args"].get(key)
        expected = check(value)
        if value is None:
            raise fail(f"transformer_args.{key}", f"missing (SAT needs it: {expected})")
        if expected is not None:
            raise fail(f"transformer_args.{key}", f"expected {expected}, found {value!r}")

    def culprit(*keys: str) -> str:  # of keys that must agree, the one a --set changed (else the first)
        return next((key for key in keys if origin is not None and origin(f"{NETWORK_PARAMS}.{key}") == "--set"), keys[0])

    hidden, heads = params["hidden_size"], params["num_attention_heads"]
    if hidden % heads:
        raise fail(culprit("hidden_size", "num_attention_heads"), f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    modules = params.get("modules") or {}
    missing = [name for name in DIT_MODULES if name not in modules]
    if missing:
        raise fail("modules", f"missing {', '.join(missing)}")
    pos_config = modules["pos_embed_config"]
    pos_target = targets.get(str(pos_config.get("target"))) if isinstance(pos_config, Mapping) else None
    if pos_target and pos_target.endswith(":Rotary3DPositionEmbeddingMixin") and not rope_fits(hidden // heads):
        raise fail(
            culprit("hidden_size", "num_attention_heads"),
            f"3D RoPE cannot split a head of {hidden // heads} channels (hidden_size / num_attention_heads) "
            "into its t, h, w parts",
            hint="use a head size that is a multiple of 16 (the released models use 64)",
        )
    if pos_target and pos_target.endswith(":Basic3DPositionEmbeddingMixin") and not sincos_fits(hidden):
        raise fail(
            "hidden_size",
            f"the 3D sin-cos position table cannot split {hidden} channels into its t, w, h parts",
            hint="use a hidden_size that is a multiple of 16 (the released 2B uses 1920)",
        )
    patch = params["patch_size"]
    ph, pw = (patch, patch) if _is_int(patch) else (patch[1], patch[2])
    for key, size, step in (("latent_height", params["latent_height"], ph), ("latent_width", params["latent_width"], pw)):
        if size % step:
            raise fail(culprit(key, "patch_size"), f"{key} {size} is not a multiple of the spatial patch size {step}")


# --------------------------------------------------------------------------------------------
# args: the keys inference reads (every `args.get(...)`/`cfg.args` in cogvid/: spec.py, engine.py)

INFERENCE_ARGS = (
    "sampling_fps",  # fps of the written video (an explicit --fps wins)
    "sampling_num_frames",  # default length, in latent frames (--frames wins)
    "sampling_image_size",  # default [height, width] of a 1.5 model (--size wins; 1.0's is fixed)
)
# Read only for a model given by --config files alone; a registry model fixes them.
CONFIG_ONLY_ARGS: dict[str, str] = {
    "fp16": "use --dtype fp16",
    "bf16": "use --dtype bf16",
    "image2video": "pick an image-to-video model with --model (an -i2v name)",
    "load": "use --weights DIR, or a registry entry of your own ($COGVID_MODELS)",
}
# Keys of the original's inference YAML that cogvid does through its own options.
_OPTION_FOR = {
    "output_dir": "use --out DIR",
    "seed": "use --seed N",
    "input_file": "use `cogvid batch FILE`",
    "input_type": "use `cogvid batch FILE`",
    "batch_size": "use `cogvid batch FILE`",
    "latent_channels": f"it follows {NETWORK_PARAMS}.out_channels",
}


def effective_args(registry_model: bool) -> list[str]:
    """The ``args`` keys that change what a run does (registry models fix the config-only ones)."""
    return [*INFERENCE_ARGS, *([] if registry_model else CONFIG_ONLY_ARGS)]


def check_override_args(key: str, value: Any, registry_model: bool) -> None:
    """Refuse a ``--set args.KEY`` that inference never reads (a user's YAML may keep such keys)."""
    parts = key.split(".")
    if parts[0] != "args":
        return
    if len(parts) > 1:
        names = [parts[1]]
    elif isinstance(value, Mapping):
        names = [str(k) for k in value]
    else:
        return  # a non-mapping `args` is refused by the type check
    allowed = effective_args(registry_model)
    for name in names:
        if name in allowed:
            continue
        if name in CONFIG_ONLY_ARGS:
            reason, hint = "the registry model decides this, so it would have no effect", CONFIG_ONLY_ARGS[name]
        else:
            reason, hint = "cogvid's inference never reads it, so it would have no effect", _OPTION_FOR.get(name)
        listing = "args keys with an effect: " + ", ".join(allowed)
        raise ConfigError(f"--set {key}: args.{name} is not used at inference: {reason}", hint=f"{hint}; {listing}" if hint else listing)


def check_args_values(args: Mapping[str, Any], network: Mapping[str, Any] | None, origin: Origin | None = None) -> None:
    """Check the values of the args keys inference reads; ``network`` is the DiT's params (when known)."""

    def fail(key: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{_located(f'args.{key}', origin)}: {message}", hint=hint or "fix the YAML or the --set value")

    for key in ("sampling_fps", "sampling_num_frames"):
        if args.get(key) is not None and _positive_int(args[key]) is not None:
            raise fail(key, f"expected a positive integer, found {args[key]!r}")
    size = args.get("sampling_image_size")
    if size is None:
        return
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        raise fail("sampling_image_size", f"expected [height, width], two positive integers, found {size!r}")
    if network is not None and _is_int(network.get("patch_size")):  # CogVideoX 1.0: the size is fixed
        fixed = [8 * network["latent_height"], 8 * network["latent_width"]]
        if list(size) != fixed:
            raise fail(
                "sampling_image_size",
                f"{list(size)} does not fit: CogVideoX 1.0 models generate {fixed[0]}x{fixed[1]} (HxW) only",
                hint=f"remove it or set [{fixed[0]}, {fixed[1]}]",
            )
