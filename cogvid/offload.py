"""Where the parts of a loaded model live during each stage: the offload modes of :mod:`cogvid.memory_plan`.

A part that is offloaded keeps its weights on the host (pinned when the device is CUDA, so copies to
the device are asynchronous); while it is away from the device its parameters and buffers are
placeholders on the ``meta`` device, so its memory is free and any accidental use fails loudly.
Moving a part to the device copies the host tensors there; moving it away drops the device copies
(nothing is copied back: weights do not change at inference).

* :class:`HostCopy`: the host weights of a set of tensors and the two moves.
* :class:`BlockStreamer`: the ``blocks`` mode: the DiT's layers on the device one (plus the next,
  prefetched on a side CUDA stream) at a time.
* :class:`Placement`: which part is on the device in each stage, following
  :func:`cogvid.memory_plan.parts_on_device` (the same table the plan uses).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from cogvid.errors import DeviceError
from cogvid.memory_plan import parts_on_device

Entry = tuple[nn.Module, str, bool]  # (owner module, attribute name, is a parameter)


def tensor_entries(module: nn.Module, skip: set[int] | None = None) -> list[Entry]:
    """Every parameter and buffer slot of ``module`` as (owner, name, is_parameter); a tensor held by two
    slots (tied weights, e.g. T5's embedding) appears twice. Owners whose id is in ``skip`` are left out."""
    entries = []
    for owner in module.modules():
        if skip is not None and id(owner) in skip:
            continue
        entries += [(owner, name, True) for name, value in owner._parameters.items() if value is not None]
        entries += [(owner, name, False) for name, value in owner._buffers.items() if value is not None]
    return entries


class HostCopy:
    """The host copy of some tensors of a model and the moves between host and device.

    Slots that hold one tensor (tied weights) share one host copy and one device copy. ``pin`` keeps the
    host copy in page-locked memory (CUDA only), which lets :meth:`to_device` copy asynchronously.
    Created as the tensors are; call :meth:`to_host` to free the device.
    """

    def __init__(self, entries: Sequence[Entry], device: torch.device, pin: bool = False) -> None:
        self.device = device
        groups: dict[int, list[Entry]] = {}
        tensors: dict[int, torch.Tensor] = {}
        for owner, name, is_parameter in entries:
            tensor = getattr(owner, name)
            groups.setdefault(id(tensor), []).append((owner, name, is_parameter))
            tensors[id(tensor)] = tensor
        self.slots: list[tuple[list[Entry], torch.Tensor]] = []
        for key, slots in groups.items():
            host = tensors[key].detach()
            host = host if host.device.type == "cpu" else host.to("cpu")
            if pin and not host.is_pinned():
                try:
                    host = host.pin_memory()
                except RuntimeError:  # no pinnable memory left: pageable memory works, only slower
                    pin = False
            self.slots.append((slots, host))
        self.on_device = all(tensors[key].device == device for key in groups)
        self.nbytes = sum(host.numel() * host.element_size() for _, host in self.slots)

    def to_device(self, non_blocking: bool = False) -> None:
        """Copy the host tensors to the device (no-op when already there)."""
        if self.on_device:
            return
        for slots, host in self.slots:
            self._set(slots, host.to(self.device, non_blocking=non_blocking))
        self.on_device = True

    def to_host(self, keep_alive_on: torch.cuda.Stream | None = None) -> None:
        """Drop the device copies (placeholders on ``meta`` take their place).

        ``keep_alive_on``: a stream still using them (their memory is reused only after its queued work).
        """
        if not self.on_device:
            return
        for slots, _ in self.slots:
            owner, name, _ = slots[0]
            current = getattr(owner, name)
            if keep_alive_on is not None and current.device.type == "cuda":
                current.record_stream(keep_alive_on)
            self._set(slots, torch.empty(current.shape, dtype=current.dtype, device="meta"))
        self.on_device = False

    @staticmethod
    def _set(slots: list[Entry], tensor: torch.Tensor) -> None:
        parameter = nn.Parameter(tensor, requires_grad=False) if any(is_param for _, _, is_param in slots) else None
        for owner, name, is_parameter in slots:
            if is_parameter:
                owner._parameters[name] = parameter
            else:
                owner._buffers[name] = tensor


def dit_blocks(network: nn.Module) -> tuple[list[list[Entry]], list[Entry]]:
    """The DiT's tensors per layer (the transformer layer plus its items of every per-layer module list,
    e.g. AdaLN modulations and q/k norms) and the shared rest."""
    layers = network.transformer.layers
    count = len(layers)
    per_layer: list[list[nn.Module]] = [[layer] for layer in layers]
    for module in network.modules():
        if isinstance(module, nn.ModuleList) and module is not layers and len(module) == count:
            for index, item in enumerate(module):
                per_layer[index].append(item)
    blocks, owners = [], set()
    for modules in per_layer:
        entries = [entry for module in modules for entry in tensor_entries(module)]
        blocks.append(entries)
        owners.update(id(owner) for owner, _, _ in entries)
    shared = tensor_entries(network, skip=owners)
    return blocks, shared


class BlockStreamer:
    """Runs a stack of layers with one layer (plus the next, prefetched) on the device at a time.

    Before layer ``i`` runs it is on the device (copied then, or prefetched on a side CUDA stream while
    layer ``i - 1`` ran) and layer ``i + 1`` starts copying; after it, layer ``i`` leaves. At most two
    layers are on the device. On a CPU the same moves happen without a stream. ``log`` (for tests)
    receives ("in"|"out", layer) for every move. :func:`stream_dit` and :func:`stream_t5` attach one.
    """

    def __init__(self, blocks: Sequence[Sequence[Entry]], device: torch.device, pin: bool) -> None:
        self.device = device
        self.copies = [HostCopy(entries, device, pin=pin) for entries in blocks]
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.ready: dict[int, Any] = {}
        self.log: Callable[[str, int], None] | None = None
        for copy in self.copies:
            copy.to_host()

    def _move_in(self, index: int, non_blocking: bool) -> None:
        arriving = not self.copies[index].on_device
        self.copies[index].to_device(non_blocking=non_blocking)
        if arriving and self.log is not None:
            self.log("in", index)

    def before(self, index: int, prefetch: bool = True) -> None:
        """Layer ``index`` on the device now; the next one on its way."""
        if index in self.ready:
            torch.cuda.current_stream(self.device).wait_event(self.ready.pop(index))
        else:
            self._move_in(index, non_blocking=False)
        following = index + 1
        if prefetch and following < len(self.copies) and not self.copies[following].on_device:
            if self.stream is None:
                self._move_in(following, non_blocking=False)
            else:
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self.stream):
                    self._move_in(following, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record(self.stream)
                self.ready[following] = event

    def after(self, index: int) -> None:
        """Layer ``index`` leaves the device (once the work queued on it is done)."""
        if self.log is not None and self.copies[index].on_device:
            self.log("out", index)
        self.copies[index].to_host(keep_alive_on=torch.cuda.current_stream(self.device) if self.stream is not None else None)

    def on_device(self) -> list[int]:
        return [index for index, copy in enumerate(self.copies) if copy.on_device]


def stream_dit(network: nn.Module, device: torch.device, pin: bool) -> BlockStreamer:
    """Stream the DiT's layers (:func:`dit_blocks`) through SAT's ``layer_forward`` hook; the shared rest
    is left where it is."""
    blocks, _ = dit_blocks(network)
    streamer = BlockStreamer(blocks, device, pin)
    hooks = network.hooks  # SAT's model-level hooks, copied into the transformer at every forward
    inner = hooks["layer_forward"]

    def layer_forward(*args: Any, layer_id: Any, **kwargs: Any) -> Any:
        index = int(layer_id)
        streamer.before(index)
        try:
            return inner(*args, layer_id=layer_id, **kwargs)
        finally:
            streamer.after(index)

    hooks["layer_forward"] = layer_forward
    network.register_forward_pre_hook(lambda module, args: streamer.before(0, prefetch=False))
    return streamer


def stream_t5(model: nn.Module, device: torch.device, pin: bool) -> tuple[BlockStreamer, list[Entry]]:
    """Stream a T5 encoder's blocks with forward hooks; returns the streamer and the shared tensors
    (embedding, final norm) for the caller to place."""
    layers = model.encoder.block
    blocks = [tensor_entries(layer) for layer in layers]
    owners = {id(owner) for entries in blocks for owner, _, _ in entries}
    streamer = BlockStreamer(blocks, device, pin)
    for index, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda module, args, index=index: streamer.before(index))
        layer.register_forward_hook(lambda module, args, output, index=index: streamer.after(index))
    model.register_forward_pre_hook(lambda module, args: streamer.before(0, prefetch=False))
    return streamer, tensor_entries(model, skip=owners)


