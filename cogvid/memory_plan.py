"""Will it fit? The GPU memory each stage of a video needs, estimated before anything loads.

:func:`estimate` sizes a run from the merged configuration alone (no torch, no weights): for each
stage (T5 encode, image encode for image-to-video, denoising, VAE decode) the bytes of the weights
that the offload mode keeps on the device, the activations (counted tensor by tensor by
:mod:`cogvid.memory_walk`) and the backend workspace; and the host RAM the load needs.
:func:`fit` picks the fastest plan that fits a memory budget (``--memory auto``).

What the numbers are: *allocated* bytes, what ``torch.cuda.max_memory_allocated`` reports.
The activation counts are checked against a live-tensor tracker on CPU (tests/memory); the CUDA
workspace term (cuBLAS/cuDNN scratch) is a fixed allowance until a GPU run measures it
(``benchmarks/gpu_memory.py``). :func:`fit` leaves headroom for the CUDA caching allocator on top.

Offload modes:

* ``none``: T5, DiT and VAE stay on the GPU (as the original SAT ``sample_video.py`` of CogVideoX 1.5
  keeps them; its 1.0 version moved the engine to the CPU before the VAE decode).
* ``text``: as ``none``, but T5 leaves the GPU after encoding.
* ``model``: each of T5, DiT and VAE is on the GPU only while it is used, from the load on.
* ``blocks``: as ``model``, and the layers of the DiT and of T5 are streamed from pinned host memory,
  the next one prefetched while the current one runs (two on the GPU at a time).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cogvid.decode_schedule import decode_plan
from cogvid.errors import DeviceError, UsageError, choice_hint
from cogvid.memory_walk import decode_bytes, dit_step_bytes, encode_image_bytes, t5_encode_bytes
from cogvid.model_sizes import DiTSize, T5Size, VAESize, dit_size, t5_size, vae_size
from cogvid.request import OFFLOAD_MODES
from cogvid.spec import SPATIAL_COMPRESSION

if TYPE_CHECKING:
    from cogvid.prepare import PreparedRequest, ResolvedModel
    from cogvid.request import GenerationRequest

MIB = 1 << 20
GIB = 1 << 30
QUANTIZE = ("int8", "fp8")
ITEM_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
CUDA_WORKSPACE = 256 * MIB  # cuBLAS / cuDNN / attention scratch: an allowance, not yet measured on a GPU
STREAMED_BLOCKS = 2  # ``blocks``: the layer running and the one being prefetched
TILE = (32, 8)  # VideoAutoencoder.decode's tile size and overlap, in latent pixels
HEADROOM = 0.05  # fit(): the share of the budget left to the caching allocator (at least HEADROOM_MIN)
HEADROOM_MIN = 512 * MIB
# Fastest first. Exact plans (same frames as ``none``) come before tiled ones (tiling changes pixels).
CANDIDATES = (("none", False), ("text", False), ("model", False), ("blocks", False),
              ("none", True), ("text", True), ("model", True), ("blocks", True))


@dataclass(frozen=True)
class ModelSizes:
    """The three parts of a model, counted from its configuration."""

    dit: DiTSize
    vae: VAESize
    t5: T5Size
    rope: bool
    patch: tuple[int, int, int]
    in_channels: int
    latent_channels: int

    @classmethod
    def of(cls, model: ResolvedModel) -> ModelSizes:
        cfg = model.cfg.model
        net = cfg.network_config.params
        patch = net.patch_size
        dims = (1, int(patch), int(patch)) if isinstance(patch, int) else tuple(int(p) for p in patch)
        rope = str(net.modules.pos_embed_config.target).endswith("Rotary3DPositionEmbeddingMixin")
        folder = model.paths.t5 if model.paths is not None else None
        return cls(dit_size(cfg.network_config), vae_size(cfg.first_stage_config), t5_size(cfg.conditioner_config, folder),
                   rope, dims, int(net.in_channels), int(net.out_channels))


@dataclass(frozen=True)
class StagePlan:
    """One stage: what is on the device and the bytes it holds at the stage's peak."""

    name: str
    parts: tuple[str, ...]
    weights: int
    activations: int
    workspace: int

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.workspace

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.name, "on_device": list(self.parts), "weights": self.weights,
                "activations": self.activations, "workspace": self.workspace, "total": self.total}


