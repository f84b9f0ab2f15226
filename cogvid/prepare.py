"""Resolve a request against its model and check everything before any weights load.

:func:`resolve_model` merges a model's configuration and locates its weights; :func:`prepare` turns a
:class:`~cogvid.request.GenerationRequest` into a :class:`PreparedRequest`: every default filled in
from the model (frames, size, fps, steps, guidance, sampler), the seed drawn, the sampler resolved
once into its configuration node, the image and LoRA files checked. A prepared request is what a
pipeline runs and what a sidecar records, so a video can be made again from it.

No torch here: ``cogvid t2v --dry-run`` prepares without importing it.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cogvid.config import load_config
from cogvid.diffusion import SAMPLER_NAMES, sampler_config_for, sampler_config_with
from cogvid.diffusers_layout import DiffusersFolder, is_diffusers_folder
from cogvid.errors import MissingFileError, UsageError
from cogvid.layout import check_lora_folders
from cogvid.parallel import SINGLE, ParallelPlan, plan_parallel
from cogvid.registry import ModelEntry, WeightPaths, default_model_name, get_model, load_registry, weight_paths_from_config
from cogvid.request import GenerationRequest, ModelChoice, sampler_name
from cogvid.spec import SPATIAL_COMPRESSION, Generation, ModelSpec, check_frames, check_size, spec_from_config

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from PIL import Image

SEED_RANGE = 2**31  # a drawn seed, like the original's


@dataclass(frozen=True)
class ResolvedModel:
    """A model's merged configuration, what it can make and where its weights are, before anything loads."""

    name: str
    entry: ModelEntry | None
    cfg: DictConfig
    spec: ModelSpec
    paths: WeightPaths
    choice: ModelChoice
    resembles: str | None = None  # a model folder: which registry model's original configuration it runs with

    @property
    def model_dtype(self) -> str:
        """The dtype the released weights run in (fp16/bf16/fp32)."""
        return self.entry.dtype if self.entry is not None else self.spec.model_dtype


def resolve_model(choice: ModelChoice = ModelChoice()) -> ResolvedModel:
    """Merge the configuration of a registry model (or of original-style YAMLs) and locate its weights."""
    name = choice.name
    if name is None and not choice.configs:
        name = default_model_name()
    folder = model_folder(name) if name is not None else None
    if folder is not None:
        return _resolve_folder(folder, choice)
    entry = get_model(name) if name is not None else None
    files = [*(entry.config_files() if entry else ()), *choice.configs]
    cfg = load_config(files, choice.overrides, defaults=entry.defaults() if entry else None)
    spec = spec_from_config(cfg, task=entry.task if entry else None, default_fps=entry.fps if entry else None)
    paths = entry.paths(choice.weights) if entry is not None else weight_paths_from_config(cfg)
    label = entry.name if entry else ", ".join(str(c) for c in choice.configs)
    # The name is recorded, so a replay runs this model even if the default model changes.
    return ResolvedModel(label, entry, cfg, spec, paths, choice.replace(name=name))


def model_folder(name: str) -> Path | None:
    """The model folder ``-m NAME`` means, or None for a registry name.

    A name with a path separator, or starting with ``.`` or ``~``, is a path; so is an existing folder
    that is not a registry name.
    """
    looks_like_path = "/" in name or os.sep in name or name.startswith((".", "~"))
    path = Path(name).expanduser()
    if not looks_like_path and (name in load_registry() or not path.is_dir()):
        return None
    if not path.is_dir():
        raise MissingFileError(f"model folder {path} does not exist", hint=f"{FOLDER_HINT}; or give a name from `cogvid models list`")
    return path.resolve()


FOLDER_HINT = ("-m takes a registry name or a model folder: a diffusers-layout folder (model_index.json, transformer/, "
               "vae/, text_encoder/, tokenizer/) or a SAT folder (transformer/latest, vae/3d-vae.pt, t5-v1_1-xxl/ and "
               "the model's original YAMLs)")


