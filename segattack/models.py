"""Segmentation models behind one interface: images in [0,1] (B,3,H,W) in, logits (B,C,H,W) out.

Normalisation lives here, in the wrapper, so every attack works in [0,1] pixel space; logits are
upsampled to the input size here too, so every loss and metric sees one logit per input pixel.
:func:`load_model` takes the study's DeepLabV3 backbones (below) or a model spec
(``torchvision:NAME``, ``hf:REPO_OR_DIR``, ``smp:ARCH:ENCODER[:CHECKPOINT]``,
``module:PKG.MOD:CALLABLE``; see :mod:`segattack.zoo`). The backbones' weight sources:

- ``"torchvision"``: the COCO_WITH_VOC_LABELS_V1 weights through torchvision's weights API
  (from ``$TORCH_HOME/hub/checkpoints`` or downloaded on an online machine). The file's SHA-256
  must start with the prefix in its name, as torch.hub checks a download; a cached file that does
  not is loaded, with a warning, as source ``"torchvision (unverified)"``: no published mIoU, and
  a description saying why (it is not the published network, whatever its name says);
- ``"embedded"``: the project's own models, trained on its synthetic scenes (not the paper's
  COCO weights; see ``segattack.train``);
- ``"auto"`` (default): torchvision's when they are cached, else the embedded ones;
- a path to a checkpoint file, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import segmentation as tvseg

from . import checkpoints
from .classes import NUM_CLASSES
from .data import MIN_SIDE
from .metrics import IMAGENET_MEAN, IMAGENET_STD
from .paths import cache_dir, weights_dir

BACKBONES: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "mobilenet_v3_large": (tvseg.deeplabv3_mobilenet_v3_large, tvseg.DeepLabV3_MobileNet_V3_Large_Weights),
    "resnet50": (tvseg.deeplabv3_resnet50, tvseg.DeepLabV3_ResNet50_Weights),
}
# every torchvision segmentation model, by its constructor's name (the ``torchvision:NAME`` specs)
TORCHVISION: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "fcn_resnet50": (tvseg.fcn_resnet50, tvseg.FCN_ResNet50_Weights),
    "fcn_resnet101": (tvseg.fcn_resnet101, tvseg.FCN_ResNet101_Weights),
    "deeplabv3_mobilenet_v3_large": BACKBONES["mobilenet_v3_large"],
    "deeplabv3_resnet50": BACKBONES["resnet50"],
    "deeplabv3_resnet101": (tvseg.deeplabv3_resnet101, tvseg.DeepLabV3_ResNet101_Weights),
    "lraspp_mobilenet_v3_large": (tvseg.lraspp_mobilenet_v3_large, tvseg.LRASPP_MobileNet_V3_Large_Weights),
}
WEIGHT_SOURCES = ("auto", "torchvision", "embedded")
UNVERIFIED_SOURCE = "torchvision (unverified)"  # a file under torchvision's name whose hash does not match it


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
        total = x.new_zeros(())
        count = x.new_zeros((1, 1, *x.shape[-2:]))
        for top, left, bottom, right in boxes:
            logits = self._logits(x[..., top:bottom, left:right])
            pad = (left, x.shape[-1] - right, top, x.shape[-2] - bottom)
            total = total + F.pad(logits, pad)
            count[..., top:bottom, left:right] += 1
        return total / count

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


def build_network(backbone: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """torchvision's own DeepLabV3 constructor, untrained, without the auxiliary head."""
    constructor, _ = _backbone_entry(backbone)
    return constructor(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)


def _backbone_entry(backbone: str) -> tuple[Callable[..., nn.Module], Any]:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


def _torchvision_entry(name: str) -> tuple[Callable[..., nn.Module], Any]:
    """A study backbone's or a ``torchvision:NAME`` model's constructor and weights enum."""
    if name in BACKBONES:
        return BACKBONES[name]
    if name in TORCHVISION:
        return TORCHVISION[name]
    raise ValueError(f"unknown torchvision segmentation model {name!r}; choose one of {', '.join(TORCHVISION)}")


def torchvision_weights_path(backbone: str) -> Path:
    """Where torchvision keeps the COCO_WITH_VOC_LABELS_V1 file: ``$TORCH_HOME/hub/checkpoints/<name>``
    (absolute, so a relative ``TORCH_HOME`` names the same file from any working directory). ``backbone``
    is a study backbone or any name in :data:`TORCHVISION`."""
    _, enum = _torchvision_entry(backbone)
    url = enum.COCO_WITH_VOC_LABELS_V1.url
    return Path(os.path.abspath(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)))


