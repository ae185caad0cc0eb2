"""Per-process caches: loaded models, clean predictions, and which input shapes are warmed up.

Every shard and studies cell a worker runs reuses them, so no model is loaded twice and no clean
forward pass is repeated within a process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any, NamedTuple

import torch

from segattack.attacks import AttackSpec
from segattack.data.sets import Resize, image_set
from segattack.metrics import predict_classes
from segattack.models.loader import load_model
from segattack.models.wrapper import SegmentationModel
from segattack.study.config import PROBE_STEPS, ModelKey
from segattack.study.numerics import DEFAULT_NUMERICS, Numerics, jittered, numerics


class ImageSetKey(NamedTuple):
    """What identifies a set of input tensors: the image set's source, side, resize protocol and seed,
    and the input jitter of a stability repeat (0: none)."""

    source: str
    size: int
    resize: Resize
    seed: int
    jitter: int = 0


MODELS_KEPT = 4  # loaded models a process keeps (the least recently used goes first)
_MODELS: OrderedDict[ModelKey, SegmentationModel] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def cached_model(key: ModelKey) -> SegmentationModel:
    """A loaded model, kept per process and loaded once: a Dask worker runs its tasks in threads,
    and two tasks of one model asking at once would load it twice, importing transformers' lazy
    modules from two threads at once (which is not thread-safe). Loads hold one lock."""
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        model = load_model(
            key.backbone,
            key.weights,
            device=key.device,
            channels_last=key.channels_last,
            fold_bn=key.fold_bn,
            window=key.window,
        )
        _MODELS[key] = model
        while len(_MODELS) > MODELS_KEPT:
            _MODELS.popitem(last=False)
        return model


def clear_models() -> None:
    """Forget every loaded model of this process (tests that swap weights files)."""
    with _MODELS_LOCK:
        _MODELS.clear()


@lru_cache(maxsize=256)
def clean_prediction(
    model: ModelKey, images: ImageSetKey, index: int, settings: Numerics = DEFAULT_NUMERICS
) -> torch.Tensor:
    """The clean prediction (H,W) of image ``index`` of ``images`` by ``model`` under ``settings``,
    made alone so that it is the same bits in every shard and cell that needs it."""
    x = image_set(images.source, images.size, images.resize, images.seed).load([index]).images[0]
    x = jittered(x, images.jitter, index)
    net = cached_model(model)  # loaded outside inference mode: the attacks differentiate through it
    with numerics(settings), torch.inference_mode():
        return predict_classes(net(x[None].to(model.device)))[0].to(torch.uint8)


_WARM: set[tuple[int, tuple[int, ...], bool]] = set()  # (model, input shape, autocast) this process has run


def warm_up(
    model: SegmentationModel, attack: AttackSpec, images: torch.Tensor, targets: torch.Tensor, params: dict[str, Any]
) -> None:
    """Untimed iterations (:data:`~segattack.config.PROBE_STEPS`, the fewest every attack takes) the
    first time this process runs ``model`` on this input shape: the first calls on a shape pay one-off
    kernel set-up (seconds on a CPU) that would otherwise be timed as attack iterations. It draws
    from a generator of its own, never the run's."""
    key = (id(model), tuple(images.shape), torch.is_autocast_enabled(images.device.type))
    if key not in _WARM:
        own = {**params, "generator": torch.Generator()} if "generator" in params else params
        attack(model, images, targets, **{**own, "steps": PROBE_STEPS})
        _WARM.add(key)
