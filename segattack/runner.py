"""One study run: load model and images, build targets, attack, measure, save.

The CLI and the notebooks both call :func:`run` and :func:`save_run`; nothing else computes
results, so every entry point reports the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image

from . import __version__
from .attacks import ATTACKS, PAPER_BETA, PAPER_TAU
from .classes import voc_palette
from .data import study_images, target_masks
from .metrics import attack_metrics, finite_or_none, mean_iou, pixel_accuracy, pooled_scores, predict_classes
from .models import load_model


RESULTS_VERSION = 2  # bumped when results.json gains or changes fields the report reads


@dataclass
class RunConfig:
    """Everything that determines a run's numbers (hashed by the grid to skip finished runs)."""

    backbone: str = "mobilenet_v3_large"
    attack: str = "pgd"
    weights: str = "auto"
    images: str = "scenes"
    num_images: int = 8
    size: int = 0  # 0: the embedded model's training size, else 520 (torchvision weights)
    steps: int = 50
    target_scheme: str = "single"
    target_index: int = 1
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # bf16 autocast for the attack's forward/backward passes (GPU path; CPU works too)
    channels_last: bool = True  # NHWC memory layout for the network (same numbers, faster)
    fold_bn: bool = True  # batch norms folded into the convolutions (same numbers, faster)
    attack_params: dict[str, Any] = field(default_factory=dict)


def config_hash(cfg: RunConfig) -> str:
    """A stable hash of everything that determines a run's numbers."""
    blob = json.dumps(asdict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_attack_params(attack: str, backbone: str) -> dict[str, Any]:
    """The paper's section-5 hyperparameters for ``attack`` on ``backbone`` (the attack's own defaults
    for the attacks the paper does not use)."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    if attack == "asma":
        return {"beta": PAPER_BETA[backbone], "tau": PAPER_TAU}
    if attack == "pgd":
        return {"mode": "paper"}
    return {}


def _image_size(cfg: RunConfig, model: torch.nn.Module) -> int:
    if cfg.size:
        return cfg.size
    return int(model.info.extra.get("image_size", 520))


def run(cfg: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Execute one run and return tensors, per-image metrics, history and provenance."""
    default_attack_params(cfg.attack, cfg.backbone)  # validates the name before any loading
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.backbone, cfg.weights, device=cfg.device, channels_last=cfg.channels_last,
                       fold_bn=cfg.fold_bn)
    size = _image_size(cfg, model)
    images, names, truth = study_images(cfg.images, cfg.num_images, size, cfg.seed)
    images = images.to(cfg.device)
    with torch.inference_mode():
        clean_pred = predict_classes(model(images))
    targets = target_masks(clean_pred, cfg.target_scheme, cfg.target_index)
    params = {**default_attack_params(cfg.attack, cfg.backbone), **cfg.attack_params}
    started = time.perf_counter()
    with torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.amp):
        result = ATTACKS[cfg.attack](model, images, targets, steps=cfg.steps, progress=progress, **params)
    seconds = time.perf_counter() - started
    passes = max(result.params["iterations"])  # fewer than steps once every sample has stopped
    adv_pred = result.pred
    metrics = attack_metrics(clean_pred, adv_pred, targets, images, result.adv)
    references = {"original": clean_pred, "target": targets}
    if truth is not None:
        truth = truth.to(cfg.device)
        metrics["clean_iou_truth"] = mean_iou(clean_pred, truth)
        metrics["iou_truth"], metrics["acc_truth"] = mean_iou(adv_pred, truth), pixel_accuracy(adv_pred, truth)
        references["truth"] = truth
    attacked = attacked_images(len(images), cfg.target_scheme, cfg.target_index)
    pooled = {scope: {ref_name: pooled_scores(adv_pred[rows].cpu(), ref[rows].cpu())
                      for ref_name, ref in references.items()}
              for scope, rows in (("attacked", attacked), ("all", list(range(len(images)))))}
    return {
        "config": asdict(cfg), "image_size": size, "names": names, "weights": model.info.as_dict(),
        "attack_params": result.params, "seconds": seconds, "seconds_per_iteration": seconds / passes,
        "images": images.cpu(), "adv": result.adv.cpu(), "clean_pred": clean_pred.cpu(),
        "adv_pred": adv_pred.cpu(), "targets": targets.cpu(), "truth": None if truth is None else truth.cpu(),
        "metrics": {k: v.cpu() for k, v in metrics.items()}, "attacked": attacked, "pooled": pooled,
        "history": {k: v.cpu() for k, v in result.history.items()},
        "environment": {"segattack": __version__, "torch": str(torch.__version__),
                        "torchvision": torchvision.__version__, "numpy": np.__version__,
                        "python": platform.python_version(),
                        "device": cfg.device if cfg.device != "cpu" else f"cpu ({os.cpu_count()} cores)"},
    }