def torchvision_hash_prefix(path: Path) -> str:
    """The SHA-256 prefix torch.hub reads from a weights file name (``name-<prefix>.pth``)."""
    found = torch.hub.HASH_REGEX.search(path.name)
    if not found or not found.group(1):
        raise ValueError(f"{path.name} carries no hash prefix (torch.hub names files NAME-<sha256 prefix>.pth)")
    return found.group(1)


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file, computed once per (path, size, mtime) in a process: a
    160 MB weights file costs about half a second to hash, not once per load."""
    path = Path(os.path.abspath(path))
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def embedded_weights_path(backbone: str) -> Path:
    """The shipped checkpoint, else the one trained on first use under ``$SEGATTACK_HOME``."""
    _backbone_entry(backbone)
    shipped = weights_dir() / f"{backbone}.pt"
    return shipped if shipped.is_file() else cache_dir() / "weights" / f"{backbone}.pt"


def _load_torchvision(backbone: str, download: bool) -> tuple[nn.Module, WeightsInfo]:
    """A study backbone or a :data:`TORCHVISION` model with its published weights, hash-checked."""
    _, enum = _torchvision_entry(backbone)
    weights = enum.COCO_WITH_VOC_LABELS_V1
    path = torchvision_weights_path(backbone)
    if not path.is_file():
        if not download:
            raise WeightsUnavailable(_missing_tv_message(backbone, path, "not cached"))
        # torch.hub's own download: into a temporary file, checked against the SHA-256 prefix in the
        # file name (as load_state_dict_from_url(check_hash=True)), moved into the cache only if it matches.
        digest = torch.hub.HASH_REGEX.search(path.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(
                weights.url, str(path), hash_prefix=digest and digest.group(1), progress=True
            )
        except Exception as exc:  # offline, proxy, disk full, truncated or tampered file
            raise WeightsUnavailable(_missing_tv_message(backbone, path, f"download failed: {exc}")) from None
    state = checkpoints.read(path)["state"]
    net = build_torchvision(backbone)  # without the aux head: _load_state drops its weights
    _load_state(net, state, path, type(net).__name__)
    return net, _torchvision_info(backbone, path)


def build_torchvision(name: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """A study backbone's or a :data:`TORCHVISION` model's network, untrained, without an auxiliary head."""
    constructor, _ = _torchvision_entry(name)
    aux = {} if constructor is tvseg.lraspp_mobilenet_v3_large else {"aux_loss": False}  # LR-ASPP has none
    return constructor(weights=None, weights_backbone=None, num_classes=num_classes, **aux)


def _torchvision_info(backbone: str, path: Path) -> WeightsInfo:
    """The published weights' record when the file's SHA-256 starts with the prefix in its name;
    else an unverified record, without the published mIoU, and a warning naming the file."""
    _, enum = _torchvision_entry(backbone)
    weights = enum.COCO_WITH_VOC_LABELS_V1
    digest, prefix = file_sha256(path), torchvision_hash_prefix(path)
    if not digest.startswith(prefix):
        why = (
            f"{path} has torchvision's name for {weights} but its SHA-256 {digest[:16]}... does not start with "
            f"{prefix}: it is not the published network"
        )
        warnings.warn(
            f"{why}; loaded as {UNVERIFIED_SOURCE!r}, without the published mIoU (delete the file to "
            f"download the real one)",
            stacklevel=2,
        )
        return WeightsInfo(
            UNVERIFIED_SOURCE,
            backbone,
            f"UNVERIFIED weights: {why}",
            extra={"file": str(path), "sha256": digest, "expected_sha256_prefix": prefix},
        )
    metrics = weights.meta.get("_metrics", {}).get("COCO-val2017-VOC-labels", {})
    return WeightsInfo(
        "torchvision",
        backbone,
        f"torchvision {weights} (COCO train2017, 20 VOC classes)",
        clean_miou=metrics.get("miou", None) and metrics["miou"] / 100.0,
        extra={"file": str(path), "sha256": digest, "miou_reported_on": "COCO val2017 (torchvision docs)"},
    )


def _missing_tv_message(backbone: str, path: Path, why: str) -> str:
    _, enum = _torchvision_entry(backbone)
    other = "weights='embedded'" if backbone in BACKBONES else "a checkpoint path as weights"
    return (
        f"torchvision weights for {backbone} are unavailable ({why}): put "
        f"{os.path.basename(path)} (from {enum.COCO_WITH_VOC_LABELS_V1.url}) at {path} "
        f"(TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')}), or use {other}"
    )


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str = "DeepLabV3") -> None:
    expected = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.") or k in expected}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"wrong shapes: {', '.join(wrong[:3])}" if wrong else "",
                f"missing: {', '.join(missing[:3])}" if missing else "",
                f"unexpected: {', '.join(unexpected[:3])}" if unexpected else "",
            )
            if part
        )
        raise checkpoints.CheckpointError(f"{path} does not fit this {what} network ({details})")
    net.load_state_dict(state)


def _load_checkpoint(backbone: str, path: Path, source: str) -> tuple[nn.Module, WeightsInfo]:
    ckpt = checkpoints.read(path)
    if ckpt["backbone"] not in (None, backbone):
        raise checkpoints.CheckpointError(f"{path} holds {ckpt['backbone']} weights, not {backbone}")
    net = build_network(backbone)
    _load_state(net, ckpt["state"], path)
    meta = ckpt["meta"]
    description = meta.get("description", f"checkpoint {path.name}")
    info = WeightsInfo(
        source,
        backbone,
        description,
        clean_miou=meta.get("heldout_miou"),
        extra={"file": str(path), **{k: v for k, v in meta.items() if k != "description"}},
    )
    return net, info


def is_checkpoint_path(weights: str) -> bool:
    """Whether a ``weights`` value names a checkpoint file rather than a source (a path separator or .pt/.pth)."""
    return weights not in WEIGHT_SOURCES and (os.sep in weights or weights.endswith((".pt", ".pth")))


def resolve_weights(weights: str | os.PathLike, what: str = "weights") -> str:
    """``weights`` with a checkpoint path made absolute (``~`` expanded, symlinks followed) and the
    sources (``auto``, ``torchvision``, ``embedded``) unchanged: the form to hash into a run's
    identity and to send to another process, whose working directory may differ."""
    weights = os.fspath(weights)
    if weights in WEIGHT_SOURCES:
        return weights
    if not is_checkpoint_path(weights):
        raise ValueError(
            f"unknown {what} {weights!r}; use one of {', '.join(WEIGHT_SOURCES)} or a checkpoint path (.pt or .pth)"
        )
    return str(Path(weights).expanduser().resolve())


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
    ``module:PKG.MOD:CALLABLE``; :func:`segattack.zoo.load_spec`). For a backbone, ``weights`` is
    ``"auto"``, ``"torchvision"``, ``"embedded"`` or a checkpoint path. The torchvision source
    fetches its file into the cache when it is missing (``download=False`` forbids that); ``"auto"``
    never downloads: it takes torchvision's weights only when cached. ``channels_last`` (NHWC
    layout) and ``fold_bn`` (batch norms folded into the convolutions) keep the numbers up to float
    rounding and make attack iterations faster (``benchmarks/``); for a spec's network, whose
    module order is not known, the folding is kept only where a probe pass gives the same logits.
    ``window`` (``"H"`` or ``"HxW"``) makes the model infer by sliding windows (:func:`window_boxes`),
    as Cityscapes' reference evaluation does; by default it sees the whole image.
    """
    sliding = parse_window(window)  # checked before anything is loaded
    if backbone not in BACKBONES:
        from . import zoo  # the specs' loaders import this module

        model = zoo.load_spec(
            backbone, weights, device=device, download=download, channels_last=channels_last, fold_bn=fold_bn
        )
    else:
        model = _load_backbone(backbone, weights, device, download, channels_last, fold_bn)
    model.window = sliding
    return model


def _load_backbone(
    backbone: str,
    weights: str | os.PathLike,
    device: str | torch.device,
    download: bool,
    channels_last: bool,
    fold_bn: bool,
) -> SegmentationModel:
    weights = resolve_weights(weights)
    if weights == "auto":
        weights = "torchvision" if torchvision_weights_path(backbone).is_file() else "embedded"
    if weights == "torchvision":
        net, info = _load_torchvision(backbone, download)
    elif weights == "embedded":
        path = embedded_weights_path(backbone)
        if not path.is_file():
            raise WeightsUnavailable(
                f"no embedded {backbone} model at {weights_dir() / (backbone + '.pt')} or {path}; "
                f"train one with: python -m segattack train --backbone {backbone}"
            )
        net, info = _load_checkpoint(backbone, path, "embedded")
    else:
        net, info = _load_checkpoint(backbone, Path(weights), "checkpoint")
    info.extra.setdefault("num_classes", NUM_CLASSES)
    return ready(SegmentationModel(net, info, channels_last=channels_last, fold_bn=fold_bn), device)


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
