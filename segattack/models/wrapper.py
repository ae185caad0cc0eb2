"""The model wrapper: images in [0,1] (B,3,H,W) in, logits (B,C,H,W) at the input size out.

Normalisation lives here, so every attack works in [0,1] pixel space; logits are upsampled to the
input size here too, so every loss and metric sees one logit per input pixel. Also what a loaded
network records of its weights (:class:`WeightsInfo`), BN folding and sliding-window inference.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from segattack.data.sets import MIN_SIDE
from segattack.metrics import IMAGENET_MEAN, IMAGENET_STD


class WeightsUnavailable(RuntimeError):
    """The requested weights are neither on disk nor downloadable."""


@dataclass
class WeightsInfo:
    """Which weights produced a result: printed in every results file, table and figure."""

    source: str
    backbone: str
    description: str
    clean_miou: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        return weights_label(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def weights_label(info: dict[str, Any]) -> str:
    """'backbone / source weights, held-out mIoU x' for titles, from a WeightsInfo dict."""
    miou = info.get("clean_miou")
    scope = "held-out" if info.get("source") != "torchvision" else "COCO val2017"
    return f"{info['backbone']} / {info['source']} weights" + (f", {scope} mIoU {miou:.3f}" if miou is not None else "")


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d into the Conv2d registered just before it, in place; returns ``net``.

    At inference a convolution and its batch norm are one affine map: merged, they save a pass
    over every activation in the forward and in the backward (7-10% of a DeepLabV3 forward+backward
    on CPU), with the same outputs up to float rounding. It relies on siblings being registered in
    the order they are called, as in torchvision's DeepLabV3 (Sequential blocks, ResNet's
    ``conv1``/``bn1`` pairs); check a forward pass before using it on other modules.
    """
    if net.training:
        raise ValueError("fold_batchnorm needs an eval-mode module: training batch norm uses batch statistics")
    for parent in list(net.modules()):
        names = list(parent._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = parent._modules[first], parent._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and type(bn) is nn.BatchNorm2d
                and bn.track_running_stats
                and bn.num_features == conv.out_channels
            ):
                parent._modules[first] = fuse_conv_bn_eval(conv, bn)
                parent._modules[second] = nn.Identity()
    return net


class SegmentationModel(nn.Module):
    """Wrapper: normalises [0,1] images, runs the network, returns the ``'out'`` logits at the input size.

    Logits at another resolution (SegFormer's 1/4, a mask classifier's masks) are upsampled
    bilinearly (``align_corners=False``, as torchvision's heads and SegFormer's post-processing do)
    inside ``forward``, so every loss and metric reads one logit per input pixel.

    The network is used as it is: its mode and ``requires_grad`` flags are left alone (the wrapper
    reports the network's mode as its own), since the attacks run it in eval mode with frozen
    parameters and put everything back (``segattack.attacks._common.attack_mode``); a network
    :func:`load_model` builds is frozen in eval mode there. ``channels_last`` runs the network in
    NHWC layout (oneDNN on CPU, tensor cores on GPU); ``fold_bn`` puts it in eval mode and folds
    its batch norms into the convolutions (:func:`fold_batchnorm`). Both change ``net`` in place,
    keep the numbers up to float rounding and make an attack iteration cheaper. A module that
    holds a SegmentationModel is refused: its images would be normalised twice.
    """

    mean: torch.Tensor  # (1,C,1,1) buffers: the normalisation the wrapper applies
    std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        info: WeightsInfo | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        channels_last: bool = False,
        fold_bn: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"the model must be a torch.nn.Module, got {type(net).__name__}")
        inner = next((name for name, m in net.named_modules() if isinstance(m, SegmentationModel)), None)
        if inner is not None:
            where = "the model is" if inner == "" else f"the model's submodule {inner!r} is"
            raise ValueError(
                f"{where} already a SegmentationModel (from load_model or wrap_model), which normalises "
                f"its input: wrapping it would normalise twice; pass it to the attacks as it is, or "
                f"wrap its .net"
            )
        net = fold_batchnorm(net.eval()) if fold_bn else net
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.channels_last, self.fold_bn = channels_last, fold_bn
        self.info = info or WeightsInfo("user", type(net).__name__, "user-supplied module")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.training = net.training  # this module's own flag only: nothing of ``net`` changes
        self.window: Window | None = None  # sliding-window inference (load_model's ``window``); None: whole image

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected images shaped (B,{self.mean.shape[1]},H,W), got {tuple(images.shape)}")
        x = (images - self.mean) / self.std
        if self.window is None:
            return self._logits(x)
        boxes = window_boxes(x.shape[-2], x.shape[-1], self.window)
        if len(boxes) == 1:
            return self._logits(x)
        # sliding-window inference (MMSeg's "slide" mode): each window's logits at its size, summed
        # where windows overlap and divided by how many cover each pixel; differentiable throughout
        windows = [self._logits(x[..., top:bottom, left:right]) for top, left, bottom, right in boxes]
        count = x.new_zeros((1, 1, *x.shape[-2:]))
        for top, left, bottom, right in boxes:
            count[..., top:bottom, left:right] += 1
        return _Tiled.apply(tuple(boxes), tuple(x.shape[-2:]), *windows) / count

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits for normalised ``x``, upsampled to ``x``'s size."""
        if self.channels_last:  # NHWC convolutions: faster on CPUs with oneDNN and on tensor cores
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        if isinstance(out, dict):
            out = out["out"]
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the model returned {type(out).__name__}; expected a tensor or a dict with 'out'")
        if out.dim() != 4 or out.shape[0] != x.shape[0]:  # a (B,H,W) map is no class scores: never read H as C
            raise ValueError(
                f"the network returned a tensor shaped {tuple(out.shape)} for images shaped {tuple(x.shape)}; "
                f"a segmentation model must return class scores (logits) shaped (B, C, H, W), C its classes"
            )
        if out.dim() == 4 and out.shape[-2:] != x.shape[-2:]:
            # in channels_last layout: PyTorch's CPU bilinear forward+backward is 2-3x faster there
            # (1x150x64x64 -> 256 px: 28 against 98 ms, one thread), and the losses read such logits
            # as (pixel, class) rows (segattack.attacks.losses.pixel_cross_entropy)
            out = out.contiguous(memory_format=torch.channels_last)
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class _Tiled(torch.autograd.Function):
    """Windows' logits summed into one image, each added to its own box only (never padded to the
    image: memory and time grow with the windows' area, not their count times the image's); the
    gradient of a window is the image gradient's box. Deterministic: plain slice additions."""

    @staticmethod
    def forward(
        ctx: Any, boxes: tuple[tuple[int, int, int, int], ...], shape: tuple[int, int], *windows: torch.Tensor
    ) -> torch.Tensor:
        ctx.boxes = boxes
        first = windows[0]
        total = first.new_zeros((*first.shape[:2], *shape))
        for (top, left, bottom, right), logits in zip(boxes, windows):
            total[..., top:bottom, left:right] += logits
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return (None, None, *(grad[..., top:bottom, left:right] for top, left, bottom, right in ctx.boxes))


