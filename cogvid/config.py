"""Load, merge and validate YAML configuration; build objects from ``{target, params}`` nodes.

Configuration uses the ORIGINAL CogVideo SAT schema (``model: {network_config: {target, params},
...}`` and ``args: {...}``). ``target`` strings never reach ``importlib``: they are looked up in
:data:`TARGETS`, an allow-list from the original dotted names (and cogvid's own) to cogvid classes.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cogvid.config_checks import (
    DIT_TARGET,
    NETWORK_PARAMS,
    check_args_values,
    check_dit_params,
    check_override_args,
    effective_args,
)
from cogvid.errors import ConfigError
from cogvid.safe_yaml import parse_value, read_yaml

_SGM = "sgm.modules.diffusionmodules"

# Original dotted name (or cogvid's own name) -> "cogvid.module:attribute".
# ``None`` marks a name that is known but only used in training; it is accepted in a YAML
# (so users' copies of the original files load) and never built at inference.
TARGETS: dict[str, str | None] = {
    # DiT (dit_video_concat in the original)
    "dit_video_concat.DiffusionTransformer": "cogvid.dit.model:DiffusionTransformer",
    "dit_video_concat.Basic3DPositionEmbeddingMixin": "cogvid.dit.mixins:Basic3DPositionEmbeddingMixin",
    "dit_video_concat.Rotary3DPositionEmbeddingMixin": "cogvid.dit.mixins:Rotary3DPositionEmbeddingMixin",
    "dit_video_concat.ImagePatchEmbeddingMixin": "cogvid.dit.mixins:ImagePatchEmbeddingMixin",
    "dit_video_concat.AdaLNMixin": "cogvid.dit.mixins:AdaLNMixin",
    "dit_video_concat.FinalLayerMixin": "cogvid.dit.mixins:FinalLayerMixin",
    "sat.model.finetune.lora2.LoraMixin": "cogvid.dit.mixins:LoraMixin",
    # VAE
    "vae_modules.autoencoder.VideoAutoencoderInferenceWrapper": "cogvid.vae:VideoAutoencoder",
    "vae_modules.cp_enc_dec.ContextParallelEncoder3D": "cogvid.vae:Encoder3D",
    "vae_modules.cp_enc_dec.ContextParallelDecoder3D": "cogvid.vae:Decoder3D",
    "vae_modules.regularizers.DiagonalGaussianRegularizer": "cogvid.vae:DiagonalGaussianRegularizer",
    # Diffusion: denoiser, scalings, weighting, discretizations, guiders, samplers
    f"{_SGM}.denoiser.Denoiser": "cogvid.diffusion.denoiser:Denoiser",
    f"{_SGM}.denoiser.DiscreteDenoiser": "cogvid.diffusion.denoiser:DiscreteDenoiser",
    f"{_SGM}.denoiser_scaling.EDMScaling": "cogvid.diffusion.scalings:EDMScaling",
    f"{_SGM}.denoiser_scaling.EpsScaling": "cogvid.diffusion.scalings:EpsScaling",
    f"{_SGM}.denoiser_scaling.VScaling": "cogvid.diffusion.scalings:VScaling",
    f"{_SGM}.denoiser_scaling.VScalingWithEDMcNoise": "cogvid.diffusion.scalings:VScalingWithEDMcNoise",
    f"{_SGM}.denoiser_scaling.VideoScaling": "cogvid.diffusion.scalings:VideoScaling",
    f"{_SGM}.denoiser_weighting.UnitWeighting": "cogvid.diffusion.scalings:UnitWeighting",
    f"{_SGM}.denoiser_weighting.EDMWeighting": "cogvid.diffusion.scalings:EDMWeighting",
    f"{_SGM}.denoiser_weighting.VWeighting": "cogvid.diffusion.scalings:VWeighting",
    f"{_SGM}.denoiser_weighting.EpsWeighting": "cogvid.diffusion.scalings:EpsWeighting",
    f"{_SGM}.discretizer.EDMDiscretization": "cogvid.diffusion.discretization:EDMDiscretization",
    f"{_SGM}.discretizer.LegacyDDPMDiscretization": "cogvid.diffusion.discretization:LegacyDDPMDiscretization",
    f"{_SGM}.discretizer.ZeroSNRDDPMDiscretization": "cogvid.diffusion.discretization:ZeroSNRDDPMDiscretization",
    f"{_SGM}.guiders.VanillaCFG": "cogvid.diffusion.guiders:VanillaCFG",
    f"{_SGM}.guiders.DynamicCFG": "cogvid.diffusion.guiders:DynamicCFG",
    f"{_SGM}.guiders.IdentityGuider": "cogvid.diffusion.guiders:IdentityGuider",
    f"{_SGM}.sampling.DDIMSampler": "cogvid.diffusion.samplers:DDIMSampler",
    f"{_SGM}.sampling.EulerEDMSampler": "cogvid.diffusion.samplers:EulerEDMSampler",
    f"{_SGM}.sampling.HeunEDMSampler": "cogvid.diffusion.samplers:HeunEDMSampler",
    f"{_SGM}.sampling.EulerAncestralSampler": "cogvid.diffusion.samplers:EulerAncestralSampler",
    f"{_SGM}.sampling.DPMPP2SAncestralSampler": "cogvid.diffusion.samplers:DPMPP2SAncestralSampler",
    f"{_SGM}.sampling.DPMPP2MSampler": "cogvid.diffusion.samplers:DPMPP2MSampler",
    f"{_SGM}.sampling.SDEDPMPP2MSampler": "cogvid.diffusion.samplers:SDEDPMPP2MSampler",
    f"{_SGM}.sampling.LinearMultistepSampler": "cogvid.diffusion.samplers:LinearMultistepSampler",
    f"{_SGM}.sampling.VideoDDIMSampler": "cogvid.diffusion.samplers:VideoDDIMSampler",
    f"{_SGM}.sampling.VPSDEDPMPP2MSampler": "cogvid.diffusion.samplers:VPSDEDPMPP2MSampler",
    f"{_SGM}.sampling.VPODEDPMPP2MSampler": "cogvid.diffusion.samplers:VPODEDPMPP2MSampler",
    # Text conditioner
    "sgm.modules.GeneralConditioner": "cogvid.text:GeneralConditioner",
    "sgm.modules.encoders.modules.GeneralConditioner": "cogvid.text:GeneralConditioner",
    "sgm.modules.encoders.modules.FrozenT5Embedder": "cogvid.text:FrozenT5Embedder",
    # Training-only names: accepted in YAMLs, never built at inference.
    f"{_SGM}.loss.VideoDiffusionLoss": None,
    f"{_SGM}.sigma_sampling.DiscreteSampling": None,
    "torch.nn.Identity": None,
    "data_video.SFTDataset": None,
}

# cogvid's own short names: each is an alias of an original name above.
_COGVID_NAMES = {
    "cogvid.dit.DiffusionTransformer": "dit_video_concat.DiffusionTransformer",
    "cogvid.vae.VideoAutoencoder": "vae_modules.autoencoder.VideoAutoencoderInferenceWrapper",
}
for _value in list(TARGETS.values()):
    if _value:
        _module, _attr = _value.split(":")
        _COGVID_NAMES.setdefault(f"{_module}.{_attr}", next(k for k, v in TARGETS.items() if v == _value))
for _alias, _original in _COGVID_NAMES.items():
    TARGETS.setdefault(_alias, TARGETS[_original])


# --------------------------------------------------------------------------------------------
# Loading and merging


_origins: dict[str, str] = {}  # dotted key -> file that last set it (for error messages)


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path}",
            hint="check the path; bundled configs are listed by `cogvid models show NAME`",
        )
    data = read_yaml(path, "config file")  # refuses oversized and alias-bomb files before any copy
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level (model: ..., args: ...), found {type(data).__name__}",
        )
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {e}") from e


def _leaf_keys(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, Mapping) or isinstance(node, DictConfig):
        for key in node:
            yield from _leaf_keys(node[key], f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def origin(dotted_key: str) -> str | None:
    """The file that last set ``dotted_key`` (or one of its parents) in the last loaded config."""
    key = dotted_key
    while key:
        if key in _origins:
            return _origins[key]
        for known, where in _origins.items():
            if known.startswith(key + "."):
                return where
        key = key.rpartition(".")[0]
    return None


def load_config(
    files: Sequence[str | Path | tuple[str, Mapping[str, Any]]] = (),
    overrides: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    registry_model: bool | None = None,
) -> DictConfig:
    """Merge ``defaults`` < each YAML file in order < ``--set`` style ``overrides``.

    A ``(label, mapping)`` item of ``files`` is a layer given as data (e.g. the sizes read from a
    diffusers folder), merged in its place and named by ``label`` in errors.

    Every ``target`` in the result is checked against the allow-list, and the DiT's parameters
    and the inference ``args`` are checked (:func:`check_model`), so a typo or a bad value fails
    here with the file and dotted key, before anything heavy is built. ``registry_model``: a
    registry entry supplies the task, dtype and weights (default: when it gives ``defaults``),
    so ``--set`` of the ``args`` keys that would decide them is refused.
    """
    _origins.clear()
    layers: list[tuple[str, DictConfig]] = []
    if defaults:
        layers.append(("registry defaults", OmegaConf.create(dict(defaults))))
    for file in files:
        if isinstance(file, tuple):
            layers.append((file[0], OmegaConf.create(dict(file[1]))))
            continue
        path = Path(file).expanduser()
        layers.append((str(path), _read_yaml(path)))
    merged = OmegaConf.create({})
    for where, layer in layers:
        for key in _leaf_keys(layer):
            _origins[key] = where
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot merge {where}: {e}") from e
    assert isinstance(merged, DictConfig)
    apply_overrides(merged, overrides, registry_model=defaults is not None if registry_model is None else registry_model)
    check_targets(merged)
    check_model(merged)
    return merged


def _plain_node(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key)
    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{key}: {e}") from e


def check_model(cfg: DictConfig) -> None:
    """Check the DiT's parameters and the inference ``args`` of a merged config (torch-free).

    A ConfigError names the first unknown DiT parameter (with close matches), a size or count
    that is not a positive integer, a head size the position embedding cannot split, or an
    ``args`` value inference cannot use. Configs without a DiT (an inference YAML alone) only
    get the ``args`` check.
    """
    network = None
    if TARGETS.get(str(OmegaConf.select(cfg, "model.network_config.target"))) == DIT_TARGET:
        network = _plain_node(cfg, NETWORK_PARAMS)
        if not isinstance(network, Mapping):
            raise ConfigError(f"{NETWORK_PARAMS}: expected a mapping, found {_type_name(network)}")
        check_dit_params(network, TARGETS, origin)
    args = _plain_node(cfg, "args")
    if isinstance(args, Mapping):
        check_args_values(args, network, origin)


# --------------------------------------------------------------------------------------------
# --set overrides


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a mapping"
    return type(value).__name__


def _compatible(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)):
        return isinstance(new, (int, float))
    if isinstance(old, (list, ListConfig)):
        return isinstance(new, list)
    if isinstance(old, (dict, DictConfig)):
        return isinstance(new, dict)
    return isinstance(new, type(old))


def _closest_keys(node: DictConfig, key: str) -> list[str]:
    return difflib.get_close_matches(key, [str(k) for k in node.keys()], n=3, cutoff=0.5)


def parse_override(text: str) -> tuple[str, Any, bool]:
    """Split ``a.b=value`` (or ``+a.b=value`` to add a new key) into key, typed value, add flag.

    Values are read as YAML: ``3`` is an int, ``0.5`` a float, ``true`` a boolean,
    ``[480, 720]`` a list, anything else a string.
    """
    add = text.startswith("+")
    body = text[1:] if add else text
    key, sep, raw = body.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"bad --set value {text!r}: expected KEY=VALUE with a dotted key",
            hint="for example: --set args.sampling_fps=16 or --set model.scale_factor=0.7",
        )
    value = parse_value(raw, f"--set {key}") if raw.strip() else ""
    return key, value, add


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], registry_model: bool = False) -> None:
    """Apply ``--set`` overrides in place: the key must exist (``+key=`` adds one) and keep its type.

    An ``args`` key that inference does not read is refused (``registry_model``: also those a
    registry entry decides), with the keys that do have an effect in the hint.
    """
    for text in overrides:
        key, value, add = parse_override(text)
        parts = key.split(".")
        node: Any = cfg
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            here = ".".join(parts[: depth + 1])
            if not isinstance(node, DictConfig):
                raise ConfigError(
                    f"--set {key}: {'.'.join(parts[:depth])} is {_type_name(node)}, not a mapping",
                )
            if part not in node:
                if add:
                    check_override_args(key, value, registry_model)
                    if last:
                        node[part] = value
                        _origins[key] = "--set"
                        break
                    node[part] = {}
                else:
                    if parts[0] == "args":  # suggest only keys with an effect; a new args key would have none
                        allowed = effective_args(registry_model)
                        close = difflib.get_close_matches(part, allowed, n=1, cutoff=0.6) if depth == 1 else []
                        how = "args keys with an effect: " + ", ".join(allowed)
                    else:
                        close = _closest_keys(node, part)
                        how = f"use +{key}=VALUE to add a new key"
                    suggestion = f"did you mean {', '.join('.'.join(parts[:depth] + [c]) for c in close)}? " if close else ""
                    raise ConfigError(f"--set {key}: no key {here!r} in the configuration", hint=suggestion + how)
            if last:
                check_override_args(key, value, registry_model)
                old = node[part]
                if not _compatible(old, value):
                    raise ConfigError(
                        f"--set {key}: expected {_type_name(old)} (like {OmegaConf.to_container(old) if isinstance(old, (DictConfig, ListConfig)) else old!r}), found {_type_name(value)} {value!r}",
                    )
                node[part] = value
                _origins[key] = "--set"
            else:
                node = node[part]


# --------------------------------------------------------------------------------------------
# Targets and instantiate


def _walk_targets(node: Any, path: str) -> Iterable[tuple[str, Any]]:
    if isinstance(node, DictConfig):
        if "target" in node:
            yield path, node
        for key in node:
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _walk_targets(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _walk_targets(child, f"{path}.{i}")


def _unknown_target(name: Any, where: str) -> ConfigError:
    close = difflib.get_close_matches(str(name), list(TARGETS), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else "known targets: " + ", ".join(
        sorted(k for k, v in TARGETS.items() if v)
    )
    src = origin(where)
    return ConfigError(
        f"unknown target {name!r} at {where}" + (f" (in {src})" if src else ""),
        hint=hint,
    )


def check_targets(cfg: DictConfig) -> None:
    """Raise ConfigError for the first ``target`` that is not in the allow-list."""
    for path, node in _walk_targets(cfg, ""):
        name = node.get("target")
        if not isinstance(name, str) or name not in TARGETS:
            raise _unknown_target(name, f"{path}.target" if path else "target")


def resolve_target(name: str, where: str = "target") -> Any:
    """The cogvid class or function registered for ``name``."""
    if name not in TARGETS:
        raise _unknown_target(name, where)
    spec = TARGETS[name]
    if spec is None:
        raise ConfigError(
            f"{where}: {name} is used only in training and cannot be built by cogvid",
        )
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


def _full_key(node: Any) -> str:
    try:
        key = node._get_full_key(None)
    except Exception:  # a plain dict has no location
        key = ""
    return str(key) if key else "<config>"


def _check_type(value: Any, annotation: Any) -> bool:
    """A shallow check of ``value`` against a simple annotation (unknown annotations pass)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin_type = typing.get_origin(annotation)
    if origin_type in (typing.Union, types.UnionType):
        return any(_check_type(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin_type is not None:
        annotation = origin_type
    if not isinstance(annotation, type):
        return True
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (list, tuple, Sequence, typing.Sequence):
        return isinstance(value, (list, tuple, ListConfig))
    if annotation in (dict, Mapping, typing.Mapping):
        return isinstance(value, (dict, DictConfig))
    try:
        return isinstance(value, annotation)
    except TypeError:
        return True


def instantiate(node: Any, **extra: Any) -> Any:
    """Build the object described by a ``{target, params}`` node.

    ``params`` are passed as keyword arguments (nested ``*_config`` nodes stay config nodes,
    for the class to instantiate in turn), together with ``extra``. A missing or unexpected
    parameter, or a value of the wrong type, is a ConfigError naming the dotted key.
    """
    where = _full_key(node)
    if isinstance(node, Mapping):
        node = OmegaConf.create(dict(node))
    if not isinstance(node, DictConfig) or "target" not in node:
        raise ConfigError(f"{where}: expected a node with 'target' (and optional 'params'), found {_type_name(node)}")
    name = node.get("target")
    factory = resolve_target(str(name), f"{where}.target" if where != "<config>" else "target")
    params = node.get("params", None)
    if params is None:
        params = {}
    elif not isinstance(params, DictConfig):
        raise ConfigError(f"{where}.params: expected a mapping, found {_type_name(params)}")
    kwargs = {str(k): params._get_node(k) for k in params}
    kwargs = {k: (v if isinstance(v, (DictConfig, ListConfig)) and _is_config_node(v) else _plain(v)) for k, v in kwargs.items()}
    kwargs.update(extra)
    _check_signature(factory, kwargs, name, where)
    return factory(**kwargs)


def _is_config_node(value: Any) -> bool:
    return isinstance(value, DictConfig) and "target" in value or isinstance(value, ListConfig) and any(
        isinstance(item, DictConfig) and "target" in item for item in value
    )


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if hasattr(value, "_value"):
        return value._value()
    return value


def _check_signature(factory: Any, kwargs: dict[str, Any], name: Any, where: str) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:
        hints = {}
    prefix = f"{where}.params" if where != "<config>" else "params"
    for key, value in kwargs.items():
        if key not in params:
            if accepts_any:
                continue
            close = difflib.get_close_matches(key, list(params), n=1)
            raise ConfigError(
                f"{prefix}.{key}: {name} has no parameter {key!r}" + (f" (in {origin(prefix)})" if origin(prefix) else ""),
                hint=f"did you mean {close[0]!r}?" if close else f"its parameters: {', '.join(p for p in params if p != 'self')}",
            )
        annotation = hints.get(key, params[key].annotation)
        if isinstance(value, (DictConfig, ListConfig)) and _is_config_node(value):
            continue
        if not _check_type(value, annotation):
            expected = getattr(annotation, "__name__", str(annotation))
            raise ConfigError(
                f"{prefix}.{key}: expected {expected}, found {_type_name(value)} {value!r}"
                + (f" (in {origin(prefix + '.' + key)})" if origin(prefix + "." + key) else ""),
            )
    missing = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in kwargs
    ]
    if missing:
        raise ConfigError(f"{prefix}: {name} needs {', '.join(repr(m) for m in missing)}, which the config does not set")