def _resolve_folder(folder: Path, choice: ModelChoice) -> ResolvedModel:
    """A model folder in the diffusers layout (configuration derived from its family's original one and the
    folder's sizes) or in the SAT layout with its original YAMLs."""
    label = str(folder)
    if is_diffusers_folder(folder):
        found = DiffusersFolder(folder)
        family = get_model(found.family())
        files = family.config_files()
        base = load_config(files, defaults=family.defaults())
        derived = (f"{folder} (sizes from its config.json files)", found.derived_config(base))
        cfg = load_config([*files, derived, *choice.configs], choice.overrides, defaults=family.defaults())
        spec = spec_from_config(cfg, task=family.task, default_fps=family.fps)
        paths = WeightPaths.diffusers(folder)
        return ResolvedModel(label, None, cfg, spec, paths, choice.replace(name=label), resembles=found.describe())
    yamls = sorted(folder.glob("*.yaml"))
    if not yamls and not choice.configs and (folder / "transformer" / "latest").is_file():
        return _resolve_sat_folder(folder, choice)
    if not yamls and not choice.configs:
        raise UsageError(f"{folder} is neither a diffusers-layout folder (no model_index.json) nor a SAT folder with its YAMLs",
                         hint=f"{FOLDER_HINT}; or pass the YAMLs with --config")
    overrides = list(choice.overrides)
    if (folder / "latest").is_file():  # a fine-tune checkpoint folder: its YAML names the base it started from
        overrides.insert(0, f"args.load={folder}")
    cfg = load_config([*yamls, *choice.configs], overrides, registry_model=False)
    spec = spec_from_config(cfg)
    return ResolvedModel(label, None, cfg, spec, weight_paths_from_config(cfg, base=folder), choice.replace(name=label))


def _resolve_sat_folder(folder: Path, choice: ModelChoice) -> ResolvedModel:
    """A SAT folder without YAMLs (transformer/, vae/3d-vae.pt, t5-v1_1-xxl/): the registry model whose DiT
    sizes its checkpoint has (read memory-mapped: this is the one case that imports torch before loading)."""
    from cogvid.checkpoint import describe_dit_state, read_state_dict, released_dit_name, split_engine_state

    state = split_engine_state(read_state_dict(folder / "transformer"))["dit"]
    name = released_dit_name(state)
    if name is None:
        raise UsageError(f"{folder} holds {describe_dit_state(state)}, of no released size, and no YAMLs",
                         hint="put the model's original YAMLs (model and inference) in the folder, or pass them with --config")
    family = get_model(name)
    cfg = load_config([*family.config_files(), *choice.configs], choice.overrides, defaults=family.defaults())
    spec = spec_from_config(cfg, task=family.task, default_fps=family.fps)
    paths = WeightPaths(folder / "transformer", folder / "vae" / "3d-vae.pt", folder / "t5-v1_1-xxl")
    label = str(folder)
    return ResolvedModel(label, family, cfg, spec, paths, choice.replace(name=label), resembles=f"is {name} (DiT sizes of its checkpoint)")


def describe_model(choice: ModelChoice) -> dict[str, Any]:
    """What ``cogvid models show`` reports for a registry model with ``choice``'s --config/--set: its
    registry entry, weights, merged configuration and the defaults a generation would use."""
    from omegaconf import OmegaConf

    model = resolve_model(choice)
    entry, spec = model.entry, model.spec
    if entry is None:
        raise UsageError("`cogvid models show` takes a model name", hint="see `cogvid models list`")
    summary = entry.summary(choice.weights)
    t2v = entry.task == "t2v"  # image-to-video: the size follows the image
    summary.update(
        description=entry.description,
        config_files=[str(p) for p in entry.config_files()],
        generation_defaults={"frames": spec.default_frames, "fps": spec.fps,
                             "height": spec.default_height if t2v else None, "width": spec.default_width if t2v else None},
        config=OmegaConf.to_container(model.cfg, resolve=True),
    )
    return summary


@dataclass(frozen=True)
class SamplerChoice:
    """The sampler a video runs: its public name, its configuration node, steps and guidance scale."""

    name: str
    config: DictConfig  # {target, params} with num_steps and the guider's scale applied
    steps: int
    guidance: float | None