Window = tuple[int, int]  # (height, width) of a sliding window, in pixels


def parse_window(text: str | Window | None) -> Window | None:
    """A sliding window from ``"H"`` (square) or ``"HxW"``; None or ``""``: whole-image inference."""
    if text is None or text == "":
        return None
    if isinstance(text, tuple):
        sides = [int(v) for v in text]
    else:
        parts = str(text).lower().split("x")
        if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(
                f"window must be 'H' or 'HxW' in pixels (e.g. 512x1024), or '' for the whole image; got {text!r}"
            )
        sides = [int(p) for p in parts]
    height, width = (sides * 2)[:2] if len(sides) == 1 else sides
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"window sides must be >= {MIN_SIDE} px, got {height}x{width}")
    return height, width


def window_boxes(height: int, width: int, window: Window) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of the sliding windows over a ``height`` x ``width`` image, as
    MMSeg's slide inference places them: a stride of 2/3 of the window (its Cityscapes configs:
    512x1024 windows, stride 341x682), the last window on each axis flush with the image's edge, a
    window larger than the image clipped to it."""
    (wh, ww), (sh, sw) = window, (max(1, 2 * window[0] // 3), max(1, 2 * window[1] // 3))
    rows = max(height - wh + sh - 1, 0) // sh + 1
    cols = max(width - ww + sw - 1, 0) // sw + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            bottom, right = min(r * sh + wh, height), min(c * sw + ww, width)
            boxes.append((max(bottom - wh, 0), max(right - ww, 0), bottom, right))
    return boxes


def ready(model: SegmentationModel, device: str | torch.device) -> SegmentationModel:
    """A loaded network is ours: frozen in eval mode for good (attacks differentiate w.r.t. the input only)."""
    return model.eval().requires_grad_(False).to(device)


def wrap_model(module: nn.Module, name: str = "user model", normalize: bool = True) -> SegmentationModel:
    """Wrap a user's segmentation ``nn.Module`` (tensor or ``{'out': ...}`` output) for the attacks.

    With ``normalize=False`` the module receives [0,1] images unchanged. The module is not
    changed: its mode and ``requires_grad`` flags stay the user's (the attacks run it in eval mode
    and restore them). Wrapping a wrapped model is refused (it would normalise twice).
    """
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return SegmentationModel(module, WeightsInfo("user", name, "user-supplied module"), mean, std)
