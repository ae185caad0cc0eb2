"""The study's DeepLabV3 backbones (``mobilenet_v3_large``, ``resnet50``) and their weight sources.

- ``"torchvision"``: the COCO_WITH_VOC_LABELS_V1 weights through torchvision's weights API
  (from ``$TORCH_HOME/hub/checkpoints`` or downloaded on an online machine). The file's SHA-256
  must start with the prefix in its name, as torch.hub checks a download; a cached file that does
  not is loaded, with a warning, as source ``"torchvision (unverified)"``: no published mIoU, and
  a description saying why (it is not the published network, whatever its name says);
- ``"embedded"``: the project's own models, trained on its synthetic scenes (not the paper's
  COCO weights; see ``segattack.study.train``);
- ``"auto"`` (default): torchvision's when they are cached, else the embedded ones;
- a path to a checkpoint file, loaded with ``weights_only=True``.

Also the table of every torchvision segmentation constructor (the ``torchvision:NAME`` specs).
:func:`segattack.models.load_model` loads these or any model spec.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import segmentation as tvseg

from segattack.data.classes import NUM_CLASSES
from segattack.models import checkpoints
from segattack.models.wrapper import SegmentationModel, WeightsInfo, WeightsUnavailable, ready
from segattack.util.paths import cache_dir, shown_path, weights_dir

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
    """The SHA-256 hex digest of a file, computed once per (path, size, mtime, inode) in a process: a
    160 MB weights file costs about half a second to hash, not once per load or config hash."""
    path = Path(os.path.abspath(path))
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int, inode: int = 0) -> str:
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
            f"{shown_path(path)} has torchvision's name for {weights} but its SHA-256 {digest[:16]}... does not "
            f"start with {prefix}: it is not the published network"
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
            extra={"file": shown_path(path), "sha256": digest, "expected_sha256_prefix": prefix},
        )
    metrics = weights.meta.get("_metrics", {}).get("COCO-val2017-VOC-labels", {})
    return WeightsInfo(
        "torchvision",
        backbone,
        f"torchvision {weights} (COCO train2017, 20 VOC classes)",
        clean_miou=metrics.get("miou", None) and metrics["miou"] / 100.0,
        extra={"file": shown_path(path), "sha256": digest, "miou_reported_on": "COCO val2017 (torchvision docs)"},
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
        extra={
            "file": shown_path(path),
            "sha256": file_sha256(path),
            **{k: v for k, v in meta.items() if k != "description"},
        },
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