class Placement:
    """Moves the parts of an engine between host and device as the stages of a video go by.

    ``copies`` maps part names of :func:`cogvid.memory_plan.parts_on_device` (``t5``, ``dit``, ``vae``,
    ``t5 (shared)``) to the :class:`HostCopy` of each part that the mode moves; parts not in it stay
    where they were loaded. ``streamers`` run the layers of the DiT and T5 (``dit``, ``t5``) in the
    ``blocks`` mode. ``log`` (for tests) receives (stage, parts on the device) at each stage.
    """

    def __init__(self, mode: str, copies: dict[str, HostCopy] | None = None, streamers: dict[str, BlockStreamer] | None = None) -> None:
        self.mode = mode
        self.copies = copies or {}
        self.streamers = streamers or {}
        self.log: Callable[[str, dict[str, bool]], None] | None = None

    def enter(self, stage: str) -> None:
        """Before ``stage`` runs: parts it does not use leave the device first, then the ones it uses arrive."""
        wanted = parts_on_device(self.mode, stage)
        for name, copy in self.copies.items():
            if name not in wanted:
                copy.to_host()
        for name, copy in self.copies.items():
            if name in wanted:
                copy.to_device()
        if self.log is not None:
            self.log(stage, self.where())

    def where(self) -> dict[str, bool]:
        """Which moved parts are on the device now."""
        return {name: copy.on_device for name, copy in self.copies.items()}