def resolve_sampler(model_sampler_config: Any, name: str | None, steps: int | None, guidance: float | None) -> SamplerChoice:
    """The model's sampler (or the one named), with ``steps`` and ``guidance`` applied and checked.

    ``steps`` also sets DynamicCFG's own schedule length, as diffusers does (the original keeps the YAML's).
    """
    public = name if name is not None else _public_name(str(model_sampler_config.target))
    base = model_sampler_config if name is None else sampler_config_with(name, model_sampler_config)
    node = sampler_config_for(base, steps, guidance)
    params = node.get("params") or {}
    guider_params = (params.get("guider_config") or {}).get("params") or {}
    scale = guider_params.get("scale")
    if "num_steps" not in params:
        raise UsageError("the model's sampler_config sets no num_steps", hint="give --steps N (the released models use 50)")
    return SamplerChoice(public, node, int(params["num_steps"]), float(scale) if isinstance(scale, (int, float)) else None)


def _public_name(target: str) -> str:
    try:
        return sampler_name(target)
    except UsageError:  # a sampler cogvid builds but gives no short name (e.g. the sigma-space DDIM)
        return target


@dataclass(frozen=True)
class PreparedRequest:
    """A request resolved for its model: nothing left to decide, nothing left to check before loading.

    ``request`` has every default filled in (``seed`` drawn); its height and width stay None only when
    a 1.5 image-to-video size follows the image, which ``height``/``width`` then hold.
    """

    request: GenerationRequest
    model: ResolvedModel
    sampler: SamplerChoice
    height: int
    width: int
    latent_frames: int
    image_fit: str | None = None  # 1.5 I2V: "stretch" (size from the image, as the original) or "crop"
    parallel: ParallelPlan = SINGLE  # how the torchrun processes share this video (cogvid.parallel)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @property
    def decode_schedule(self) -> str | None:
        """The VAE decode schedule (None: the model's own, as the original)."""
        return self.spec.decode_schedule(self.request.decode == "original")

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        """The initial noise shape (B, T, C, H/8, W/8)."""
        h, w = self.height // SPATIAL_COMPRESSION, self.width // SPATIAL_COMPRESSION
        return (1, self.latent_frames, self.spec.latent_channels, h, w)

    def describe(self) -> dict[str, Any]:
        """What ``--dry-run`` reports: the model, the resolved request, the pixel size, the weights' status, the
        split over processes, the speed options and the memory plan."""
        from cogvid.memory_plan import dry_run_memory
        from cogvid.speed.options import describe as describe_speed

        statuses = [{"part": s.part, "path": str(s.path), "found": s.found} for s in self.model.paths.statuses()]
        return {"model": self.model.name, "request": self.request.to_json(), "height": self.height, "width": self.width,
                "latent_frames": self.latent_frames, "parallel": self.parallel.describe(), "weights": statuses,
                "speed": describe_speed(self.request.model, self.request.cache), "memory": dry_run_memory(self)}

    def videos(self) -> list[PreparedRequest]:
        """One prepared request per video: seeds ``seed``, ``seed + 1``, ... and ``num_videos`` 1."""
        seed = self.request.seed or 0
        return [
            dataclasses.replace(self, request=self.request.replace(seed=seed + k, num_videos=1))
            for k in range(self.request.num_videos)
        ]


