"""SAT checkpoint layout: read (memory-mapped, weights only), strict key checks, write.

A SAT/DeepSpeed transformer folder looks like::

    <folder>/latest                              "1000" (an iteration) or "release"
    <folder>/1000/mp_rank_00_model_states.pt     {"module": {<engine key>: tensor, ...}, ...}

Inside ``module`` the DiT keys carry the engine prefix ``model.diffusion_model.``; full-engine
(fine-tune) files also hold the T5 (``conditioner.*``) and the VAE (``first_stage_model.*``).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from cogvid.errors import CheckpointError
from cogvid.layout import LAYOUT_HINT, MODEL_STATES, resolve_checkpoint_file
from cogvid.spec import Generation

DIT_PREFIX = "model.diffusion_model."
TEXT_PREFIX = "conditioner."
VAE_PREFIX = "first_stage_model."

_SHOWN = 5  # how many key names an error lists


# --------------------------------------------------------------------------------------------
# Strict key/shape check (reused by the VAE loader)


def check_keys(
    expected: Mapping[str, tuple[int, ...] | torch.Size],
    found: Mapping[str, torch.Tensor],
    *,
    what: str,
    source: Path | str,
    optional: Iterable[str] = (),
    looks_like: str | None = None,
) -> None:
    """Raise CheckpointError unless ``found`` has exactly the ``expected`` keys with their shapes.

    ``optional`` keys may be missing from ``found`` and may also appear there without being
    expected. ``looks_like`` (e.g. "cogvideox-5b (hidden 3072, 42 layers)") is added to the
    message to tell the user what the file seems to hold instead.
    """
    optional = set(optional)
    missing = sorted(k for k in expected if k not in found and k not in optional)
    unexpected = sorted(k for k in found if k not in expected and k not in optional)
    wrong = sorted(
        (k, tuple(found[k].shape), tuple(expected[k])) for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k])
    )
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if wrong:
        shown = ", ".join(f"{k} {f} (expected {e})" for k, f, e in wrong[:_SHOWN])
        more = f", ... ({len(wrong) - _SHOWN} more)" if len(wrong) > _SHOWN else ""
        parts.append(f"{len(wrong)} tensor(s) with the wrong shape: {shown}{more}")
    message = f"{source} does not match the {what}: " + "; ".join(parts)
    if looks_like:
        message += f". The file looks like {looks_like}"
    raise CheckpointError(message, hint=f"check that the checkpoint belongs to the {what} configured for this model")


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


# --------------------------------------------------------------------------------------------
# Reading


def load_weights_file(path: Path, what: str = "checkpoint", redownload: str = "download it again") -> Any:
    """``torch.load`` of tensors only (``weights_only``; memory-mapped when the format allows).

    A file that holds pickled Python objects besides tensors is refused as such (loading it could run
    code), never with advice to load it unsafely; an unreadable file is called corrupt.
    """
    try:
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:
            raise _corrupt(path, what, e, redownload) from e
        raise CheckpointError(
            f"{what} {path} holds Python objects besides tensors ({found.group(1)}); loading it could run code, "
            "so cogvid refuses it",
            hint="use a checkpoint that stores tensors only (the released files do), from a source you trust",
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, BadZipFile, ... on bad files
        raise _corrupt(path, what, e, redownload) from e


def _corrupt(path: Path, what: str, error: Exception, redownload: str) -> CheckpointError:
    # torch's weights_only boilerplate (and its advice to load unsafely) is not the reason: drop it.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if "weights_only" not in line and not line.startswith("Check the documentation")]
    reason = reasons[0] if reasons else type(error).__name__
    return CheckpointError(
        f"cannot read {what} {path}: {reason}",
        hint=f"the file is corrupt, truncated or not a PyTorch checkpoint; {redownload}",
    )


def read_state_dict(path_or_folder: Path | str) -> dict[str, torch.Tensor]:
    """The whole ``module`` dict of a SAT checkpoint, memory-mapped (``weights_only`` load)."""
    path = resolve_checkpoint_file(path_or_folder)
    data = load_weights_file(path, redownload="download it again. " + LAYOUT_HINT)
    if not isinstance(data, dict) or not isinstance(data.get("module"), dict):
        raise CheckpointError(f"{path} has no 'module' state dict", hint=LAYOUT_HINT)
    module = data["module"]
    bad = [k for k, v in module.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: 'module' holds non-tensor entries: {_few([str(k) for k in bad])}", hint=LAYOUT_HINT)
    return module


def split_engine_state(module: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split an engine ``module`` dict into ``{"dit", "text", "vae", "other"}`` parts.

    DiT keys lose their ``model.diffusion_model.`` prefix; T5 (``conditioner.``) and VAE
    (``first_stage_model.``) keys keep theirs minus that prefix, for the engine to use.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {"dit": {}, "text": {}, "vae": {}, "other": {}}
    for key, value in module.items():
        for name, prefix in (("dit", DIT_PREFIX), ("text", TEXT_PREFIX), ("vae", VAE_PREFIX)):
            if key.startswith(prefix):
                parts[name][key[len(prefix) :]] = value
                break
        else:
            parts["other"][key] = value
    return parts


_RELEASED = {  # (generation, hidden, layers, image input) -> registry name
    (Generation.V1_0, 1920, 30, False): "cogvideox-2b",
    (Generation.V1_0, 3072, 42, False): "cogvideox-5b",
    (Generation.V1_0, 3072, 42, True): "cogvideox-5b-i2v",
    (Generation.V1_5, 3072, 42, False): "cogvideox1.5-5b",
    (Generation.V1_5, 3072, 42, True): "cogvideox1.5-5b-i2v",
}


def _released_name(generation: Generation, hidden: int, layers: int, image_input: bool) -> str | None:
    return _RELEASED.get((generation, hidden, layers, image_input))


def released_dit_name(state: Mapping[str, torch.Tensor]) -> str | None:
    """The registry name of the released DiT a DiT state dict has the sizes of (None: no released size)."""
    text = describe_dit_state(state)
    name = text.split(" ", 1)[0]
    return name if name in _RELEASED.values() else None


def describe_dit_state(state: Mapping[str, torch.Tensor]) -> str:
    """A short description of which released DiT a DiT state dict (no prefix) resembles."""
    qkv = state.get("transformer.layers.0.attention.query_key_value.weight")
    if qkv is None:
        qkv = state.get("transformer.layers.0.attention.query_key_value.original.weight")
    patch = state.get("mixins.patch_embed.proj.weight")
    if qkv is None or patch is None:
        return "no CogVideoX DiT (no layer 0 attention or patch embedding)"
    hidden = int(qkv.shape[1])
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.layers.")})
    if patch.dim() == 4:  # 1.0 Conv2d (H, C_in, p, p)
        in_channels, generation = int(patch.shape[1]), Generation.V1_0
    else:  # 1.5 Linear (H, C_in * pt * p * p)
        in_channels, generation = int(patch.shape[1]) // 8, Generation.V1_5
    has_ofs = "ofs_embed.0.weight" in state
    lora = any(".matrix_A." in k for k in state)
    final = state.get("mixins.final_layer.linear.weight")
    patch_inputs = int(patch[0].numel())  # C_in * p * p (1.0) or C_in * pt * p * p (1.5)
    # I2V DiTs take twice the channels they predict (noise + image latents).
    image_input = has_ofs or (final is not None and patch_inputs > int(final.shape[0]))
    name = _released_name(generation, hidden, layers, image_input)
    if name is None:
        kind = "image-to-video" if image_input else "text-to-video"
        name = f"a CogVideoX {generation}-style {kind} DiT of no released size"
    details = f"hidden size {hidden}, {layers} layers, in-channels {in_channels}, patch weight {tuple(patch.shape)}"
    details += ", ofs embedding" if has_ofs else ""
    details += ", LoRA" if lora else ""
    return f"{name} ({details})"


# --------------------------------------------------------------------------------------------
# Writing


def save_checkpoint(folder: Path | str, module_state: Mapping[str, torch.Tensor], iteration: int = 1000) -> Path:
    """Write ``{"module": module_state}`` in the SAT layout; returns the ``.pt`` path.

    The folder is assembled under a temporary name beside it and renamed when complete; an
    existing folder is never overwritten (CheckpointError). Keys are written as given (pass
    engine keys, e.g. ``model.diffusion_model.<DiT key>``, for a file the original can load).
    """
    folder = Path(folder).expanduser()
    if iteration <= 0:
        raise CheckpointError(f"iteration must be positive, got {iteration}")
    if folder.exists():
        raise CheckpointError(f"{folder} already exists; not overwriting it", hint="choose a new folder or remove the old one")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        (tmp / str(iteration)).mkdir()
        state = {k: v.detach().contiguous() for k, v in module_state.items()}
        torch.save({"module": state}, tmp / str(iteration) / MODEL_STATES)
        (tmp / "latest").write_text(f"{iteration}\n", encoding="utf-8")
        os.rename(tmp, folder)  # atomic on one file system; fails if folder appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / str(iteration) / MODEL_STATES
