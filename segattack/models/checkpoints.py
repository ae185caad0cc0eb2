"""Checkpoint files: safe loading (``weights_only=True``) and compact weight-only int8 storage.

A segattack checkpoint is a plain dict of tensors, strings and numbers, so it loads without
unpickling arbitrary objects::

    {"format": "segattack-checkpoint", "version": 1, "backbone": str, "meta": dict,
     "state": {name: tensor}, "int8": {name: {"q": int8 tensor, "scale": float32 tensor}}}

Float tensors of at least 2 dims and 4096 elements (convolution weights) may be stored as int8
with one symmetric scale per output channel; everything else stays as saved.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

FORMAT = "segattack-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, unsafe or does not fit the model."""


def quantize_int8(tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-output-channel symmetric int8: ``tensor ~= q * scale``."""
    flat = tensor.detach().float().reshape(tensor.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return {"q": q.reshape(tensor.shape), "scale": scale}


def dequantize_int8(entry: dict[str, torch.Tensor]) -> torch.Tensor:
    q, scale = entry["q"], entry["scale"]
    return (q.float().reshape(q.shape[0], -1) * scale[:, None]).reshape(q.shape)


def pack(state: dict[str, torch.Tensor], backbone: str, meta: dict[str, Any], int8: bool = False) -> dict[str, Any]:
    """Build a checkpoint dict from a state dict (optionally int8-compressing the large weights)."""
    plain: dict[str, torch.Tensor] = {}
    quant: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        if int8 and tensor.is_floating_point() and tensor.dim() >= 2 and tensor.numel() >= 4096:
            quant[name] = quantize_int8(tensor)
        else:
            plain[name] = tensor.detach().cpu().clone()
    return {"format": FORMAT, "version": VERSION, "backbone": backbone, "meta": meta, "state": plain, "int8": quant}


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file safely and return ``{"backbone", "meta", "state"}`` (state in float32).

    Accepts segattack checkpoints and plain state dicts (torchvision's ``.pth`` files).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the object "Unsupported global: GLOBAL x.y" (2.6) or "unsupported GLOBAL x.y" (2.14)
        found = re.search(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", str(exc), re.IGNORECASE)
        if found is None:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {str(exc).splitlines()[-1]}") from None
        raise CheckpointError(
            f"refused to load {path}: it holds a pickled object ({found[1]}), not only tensors and plain "
            f"containers, and weights_only=True never runs such code; save the weights alone "
            f"(torch.save(model.state_dict(), PATH)) or use a file from a source you trust to do so"
        ) from None
    except Exception as exc:  # truncated zip, random bytes, ...
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {exc}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    try:
        if obj.get("format") == FORMAT:
            return read_packed(obj)
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return {"backbone": None, "meta": {}, "state": check_state(obj)}
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    raise CheckpointError(f"{path} is neither a segattack checkpoint nor a plain state dict")


def check_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Refuse entries no DeepLabV3 state holds: weights must be real floating point, counters integers."""
    for name, tensor in state.items():
        counter = name.endswith("num_batches_tracked")
        ok = tensor.dtype in (torch.int64, torch.int32) if counter else (tensor.is_floating_point())
        if not ok:
            raise CheckpointError(
                f"entry {name!r} has dtype {str(tensor.dtype).replace('torch.', '')}; "
                f"expected {'an integer counter' if counter else 'floating point weights'}"
            )
    return state


def read_packed(obj: dict[str, Any]) -> dict[str, Any]:
    """Unpack a checkpoint dict built by :func:`pack` into float32 state, checking its structure."""
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"segattack checkpoint format version {obj.get('version')!r} is not supported "
            f"(this segattack reads version {VERSION})"
        )
    for key, kind in (("state", dict), ("int8", dict), ("meta", dict), ("backbone", (str, type(None)))):
        if key not in obj or not isinstance(obj[key], kind):
            raise CheckpointError(f"segattack checkpoint without a valid {key!r} entry")
    state = dict(check_state(obj["state"]))
    for name, entry in obj["int8"].items():
        q, scale = (entry.get("q"), entry.get("scale")) if isinstance(entry, dict) else (None, None)
        if not (
            isinstance(q, torch.Tensor)
            and isinstance(scale, torch.Tensor)
            and q.dtype == torch.int8
            and scale.dtype == torch.float32
            and q.dim() >= 1
            and scale.shape == (q.shape[0],)
        ):
            raise CheckpointError(
                f"int8 entry {name!r} needs an int8 'q' tensor and a float32 'scale' per output channel"
            )
        state[name] = dequantize_int8(entry)
    return {"backbone": obj["backbone"], "meta": dict(obj["meta"]), "state": state}
