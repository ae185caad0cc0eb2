"""Train the embedded DeepLabV3 models on the synthetic scenes, on the CPU, resumably.

torchvision's own constructors (``weights=None, weights_backbone=None, num_classes=21``) are
trained from scratch with AdamW and a warm-up + cosine schedule. Batches are pure functions of
(seed, step), so a run stopped at any checkpoint resumes bit-for-bit where it left off.

Eval mode needs care: BatchNorm running statistics collected while the weights move fast (and,
in the ASPP head, after dropout) do not describe the final network, and an eval-mode model then
predicts background everywhere. After training (and before each progress evaluation) the running
statistics are recomputed as exact averages over training batches with dropout off.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from segattack.data.scenes import GENERATOR_VERSION, scene_batch
from segattack.engine.store import atomic_save, atomic_write_text
from segattack.metrics import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetScores,
    confusion_matrix,
    dataset_scores,
    finite_or_none,
    predict_classes,
)
from segattack.models import checkpoints
from segattack.models.backbones import BACKBONES, build_network
from segattack.models.wrapper import SegmentationModel


@dataclass
class TrainConfig:
    backbone: str
    size: int = 96
    batch: int = 16
    steps: int = 1500
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 0
    heldout_images: int = 256
    recalibration_batches: int = 25

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        for name in ("size", "batch", "steps", "checkpoint_every", "heldout_images", "recalibration_batches"):
            if getattr(self, name) < (16 if name == "size" else 1):
                raise ValueError(f"{name} must be >= {16 if name == 'size' else 1}, got {getattr(self, name)}")
        if self.eval_every < 0 or self.warmup < 0 or self.seed < 0:
            raise ValueError("eval_every, warmup and seed must be >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0 and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"lr must be a finite number > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )


def check_train_paths(work_dir: Path, out: Path) -> None:
    """Refuse output paths that would fail or overwrite something, before any training."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name the checkpoint file")
    if out.suffix not in (".pt", ".pth"):
        raise ValueError(f"--out {out} must end in .pt or .pth (its metadata goes to {out.with_suffix('.json').name})")
    if work_dir.exists() and not work_dir.is_dir():
        raise ValueError(f"--work-dir {work_dir} is a file")
    for folder in (out.parent, work_dir):
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise ValueError(f"cannot write under {folder} ({existing} is not a writable folder)")