@dataclass(frozen=True)
class MemoryPlan:
    """The estimated peak device memory of each stage of one video, and the host RAM of the load."""

    model: str
    device: str  # "cuda" or "cpu"
    dtype: str
    offload: str
    vae_tiling: bool
    quantize: str | None
    frames: int
    height: int
    width: int
    latent_frames: int
    text_tokens: int
    video_tokens: int
    weights: dict[str, int]  # part -> bytes at the run dtype
    stages: tuple[StagePlan, ...]
    host_ram: int

    @property
    def peak(self) -> int:
        return max(stage.total for stage in self.stages)

    @property
    def peak_stage(self) -> StagePlan:
        return max(self.stages, key=lambda stage: stage.total)

    def stage(self, name: str) -> StagePlan | None:
        return next((stage for stage in self.stages if stage.name == name), None)

    @property
    def settings(self) -> str:
        """``--offload model --vae-tiling`` style: the flags this plan runs with."""
        return f"--offload {self.offload}" + (" --vae-tiling" if self.vae_tiling else "")

    def summary(self) -> str:
        peak = self.peak_stage
        return f"{self.settings}: peak {gib(peak.total)} ({peak.name}), host RAM {gib(self.host_ram)}"

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "stages"}
        return {**data, "stages": [stage.to_json() for stage in self.stages], "peak": self.peak,
                "peak_stage": self.peak_stage.name}

    def lines(self) -> list[str]:
        """The plan as plain text: a header and one line per stage (GiB)."""
        quantized = f", DiT {self.quantize}" if self.quantize else ""
        head = (f"{self.model}: {self.frames} frames {self.width}x{self.height} ({self.video_tokens} + {self.text_tokens} tokens), "
                f"{self.dtype}{quantized}, {self.settings} on {self.device}")
        rows = [head, f"  {'stage':<10} {'weights':>8} {'activ.':>8} {'workspace':>9} {'total':>8}  on the device"]
        for stage in self.stages:
            rows.append(f"  {stage.name:<10} {gib(stage.weights, 2):>8} {gib(stage.activations, 2):>8} "
                        f"{gib(stage.workspace, 2):>9} {gib(stage.total, 2):>8}  {', '.join(stage.parts)}")
        rows.append(f"  peak {gib(self.peak)} ({self.peak_stage.name}); host RAM for the load {gib(self.host_ram)}")
        return rows


def gib(nbytes: int, digits: int = 1) -> str:
    """Bytes as text: ``25.9 GiB`` (under 1 GiB: ``310 MiB``); ``digits`` > 1 gives a bare GiB number for tables."""
    if digits > 1:
        return f"{nbytes / GIB:.{digits}f}"
    return f"{nbytes / GIB:.{digits}f} GiB" if nbytes >= GIB else f"{nbytes / MIB:.0f} MiB"


def item_bytes(dtype: str) -> int:
    try:
        return ITEM_BYTES[dtype]
    except KeyError:
        raise UsageError(f"unknown dtype {dtype!r}", hint="use fp32, fp16 or bf16") from None


def run_dtype(choice_dtype: str | None, model_dtype: str, device: str) -> str:
    """The dtype a run uses (as :func:`cogvid.devices.resolve_dtype`): explicit, else the model's on GPU, fp32 on CPU."""
    from cogvid.devices import DTYPE_ALIASES

    if choice_dtype not in (None, "auto"):
        return DTYPE_ALIASES[choice_dtype]
    return model_dtype if device != "cpu" else "fp32"


def plan_device(device: str) -> str:
    """``cpu`` for a CPU run, else ``cuda`` (``auto`` is planned for the GPU it would pick)."""
    return "cpu" if str(device).split(":")[0] == "cpu" else "cuda"


