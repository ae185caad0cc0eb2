"""Models: the wrapper (normalisation in, logits at the input size out), the DeepLabV3 backbones
and their weight sources, checkpoints, and any model named by a spec (``torchvision:``, ``hf:``,
``smp:``, ``module:``)."""

from segattack.models.backbones import BACKBONES, UNVERIFIED_SOURCE, WEIGHT_SOURCES, build_network, resolve_weights
from segattack.models.loader import load_model
from segattack.models.wrapper import (
    SegmentationModel,
    WeightsInfo,
    WeightsUnavailable,
    fold_batchnorm,
    parse_window,
    window_boxes,
    wrap_model,
)

__all__ = [
    "BACKBONES",
    "UNVERIFIED_SOURCE",
    "WEIGHT_SOURCES",
    "SegmentationModel",
    "WeightsInfo",
    "WeightsUnavailable",
    "build_network",
    "fold_batchnorm",
    "load_model",
    "parse_window",
    "resolve_weights",
    "window_boxes",
    "wrap_model",
]