def place(engine: Any, mode: str, *, pin: bool | None = None) -> Placement:
    """Set up ``mode`` on a loaded engine whose parts are on the host (or all on the device for ``none``).

    ``text``: the DiT and VAE go to the device for good, T5 only while encoding. ``model``: every part
    only while used. ``blocks``: as ``model``, with the layers of the DiT and of T5 streamed; the DiT's
    shared weights stay on the device, T5's come for the encoding.
    """
    device = engine.device
    pin = device.type == "cuda" if pin is None else pin
    if mode == "none":
        return Placement(mode)
    embedders = engine.conditioner.embedders if engine.conditioner is not None else []  # no T5: a non-lead --parallel rank
    t5_models = [embedder.transformer for embedder in embedders if getattr(embedder, "transformer", None) is not None]
    for embedder in embedders:  # T5 encodes on the device; its weights come and go
        embedder._buffers["_anchor"] = embedder._anchor.to(device)
    copies: dict[str, HostCopy] = {}
    streamers: dict[str, BlockStreamer] = {}
    if mode == "blocks":
        shared = []
        for model in t5_models:
            streamers["t5"], entries = stream_t5(model, device, pin)
            shared += entries
        copies["t5 (shared)"] = HostCopy(shared, device, pin=pin)
    else:
        copies["t5"] = HostCopy([e for model in t5_models for e in tensor_entries(model)], device, pin=pin)
    if mode == "text":
        engine.network.to(device)
        engine.first_stage.to(device)
    else:
        copies["vae"] = HostCopy(tensor_entries(engine.first_stage), device, pin=pin)
        if mode == "model":
            copies["dit"] = HostCopy(tensor_entries(engine.network), device, pin=pin)
        else:
            _, shared = dit_blocks(engine.network)
            HostCopy(shared, device).to_device()
            streamers["dit"] = stream_dit(engine.network, device, pin)
    for copy in copies.values():
        copy.to_host()
    return Placement(mode, copies, streamers)


@contextlib.contextmanager
def out_of_memory(stage: str, device: torch.device, explain: Callable[[str], tuple[str, str]] | None = None) -> Iterator[None]:
    """Turn a CUDA out-of-memory error during ``stage`` into DeviceError (exit 4) saying what to try.

    ``explain(stage)`` gives (what the plan estimated, what to try) when a memory plan is at hand.
    """
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        default = "use --offload model or --offload blocks, --vae-tiling, or a smaller --size / fewer --frames"
        estimate, hint = explain(stage) if explain is not None else ("", default)
        raise DeviceError(f"out of memory on {device} while {_STAGE_WORDS.get(stage, stage)}{estimate}", hint=hint) from e


_STAGE_WORDS = {"loading": "loading the model", "text": "encoding the prompt", "image": "encoding the image",
                "denoising": "denoising", "decoding": "decoding the video"}