def attacked_images(count: int, scheme: str, target_index: int) -> list[int]:
    """The images whose numbers Table 1 averages: under the ``single`` scheme the target image
    attacks its own prediction (ASMA leaves it untouched, PGD perturbs it), so it is left out."""
    return [i for i in range(count) if not (scheme == "single" and i == target_index)] or list(range(count))


def summarize(metrics: dict[str, torch.Tensor], rows: list[int] | None = None) -> dict[str, dict[str, float | None]]:
    """Mean and 95% normal interval half-width over images (``rows``: a subset) for each metric;
    the half-width is None for one image."""
    out = {}
    for name, values in metrics.items():
        v = values.double() if rows is None else values.double()[rows]
        half = 1.96 * v.std(unbiased=True).item() / len(v) ** 0.5 if len(v) > 1 else float("nan")
        out[name] = {"mean": finite_or_none(v.mean().item()), "ci95": finite_or_none(half)}
    return out


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Refuse an output path that exists but is not a folder (before any work is done)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output directory {out} is a file")
    return out


def save_run(res: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write a run's results under ``out_dir``: PNGs, ``tensors.pt``, then ``results.json``.

    Everything is written into a staging folder beside ``out_dir`` first and moved in only when
    complete, ``results.json`` last: a failed write (full disk) leaves an earlier result intact, and
    a folder without ``results.json`` is never taken for a finished run.
    """
    out = check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        _write_run(res, staging)
        names = sorted(p.name for p in staging.iterdir() if p.name != "results.json") + ["results.json"]
        for name in names:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "results.json"


def _write_run(res: dict[str, Any], folder: Path) -> None:
    palette = voc_palette()
    for i in range(len(res["names"])):
        adv = (res["adv"][i].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(adv).save(folder / f"{i:02d}_adv.png")
        Image.fromarray(palette[res["clean_pred"][i].numpy()]).save(folder / f"{i:02d}_pred_clean.png")
        Image.fromarray(palette[res["adv_pred"][i].numpy()]).save(folder / f"{i:02d}_pred_adv.png")
    tensors = {k: res[k] for k in ("images", "adv", "clean_pred", "adv_pred", "targets")}
    if res["truth"] is not None:
        tensors["truth"] = res["truth"]
    torch.save(tensors, folder / "tensors.pt")
    doc = {k: res[k] for k in ("config", "image_size", "names", "weights", "attack_params", "seconds",
                               "seconds_per_iteration", "environment")}
    doc["config_hash"] = config_hash(RunConfig(**res["config"]))
    doc["results_version"] = RESULTS_VERSION
    doc["attacked"] = res["attacked"]
    doc["summary"] = summarize(res["metrics"], res["attacked"])  # Table 1: the target image left out
    doc["summary_all"] = summarize(res["metrics"])
    doc["pooled"] = res["pooled"]
    doc["per_image"] = {k: [finite_or_none(x) for x in v.tolist()] for k, v in res["metrics"].items()}
    doc["history"] = {k: v.tolist() for k, v in res["history"].items()}
    (folder / "results.json").write_text(json.dumps(doc, indent=1, allow_nan=False))