def recalibrate_batchnorm(net: nn.Module, cfg: TrainConfig, batches: int) -> None:
    """Recompute BatchNorm running statistics as exact averages over ``batches`` training batches."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    net.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.train()
    with torch.no_grad():
        for i in range(batches):
            images, _ = scene_batch(cfg.seed + 1, "train", i * cfg.batch, cfg.batch, cfg.size)
            net(_normalize(images))
    for bn in bns:
        bn.momentum = 0.1
    net.eval()


def _normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation, as :class:`SegmentationModel` applies it (training uses the raw net)."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@torch.inference_mode()
def evaluate(model: nn.Module, seed: int, count: int, size: int, batch: int = 16) -> DatasetScores:
    """Held-out mIoU and pixel accuracy of an eval-mode [0,1]-input model on ``count`` scenes."""
    if any(m.training for m in model.modules()):  # batch statistics would score (and change) the model
        raise ValueError("evaluate needs a model in eval mode")
    conf = torch.zeros(21, 21, dtype=torch.long)
    for start in range(0, count, batch):
        images, masks = scene_batch(seed, "heldout", start, min(batch, count - start), size)
        conf += confusion_matrix(predict_classes(model(images)), masks).sum(0)
    return dataset_scores(conf)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _eval_copy(net: nn.Module, cfg: TrainConfig, images: int) -> DatasetScores:
    probe = copy.deepcopy(net)
    recalibrate_batchnorm(probe, cfg, max(4, cfg.recalibration_batches // 3))
    return evaluate(SegmentationModel(probe), cfg.seed, images, cfg.size)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, masks: torch.Tensor) -> float:
    """One AdamW step of pixel-wise cross-entropy on a [0,1] batch; returns the loss before it."""
    loss = nn.functional.cross_entropy(net(_normalize(images))["out"], masks, ignore_index=255)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train(
    cfg: TrainConfig, work_dir: str | Path, out: str | Path, int8: bool = True, stop_at: int | None = None
) -> dict[str, Any]:
    """Train ``cfg.backbone``, resuming from ``work_dir/last.pt``; write the final checkpoint to ``out``.

    ``stop_at`` ends training early at that step (the schedule stays the one for ``cfg.steps``);
    the metadata records the steps actually done. Returns the metadata stored in the checkpoint
    (held-out mIoU, pixel accuracy, time, ...).
    """
    work_dir = Path(work_dir)
    torch.manual_seed(cfg.seed)
    net = build_network(cfg.backbone)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed = 0, 0.0
    last = work_dir / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if state["config"] != asdict(cfg):
            raise ValueError(f"{last} was written with another configuration; remove it or use a new work dir")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
    work_dir.mkdir(parents=True, exist_ok=True)
    log = (work_dir / "log.jsonl").open("a")
    net.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.backbone}", unit="step")
    while step < min(cfg.steps, stop_at or cfg.steps):
        started = time.perf_counter()
        images, masks = scene_batch(cfg.seed, "train", step * cfg.batch, cfg.batch, cfg.size)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = train_step(net, optimizer, images, masks)
        step += 1
        elapsed += time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        record: dict[str, Any] = {"step": step, "loss": loss, "elapsed": elapsed}
        if cfg.eval_every and step % cfg.eval_every == 0:
            scores = _eval_copy(net, cfg, 64)
            record.update(eval_miou=scores["miou"], eval_acc=scores["pixel_accuracy"])
            net.train()
        log.write(json.dumps(record) + "\n")
        log.flush()
        if step % cfg.checkpoint_every == 0 or step in (cfg.steps, stop_at):
            atomic_save(
                {
                    "config": asdict(cfg),
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "elapsed": elapsed,
                },
                last,
            )
    bar.close()
    log.close()
    return finalize(net, cfg, step, elapsed, out, int8)


def finalize(
    net: nn.Module, cfg: TrainConfig, steps_done: int, elapsed: float, out: str | Path, int8: bool
) -> dict[str, Any]:
    """Recalibrate BatchNorm, measure held-out quality of the stored (possibly int8) weights, save."""
    recalibrate_batchnorm(net, cfg, cfg.recalibration_batches)
    fp32 = evaluate(SegmentationModel(net), cfg.seed, cfg.heldout_images, cfg.size)
    meta: dict[str, Any] = {
        "description": (
            f"segattack embedded {cfg.backbone}: trained from scratch on synthetic scenes "
            f"(generator v{GENERATOR_VERSION}); NOT the paper's COCO-trained weights"
        ),
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "steps": steps_done,
        "image_size": cfg.size,
        "batch": cfg.batch,
        "train_seconds": round(elapsed, 1),
        "torch": str(torch.__version__),
        "config": json.dumps(asdict(cfg)),
        "heldout_images": cfg.heldout_images,
        "fp32_heldout_miou": fp32["miou"],
        "storage": "int8 per-channel weights" if int8 else "float32",
    }
    packed = checkpoints.pack(net.state_dict(), cfg.backbone, meta, int8=int8)
    stored = build_network(cfg.backbone)
    stored.load_state_dict(checkpoints.read_packed(packed)["state"])
    scores = evaluate(SegmentationModel(stored.eval()), cfg.seed, cfg.heldout_images, cfg.size)
    meta.update(
        heldout_miou=scores["miou"],
        heldout_pixel_accuracy=scores["pixel_accuracy"],
        heldout_class_iou=[finite_or_none(v) for v in scores["class_iou"]],
    )
    atomic_save(packed, out)
    atomic_write_text(Path(out).with_suffix(".json"), json.dumps(meta, indent=1, allow_nan=False))
    return meta