def estimate(
    model: ResolvedModel,
    *,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    offload: str = "none",
    vae_tiling: bool = False,
    dtype: str | None = None,
    device: str = "cuda",
    decode: str = "original",
    negative: bool = False,
    quantize: str | None = None,
) -> MemoryPlan:
    """The memory plan of one video of ``model`` (defaults: the model's frames and size, its dtype on GPU).

    ``negative``: a negative prompt is encoded too. ``quantize`` (``int8``/``fp8``) sizes the DiT's
    linear weights at one byte each. Raises UsageError for an unknown offload mode.
    """
    if offload not in OFFLOAD_MODES:
        raise UsageError(f"unknown offload mode {offload!r}", hint=choice_hint(offload, OFFLOAD_MODES))
    if quantize is not None and quantize not in QUANTIZE:
        raise UsageError(f"unknown quantization {quantize!r}", hint=choice_hint(quantize, QUANTIZE))
    spec = model.spec
    device = plan_device(device)
    dtype = run_dtype(dtype, model.model_dtype, device)
    item = item_bytes(dtype)
    sizes = ModelSizes.of(model)
    frames = frames or spec.default_frames
    if height is None or width is None:  # a 1.5 image-to-video size follows the image: plan the registry's
        entry = model.entry
        height, width = (entry.height, entry.width) if entry is not None else (spec.default_height, spec.default_width)
    latent_frames = spec.latent_frames(frames)
    latent_h, latent_w = height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION
    pt, ph, pw = sizes.patch
    video_tokens = (latent_frames // pt) * (latent_h // ph) * (latent_w // pw)
    text_tokens = sizes.t5.max_length
    i2v = spec.task == "i2v"

    dit, t5 = sizes.dit, sizes.t5
    linear = dit.blocks * dit.linear_per_block if quantize else 0
    weights = {
        "t5": t5.total * item,
        "dit": (dit.total - linear) * item + linear,
        "vae": sizes.vae.total * item,
    }
    block_bytes = (dit.per_block - (dit.linear_per_block if quantize else 0)) * item + (dit.linear_per_block if quantize else 0)

    # Tensors that outlive their stage: the initial noise, the text conditioning, the image latents, the samples.
    latent_f32 = latent_frames * sizes.latent_channels * latent_h * latent_w * 4
    conditioning = 2 * text_tokens * t5.d_model * item
    image_latents = latent_f32 * item // 4 if i2v else 0

    activations = {"text": latent_f32 + t5_encode_bytes(t5, item=item, prompts=2 if negative else 1)}
    if i2v:
        image_pixels = 3 * height * width * item
        activations["image"] = latent_f32 + conditioning + image_pixels + encode_image_bytes(sizes.vae, height, width, item=item)
    dit_input = 2 * (latent_frames * sizes.in_channels * latent_h * latent_w + text_tokens * t5.d_model) * item
    activations["denoising"] = latent_f32 + conditioning + image_latents + dit_step_bytes(
        dit, batch=2, text_tokens=text_tokens, video_tokens=video_tokens, item=item, rope=sizes.rope,
        latent_bytes=latent_f32, input_bytes=dit_input)
    schedule = spec.decode_schedule(decode == "original") or spec.generation.value
    chunks = [(chunk.end - chunk.start, chunk.first_frame) for chunk in decode_plan(latent_frames, schedule)]
    activations["decoding"] = 2 * latent_f32 + conditioning + image_latents + decode_bytes(
        sizes.vae, chunks, latent_h, latent_w, item=item, tile=TILE if vae_tiling else None, latent_bytes=latent_f32)

    part_bytes = {**weights, "dit (shared)": dit.shared * item, "dit blocks": STREAMED_BLOCKS * block_bytes,
                  "t5 (shared)": t5.shared * item, "t5 blocks": STREAMED_BLOCKS * t5.per_block * item}
    stages = []
    for name, activation in activations.items():
        parts = parts_on_device(offload, name) if device == "cuda" else ("t5", "dit", "vae")
        resident = sum(part_bytes[part] for part in parts)
        workspace = CUDA_WORKSPACE if device == "cuda" else 0
        stages.append(StagePlan(name, parts, resident, activation, workspace))
    return MemoryPlan(
        model=model.name, device=device, dtype=dtype, offload=offload, vae_tiling=vae_tiling, quantize=quantize,
        frames=frames, height=height, width=width, latent_frames=latent_frames, text_tokens=text_tokens,
        video_tokens=video_tokens, weights=weights, stages=tuple(stages), host_ram=_host_ram(weights, offload, device),
    )


def parts_on_device(offload: str, stage: str) -> tuple[str, ...]:
    """The parts an offload mode keeps on the device during a stage (``dit (shared)``: the DiT outside
    its layers; ``dit blocks``: two of its layers at a time; the same for T5). :mod:`cogvid.offload`
    moves parts by this table."""
    if offload == "none" or (offload == "text" and stage == "text"):
        return ("t5", "dit", "vae")
    if offload == "text":
        return ("dit", "vae")
    used = {"text": "t5", "image": "vae", "denoising": "dit", "decoding": "vae"}[stage]
    if offload == "model":
        return (used,)
    if stage == "denoising":  # blocks
        return ("dit (shared)", "dit blocks")
    if stage == "text":
        return ("t5 (shared)", "t5 blocks", "dit (shared)")
    return (used, "dit (shared)")


def _host_ram(weights: dict[str, int], offload: str, device: str) -> int:
    """Host RAM above the interpreter's for the load: the parts kept on the host, plus the largest part
    while it is read (checkpoints are memory-mapped and cast one tensor at a time)."""
    reading = max(weights.values())
    if device == "cpu":
        return sum(weights.values())
    kept = {"none": 0, "text": weights["t5"], "model": sum(weights.values()), "blocks": sum(weights.values())}[offload]
    return kept + reading


def plan_for(prepared: PreparedRequest, *, offload: str | None = None, vae_tiling: bool | None = None,
             quantize: str | None = None, device: str | None = None) -> MemoryPlan:
    """The plan of a prepared request (its own offload, tiling and device unless given; None is ``none`` / off)."""
    request = prepared.request
    choice = request.model
    return estimate(
        prepared.model, frames=request.frames, height=prepared.height, width=prepared.width,
        offload=offload or choice.offload or "none",
        vae_tiling=bool(vae_tiling if vae_tiling is not None else request.vae_tiling),
        dtype=choice.dtype, device=device or choice.device, decode=request.decode,
        negative=bool(request.negative.strip()), quantize=quantize,
    )


def plan_report(request: GenerationRequest, quantize: str | None = None) -> dict[str, Any]:
    """What ``cogvid plan`` shows for a request (no prompt or image needed): the plan of every offload
    mode and tiling the request leaves open, and the one ``--memory SIZE`` would pick.

    Returns ``{"json": ..., "lines": [...]}``; raises UsageError for frames or a size the model cannot make.
    """
    from cogvid.prepare import resolve_model
    from cogvid.spec import check_frames, check_size

    model = resolve_model(request.model)
    choice, spec = model.choice, model.spec
    frames = request.frames if request.frames is not None else spec.default_frames
    check_frames(spec, frames)
    if request.size is not None:
        check_size(spec, *request.size)

    def plan(mode: str, tiling: bool) -> MemoryPlan:
        return estimate(model, frames=frames, height=request.height, width=request.width, offload=mode, vae_tiling=tiling,
                        dtype=choice.dtype, device=choice.device, decode=request.decode,
                        negative=bool(request.negative.strip()), quantize=quantize)

    plans = [plan(mode, tiling) for mode, tiling in CANDIDATES
             if choice.offload in (None, mode) and request.vae_tiling in (None, tiling)]
    budget = parse_budget(choice.memory)
    picked = fit(plan, budget, offload=choice.offload, vae_tiling=request.vae_tiling) if budget is not None else None
    lines = plans[0].lines() if len(plans) == 1 else plans_table(plans)
    if picked is not None:
        lines.append(picked.message() if picked.plan is not None else f"no plan fits in {gib(budget)} (usable {gib(picked.usable)})")
    data = {"model": model.name, "plans": [p.to_json() for p in plans], "budget": budget,
            "picked": picked.plan.settings if picked is not None and picked.plan is not None else None}
    return {"json": data, "lines": lines}


def dry_run_memory(prepared: PreparedRequest) -> dict[str, Any]:
    """What ``--dry-run`` says about memory: the plan of the settings that will run, or, when ``--memory
    auto`` decides at run time, the plan without offloading and a pointer to ``cogvid plan``."""
    settled, note = settle([prepared])
    plan = plan_for(settled[0])
    choice = prepared.request.model
    undecided = choice.offload is None or prepared.request.vae_tiling is None
    if undecided and choice.memory == "auto" and plan_device(choice.device) == "cuda":
        summary = (f"{plan.summary()}; --memory auto picks the offload mode and tiling from the free GPU memory "
                   "at run time (`cogvid plan` shows every mode)")
    else:
        summary = note.removeprefix("memory: ") if note else plan.summary()
    return {"plan": plan.to_json(), "summary": summary}


def plans_table(plans: Sequence[MemoryPlan]) -> list[str]:
    """Several plans of one video as a table: each stage's total, the peak and the host RAM (GiB)."""
    first = plans[0]
    quantized = f", DiT {first.quantize}" if first.quantize else ""
    stages = [stage.name for stage in first.stages]
    lines = [f"{first.model}: {first.frames} frames {first.width}x{first.height} ({first.video_tokens} + {first.text_tokens} tokens), "
             f"{first.dtype}{quantized} on {first.device}; estimated peak memory per stage, GiB",
             f"  {'settings':<30}" + "".join(f"{name:>11}" for name in stages) + f"{'peak':>9}{'host RAM':>10}"]
    for plan in plans:
        lines.append(f"  {plan.settings:<30}" + "".join(f"{gib(stage.total, 2):>11}" for stage in plan.stages)
                     + f"{gib(plan.peak, 2):>9}{gib(plan.host_ram, 2):>10}")
    return lines


# ------------------------------------------------------------------------------------------------
# Fitting a budget


@dataclass(frozen=True)
class MemoryFit:
    """The plan :func:`fit` picked for a budget (``plan`` None when nothing fits), and every plan it tried."""

    budget: int
    usable: int
    plan: MemoryPlan | None
    tried: tuple[MemoryPlan, ...]

    @property
    def fits(self) -> bool:
        return self.plan is not None

    def message(self, where: str = "") -> str:
        """One line: what was picked and why."""
        source = f"{gib(self.budget)} free{f' on {where}' if where else ''}"
        if self.plan is None:
            return f"memory: {source}; no plan fits"
        return f"memory: {source} -> {self.plan.summary()}"


def usable_bytes(budget: int) -> int:
    """What a plan may use of ``budget``: the rest is headroom for the caching allocator's fragmentation."""
    return budget - max(HEADROOM_MIN, int(budget * HEADROOM))


PlanFor = Callable[[str, bool], MemoryPlan]  # (offload mode, VAE tiling) -> the plan to fit


def fit(plan: PlanFor, budget: int, *, offload: str | None = None, vae_tiling: bool | None = None) -> MemoryFit:
    """The first candidate of :data:`CANDIDATES` (fastest first) whose plan fits ``budget`` bytes.

    ``plan(mode, tiling)`` gives the plan of a candidate (:func:`plans_of` for prepared requests,
    :func:`model_plans` for a model's default video); ``offload``/``vae_tiling`` given keep those fixed.
    """
    usable = usable_bytes(budget)
    tried: list[MemoryPlan] = []
    for mode, tiling in CANDIDATES:
        if (offload is not None and mode != offload) or (vae_tiling is not None and tiling != vae_tiling):
            continue
        candidate = plan(mode, tiling)
        tried.append(candidate)
        if candidate.peak <= usable:
            return MemoryFit(budget, usable, candidate, tuple(tried))
    return MemoryFit(budget, usable, None, tuple(tried))


def plans_of(prepared: Sequence[PreparedRequest], quantize: str | None = None) -> PlanFor:
    """Candidate plans for running all ``prepared`` requests on one load: the largest of their plans."""
    if not prepared:
        raise UsageError("nothing to plan: no request")

    @functools.lru_cache(maxsize=None)
    def plan(mode: str, tiling: bool) -> MemoryPlan:
        return max((plan_for(p, offload=mode, vae_tiling=tiling, quantize=quantize) for p in prepared), key=lambda p: p.peak)

    return plan


def model_plans(model: ResolvedModel, **settings: Any) -> PlanFor:
    """Candidate plans for ``model``'s default video (``settings``: more :func:`estimate` arguments)."""
    choice = model.choice

    @functools.lru_cache(maxsize=None)
    def plan(mode: str, tiling: bool) -> MemoryPlan:
        return estimate(model, offload=mode, vae_tiling=tiling, dtype=choice.dtype, device=choice.device, **settings)

    return plan


def no_fit_error(result: MemoryFit, where: str = "the GPU") -> DeviceError:
    """Exit 4 with the most frugal plan tried and what could still help."""
    smallest = min(result.tried, key=lambda p: p.peak)
    table = "\n".join(smallest.lines())
    return DeviceError(
        f"no plan fits in {gib(result.budget)} free on {where} (usable {gib(result.usable)}); the smallest:\n{table}",
        hint="use a smaller --size or fewer --frames, free GPU memory, or --memory off to try anyway",
    )


def oom_explainer(prepared: PreparedRequest, device: str | None = None) -> Callable[[str], tuple[str, str]]:
    """For an out-of-memory error in a stage: (the plan's estimate, the settings that shrink that stage)."""

    def explain(stage: str) -> tuple[str, str]:
        current = plan_for(prepared, device=device).stage(stage)
        advice = []
        if current is not None:  # the fastest setting that cuts this stage by a quarter, and the most frugal one
            smaller = [(plan, plan.stage(stage)) for plan in (plan_for(prepared, offload=mode, vae_tiling=tiling, device=device)
                                                                for mode, tiling in CANDIDATES)]
            smaller = [(plan, other) for plan, other in smaller if other is not None and other.total < 0.75 * current.total]
            picks = [smaller[0], min(smaller, key=lambda item: item[1].total)] if smaller else []
            for plan, other in picks[: 1 if len(picks) == 2 and picks[0] is picks[1] else 2]:
                advice.append(f"{plan.settings} (about {gib(other.total)})")
        estimate = (f" (the memory plan estimated {gib(current.total)} for this stage: weights {gib(current.weights)}, "
                    f"activations {gib(current.activations)})") if current is not None else ""
        tries = f"try {' or '.join(advice)}, or " if advice else "use "
        return estimate, f"{tries}a smaller --size / fewer --frames; `cogvid plan` shows every stage"

    return explain


def parse_budget(memory: str) -> int | None:
    """``--memory``: None for ``auto``/``off``, else a budget in bytes (``24``, ``24GB``, ``24GiB`` = 24 GiB)."""
    text = memory.strip().lower()
    if text in ("auto", "off"):
        return None
    for suffix in ("gib", "gb", "g"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--memory {memory!r} is not auto, off or a size", hint="e.g. --memory auto, --memory 24GB") from None
    if not value > 0 or value > 1 << 20:
        raise UsageError(f"--memory {memory!r} is out of range", hint="give the GPU memory to plan for in GiB, e.g. --memory 24GB")
    return int(value * GIB)


def settle(prepared: Sequence[PreparedRequest], free_bytes: int | None = None, *, where: str = "",
           device: str | None = None) -> tuple[list[PreparedRequest], str | None]:
    """Fill the ``auto`` offload mode and VAE tiling of prepared requests (one load runs them all).

    The budget is ``--memory``'s size, else ``free_bytes`` (the free memory of the CUDA device, None
    on a CPU run or with ``--memory off``). ``device``: the device the run resolved to (default: the
    request's, ``auto`` counting as a GPU); a CPU run has no GPU memory to fit. Settings given
    explicitly are kept. Returns the requests and a line saying what was picked (None when there
    was nothing to decide); raises DeviceError (exit 4) with the plan when nothing fits.
    """
    if not prepared:
        return [], None
    choice = prepared[0].request.model
    offload = choice.offload
    tiling = prepared[0].request.vae_tiling if all(p.request.vae_tiling == prepared[0].request.vae_tiling for p in prepared) else None
    on_gpu = plan_device(device or choice.device) == "cuda"
    budget = parse_budget(choice.memory) if on_gpu else None
    if budget is None and choice.memory == "auto" and on_gpu:
        budget = free_bytes
    note = None
    if budget is None:
        picked_offload, picked_tiling = offload or "none", tiling
    elif offload is not None and tiling is not None:
        picked_offload, picked_tiling = offload, tiling
        worst = max((plan_for(p) for p in prepared), key=lambda plan: plan.peak)
        if worst.peak > usable_bytes(budget):
            note = (f"memory: {gib(budget)} free, but {worst.settings} needs about {gib(worst.peak)} "
                    f"({worst.peak_stage.name}); running as asked")
    else:
        result = fit(plans_of(prepared), budget, offload=offload, vae_tiling=tiling)
        if result.plan is None:
            raise no_fit_error(result, where or "the GPU")
        picked_offload, picked_tiling, note = result.plan.offload, result.plan.vae_tiling, result.message(where)
    settled = [_with_settings(p, picked_offload, p.request.vae_tiling if picked_tiling is None else picked_tiling) for p in prepared]
    return settled, note


def _with_settings(prepared: PreparedRequest, offload: str, vae_tiling: bool | None) -> PreparedRequest:
    choice = prepared.request.model.replace(offload=offload)
    request = prepared.request.replace(model=choice, vae_tiling=bool(vae_tiling))
    model = dataclasses.replace(prepared.model, choice=prepared.model.choice.replace(offload=offload))
    return dataclasses.replace(prepared, request=request, model=model)


__all__ = [
    "CANDIDATES", "GIB", "OFFLOAD_MODES", "MemoryFit", "MemoryPlan", "ModelSizes", "StagePlan", "dry_run_memory", "estimate",
    "fit", "gib", "model_plans", "no_fit_error", "oom_explainer", "parse_budget", "parts_on_device", "plan_for", "plan_report",
    "plans_of", "plans_table", "settle", "usable_bytes",
]
