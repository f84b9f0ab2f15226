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
    """Every parameter and buffer of ``module`` as (owner, name, is_parameter), each owner-slot once."""
    entries = []
    for owner in module.modules():
        if skip is not None and id(owner) in skip:
            continue
        entries += [(owner, name, True) for name, value in owner._parameters.items() if value is not None]
        entries += [(owner, name, False) for name, value in owner._buffers.items() if value is not None]
    return entries


def _set(owner: nn.Module, name: str, is_parameter: bool, tensor: torch.Tensor) -> None:
    if is_parameter:
        owner._parameters[name] = nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[name] = tensor


class HostCopy:
    """The host copy of some tensors of a model and the moves between host and device.

    ``pin`` keeps the host copy in page-locked memory (CUDA only), which lets :meth:`to_device` copy
    asynchronously. Created resident; call :meth:`to_host` to free the device.
    """

    def __init__(self, entries: Sequence[Entry], device: torch.device, pin: bool = False) -> None:
        self.device = device
        self.entries = list(entries)
        self.host: list[torch.Tensor] = []
        for owner, name, is_parameter in self.entries:
            tensor = getattr(owner, name).detach()
            host = tensor if tensor.device.type == "cpu" else tensor.to("cpu")
            if pin and not host.is_pinned():
                try:
                    host = host.pin_memory()
                except RuntimeError:  # no pinnable memory left: pageable memory works, only slower
                    pin = False
            self.host.append(host)
        self.on_device = all(getattr(owner, name).device == device for owner, name, _ in self.entries)
        self.nbytes = sum(t.numel() * t.element_size() for t in self.host)

    def to_device(self, non_blocking: bool = False) -> None:
        """Copy the host tensors to the device (no-op when already there)."""
        if self.on_device:
            return
        for (owner, name, is_parameter), host in zip(self.entries, self.host):
            _set(owner, name, is_parameter, host.to(self.device, non_blocking=non_blocking))
        self.on_device = True

    def to_host(self, keep_alive_on: torch.cuda.Stream | None = None) -> None:
        """Drop the device copies (placeholders on ``meta`` take their place).

        ``keep_alive_on``: a stream still using them (their memory is reused only after its queued work).
        """
        if not self.on_device:
            return
        for owner, name, is_parameter in self.entries:
            current = getattr(owner, name)
            if keep_alive_on is not None and current.device.type == "cuda":
                current.record_stream(keep_alive_on)
            _set(owner, name, is_parameter, torch.empty(current.shape, dtype=current.dtype, device="meta"))
        self.on_device = False


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
    """Runs the DiT with its layers on the device one at a time (``blocks`` offload).

    Before layer ``i`` runs it is on the device (copied then, or prefetched while layer ``i - 1``
    ran) and layer ``i + 1`` starts copying on a side CUDA stream; after it, layer ``i`` leaves.
    At most two layers are on the device. On a CPU the same moves happen without a stream.
    ``log`` (for tests) receives ("in"|"out", layer) for every move.
    """

    def __init__(self, network: nn.Module, device: torch.device, pin: bool, log: Callable[[str, int], None] | None = None) -> None:
        blocks, _ = dit_blocks(network)
        self.device = device
        self.copies = [HostCopy(entries, device, pin=pin) for entries in blocks]
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.ready: dict[int, Any] = {}
        self.log = log
        for copy in self.copies:
            copy.to_host()
        hooks = network.hooks  # SAT's model-level hooks, copied into the transformer at every forward
        inner = hooks["layer_forward"]

        def layer_forward(*args: Any, layer_id: Any, **kwargs: Any) -> Any:
            index = int(layer_id)
            self.before(index)
            try:
                return inner(*args, layer_id=layer_id, **kwargs)
            finally:
                self.after(index)

        hooks["layer_forward"] = layer_forward
        network.register_forward_pre_hook(lambda module, args: self.before(0, prefetch=False))

    def _move_in(self, index: int, non_blocking: bool) -> None:
        if not self.copies[index].on_device and self.log is not None:
            self.log("in", index)
        self.copies[index].to_device(non_blocking=non_blocking)

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


class Placement:
    """Moves the parts of an engine between host and device as the stages of a video go by.

    ``copies`` maps part names (``t5``, ``dit``, ``vae``) to the :class:`HostCopy` of each part that
    the mode moves; parts not in it stay where they were loaded. ``streamer`` runs the DiT's layers
    in the ``blocks`` mode. ``log`` (for tests) receives (stage, parts on the device) at each stage.
    """

    def __init__(self, mode: str, copies: dict[str, HostCopy] | None = None, streamer: BlockStreamer | None = None) -> None:
        self.mode = mode
        self.copies = copies or {}
        self.streamer = streamer
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
    only while used. ``blocks``: as ``model``, with the DiT's shared weights on the device for good
    and its layers streamed.
    """
    device = engine.device
    pin = device.type == "cuda" if pin is None else pin
    if mode == "none":
        return Placement(mode)
    t5_modules = [embedder.transformer for embedder in engine.conditioner.embedders if getattr(embedder, "transformer", None) is not None]
    copies = {"t5": HostCopy([e for module in t5_modules for e in tensor_entries(module)], device, pin=pin)}
    copies["t5"].to_host()
    for embedder in engine.conditioner.embedders:  # T5 encodes on the device; its weights come and go
        embedder._buffers["_anchor"] = embedder._anchor.to(device)
    streamer = None
    if mode == "text":
        engine.network.to(device)
        engine.first_stage.to(device)
    else:
        copies["vae"] = HostCopy(tensor_entries(engine.first_stage), device, pin=pin)
        copies["vae"].to_host()
        if mode == "model":
            copies["dit"] = HostCopy(tensor_entries(engine.network), device, pin=pin)
            copies["dit"].to_host()
        else:
            _, shared = dit_blocks(engine.network)
            HostCopy(shared, device).to_device()
            streamer = BlockStreamer(engine.network, device, pin=pin)
    return Placement(mode, copies, streamer)


@contextlib.contextmanager
def out_of_memory(stage: str, device: torch.device, explain: Callable[[str], tuple[str, str]] | None = None) -> Iterator[None]:
    """Turn a CUDA out-of-memory error during ``stage`` into DeviceError (exit 4) saying what to try.

    ``explain(stage)`` gives (what the plan estimated, what to try) when a memory plan is at hand.
    """
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        estimate, hint = explain(stage) if explain is not None else ("", "use --offload model or --offload blocks, --vae-tiling, or a smaller --size / fewer --frames")
        raise DeviceError(f"out of memory on {device} while {_STAGE_WORDS.get(stage, stage)}{estimate}", hint=hint) from e


_STAGE_WORDS = {"loading": "loading the model", "text": "encoding the prompt", "image": "encoding the image",
                "denoising": "denoising", "decoding": "decoding the video"}