def prepare(
    request: GenerationRequest, model: ResolvedModel | None = None, *, picture: Image.Image | None = None, batch: bool = False
) -> PreparedRequest:
    """Resolve ``request`` for its model (resolved here unless given) and check it; loads nothing.

    ``model`` must be ``request.model``'s configuration (its LoRAs and device may differ: they do not
    change the configuration).
    ``picture``: an already opened image for image-to-video (the Python API); otherwise
    ``request.image`` is read to check it. ``batch``: one of many videos (``--parallel auto`` shares
    them out). Raises a CogvidError naming the first problem.
    """
    model = model or resolve_model(request.model)
    spec = model.spec
    if not request.prompt.strip():
        raise UsageError("the prompt is empty", hint='describe the video, e.g. "a red circle moving left"')
    if picture is None and request.image is not None:
        from cogvid.image import load_image

        picture = load_image(request.image)  # a missing or unreadable image is named first
    has_image = picture is not None
    if spec.task == "i2v" and not has_image:
        raise UsageError(f"{model.name} is an image-to-video model and needs an image", hint="use `cogvid i2v IMAGE PROMPT`")
    if spec.task == "t2v" and has_image:
        raise UsageError(f"{model.name} is a text-to-video model and takes no image", hint="use `cogvid t2v PROMPT`, or an -i2v model")
    frames = request.frames if request.frames is not None else spec.default_frames
    check_frames(spec, frames)
    size = request.size or (spec.default_height, spec.default_width)
    check_size(spec, *size)
    check_lora_folders(lora.path for lora in request.model.loras)
    height, width, fit = size[0], size[1], None
    if has_image:
        if spec.generation is Generation.V1_5:
            if request.size is None:
                height, width = image_size_v15(picture)
                check_size(spec, height, width)
                fit = "stretch"
            else:
                fit = "crop"
    sampler = resolve_sampler(model.cfg.model.sampler_config, request.sampler, request.steps, request.guidance)
    cache = _check_cache(request.cache, model)
    filled = {
        "frames": frames,
        "height": None if fit == "stretch" else height,
        "width": None if fit == "stretch" else width,
        "fps": request.fps if request.fps is not None else spec.fps,
        "steps": sampler.steps,
        "guidance": sampler.guidance,
        "sampler": sampler.name if sampler.name in SAMPLER_NAMES else None,
        "seed": request.seed if request.seed is not None else random.randrange(SEED_RANGE),
        "cache": cache,
    }
    changes = {key: value for key, value in filled.items() if getattr(request, key) != value}  # what was unset
    if request.model.name != model.choice.name:
        changes["model"] = request.model.replace(name=model.choice.name)
    resolved = request.replace(**changes)
    latent_frames = spec.latent_frames(frames)
    parallel = _parallel_plan(request.model.parallel, model, sampler, latent_frames, height, width, batch)
    return PreparedRequest(resolved, model, sampler, height, width, latent_frames, fit, parallel)


def _parallel_plan(mode: str, model: ResolvedModel, sampler: SamplerChoice, latent_frames: int, height: int, width: int,
                   batch: bool) -> ParallelPlan:
    """This video's split over the torchrun world (checked against the DiT's heads and token count)."""
    from cogvid.distributed import rank_info

    world = rank_info()[1]
    if world <= 1 and mode == "auto":
        return SINGLE
    net = model.cfg.model.network_config.params
    patch = net.patch_size
    pt, ph, pw = (1, int(patch), int(patch)) if isinstance(patch, int) else (int(p) for p in patch)
    tokens = (latent_frames // pt) * (height // SPATIAL_COMPRESSION // ph) * (width // SPATIAL_COMPRESSION // pw)
    guider = (sampler.config.get("params") or {}).get("guider_config")
    guided = guider is not None and not str(guider.get("target", "")).endswith("IdentityGuider")
    return plan_parallel(mode, world, heads=int(net.num_attention_heads), tokens=tokens, guided=guided, batch=batch)


def _check_cache(cache: str | None, model: ResolvedModel) -> str | None:
    """The cache setting with its threshold filled in; TeaCache needs the model's coefficients."""
    from cogvid.speed.options import parse_cache, with_default_threshold

    parsed = parse_cache(cache)
    if parsed is not None and parsed[0] == "teacache":
        from cogvid.speed.calibration import teacache_coefficients

        teacache_coefficients(model)  # refused now, not after loading, when the model has none
    return with_default_threshold(cache)


def image_size_v15(picture: Image.Image) -> tuple[int, int]:
    """The pixel size a 1.5 image-to-video model makes for this image (short side 768, aspect kept)."""
    from cogvid.image import latent_size_v15

    latent_h, latent_w = latent_size_v15(picture.width, picture.height)
    return latent_h * SPATIAL_COMPRESSION, latent_w * SPATIAL_COMPRESSION


__all__ = ["PreparedRequest", "ResolvedModel", "SamplerChoice", "describe_model", "prepare", "resolve_model", "resolve_sampler"]
