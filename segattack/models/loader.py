"""One way to load any model: a study backbone by name or a model spec (``torchvision:``, ``hf:``,
``smp:``, ``module:``).
"""

from __future__ import annotations

import os

import torch

from segattack.models.backbones import BACKBONES, _load_backbone
from segattack.models.specs import load_spec
from segattack.models.wrapper import SegmentationModel, Window, parse_window


@torch.inference_mode(False)  # tensors made under inference mode could never be differentiated through
def load_model(
    backbone: str,
    weights: str | os.PathLike = "auto",
    device: str | torch.device = "cpu",
    download: bool = True,
    channels_last: bool = True,
    fold_bn: bool = True,
    window: str | Window | None = None,
) -> SegmentationModel:
    """Load a model ready for attacks: eval mode, frozen parameters, logits at the input size.

    ``backbone`` is one of the study's DeepLabV3 backbones (:data:`BACKBONES`) or a model spec
    (``torchvision:NAME``, ``hf:REPO_OR_DIR``, ``smp:ARCH:ENCODER[:CHECKPOINT]``,
    ``module:PKG.MOD:CALLABLE``; :func:`segattack.models.specs.load_spec`). For a backbone, ``weights`` is
    ``"auto"``, ``"torchvision"``, ``"embedded"`` or a checkpoint path. The torchvision source
    fetches its file into the cache when it is missing (``download=False`` forbids that); ``"auto"``
    never downloads: it takes torchvision's weights only when cached. ``channels_last`` (NHWC
    layout) and ``fold_bn`` (batch norms folded into the convolutions) keep the numbers up to float
    rounding and make attack iterations faster (``benchmarks/``); for a spec's network, whose
    module order is not known, the folding is kept only where a probe pass gives the same logits.
    ``window`` (``"H"`` or ``"HxW"``) makes the model infer by sliding windows
    (:func:`~segattack.models.wrapper.window_boxes`), as Cityscapes' reference evaluation does; by
    default it sees the whole image.
    """
    sliding = parse_window(window)  # checked before anything is loaded
    if backbone not in BACKBONES:
        model = load_spec(
            backbone, weights, device=device, download=download, channels_last=channels_last, fold_bn=fold_bn
        )
    else:
        model = _load_backbone(backbone, weights, device, download, channels_last, fold_bn)
    model.window = sliding
    return model
