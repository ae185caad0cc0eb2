"""The studies a reviewer asks for, on the same images and budget for every attack.

- :func:`compare_attacks`: every registered attack on every backbone at one L-inf budget;
- :func:`security_curve`: targeted success and IoU to target versus epsilon;
- :func:`transfer_matrix`: adversarial images of one backbone evaluated on another;
- :func:`class_difficulty`: which target classes are hardest to impose.

All functions return plain rows (lists of dicts, per image where it matters) so the report can
aggregate them with intervals; nothing here re-implements an attack or a metric.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .attacks import ATTACKS, PAPER_BETA, PAPER_TAU
from .checkpoints import atomic_write_text
from .classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from .data import study_images, target_masks
from .metrics import mean_iou, perturbation_norm, pixel_accuracy, predict_classes
from .models import load_model

COMPARED = ("pgd", "segpgd", "cospgd", "dag", "asma")


def budget_params(attack: str, backbone: str, eps: float, steps: int) -> dict[str, Any]:
    """Hyperparameters giving ``attack`` the L-inf budget ``eps`` ([0,1] pixels) over ``steps``.

    PGD/SegPGD/CosPGD project onto the ball; ASMA keeps the paper's beta/tau and gets the ball as
    its optional bound; DAG (unbounded by design) takes steps of L-inf size eps/4 and is reported
    with the norms it reaches.
    """
    if attack == "pgd":
        return {"mode": "linf", "eps": eps, "steps": steps}
    if attack in ("segpgd", "cospgd"):
        return {"eps": eps, "steps": steps}
    if attack == "asma":
        return {"beta": PAPER_BETA.get(backbone, 1e-4), "tau": PAPER_TAU, "eps": eps, "steps": steps}
    if attack == "dag":
        return {"gamma": eps / 4, "steps": steps}
    raise ValueError(f"no budget rule for attack {attack!r}")


def _rows(attack: str, backbone: str, clean: torch.Tensor, adv: torch.Tensor, pred: torch.Tensor,
          targets: torch.Tensor, clean_pred: torch.Tensor, **extra: Any) -> list[dict[str, Any]]:
    per_image = {
        "success": pixel_accuracy(pred, targets), "iou_target": mean_iou(pred, targets),
        "acc_original": pixel_accuracy(pred, clean_pred), "iou_original": mean_iou(pred, clean_pred),
        "l2": perturbation_norm(adv, clean, 2), "linf": perturbation_norm(adv, clean, float("inf")),
    }
    return [{"attack": attack, "backbone": backbone, "image": i, **extra,
             **{k: float(v[i]) for k, v in per_image.items()}} for i in range(len(clean))]


def _clean_prediction(model: nn.Module, images: torch.Tensor, clean_pred: torch.Tensor | None) -> torch.Tensor:
    if clean_pred is not None:
        return clean_pred
    with torch.inference_mode():
        return predict_classes(model(images))


def compare_attacks(model: nn.Module, backbone: str, images: torch.Tensor, targets: torch.Tensor, eps: float,
                    steps: int, attacks: tuple[str, ...] = COMPARED,
                    clean_pred: torch.Tensor | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every attack on the same batch and budget. Returns per-image rows, and per attack the
    adversarial images, predictions and success history (for transfer, difficulty and curves).
    ``clean_pred`` (the model's prediction on ``images``) is computed when not given."""
    clean_pred = _clean_prediction(model, images, clean_pred)
    rows, outputs = [], {}
    for attack in tqdm(attacks, desc=f"compare ({backbone})", leave=False):
        # one untimed iteration first: the first calls on a new shape pay one-off kernel set-up
        ATTACKS[attack](model, images, targets, **budget_params(attack, backbone, eps, 1))
        started = time.perf_counter()
        res = ATTACKS[attack](model, images, targets, **budget_params(attack, backbone, eps, steps))
        seconds = time.perf_counter() - started
        iterations = res.params.get("iterations", [steps] * len(images))
        rows += [dict(r, iterations=iterations[r["image"]], seconds=seconds)
                 for r in _rows(attack, backbone, images, res.adv, res.pred, targets, clean_pred)]
        outputs[attack] = {"adv": res.adv, "pred": res.pred, "success_history": res.history["success"].tolist()}
    return rows, outputs


def security_curve(model: nn.Module, backbone: str, images: torch.Tensor, targets: torch.Tensor,
                   eps_values: list[float], steps: int, attacks: tuple[str, ...] = COMPARED,
                   clean_pred: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Per-image success and IoU to target for each attack at each epsilon."""
    clean_pred = _clean_prediction(model, images, clean_pred)
    rows = []
    for attack in tqdm(attacks, desc=f"security curves ({backbone})", leave=False):
        for eps in eps_values:
            res = ATTACKS[attack](model, images, targets, **budget_params(attack, backbone, eps, steps))
            rows += _rows(attack, backbone, images, res.adv, res.pred, targets, clean_pred, eps=eps)
    return rows


def transfer_matrix(source: str, advs: dict[str, torch.Tensor], images: torch.Tensor, target_model: nn.Module,
                    target: str, targets: torch.Tensor) -> list[dict[str, Any]]:
    """Adversarial images crafted on ``source`` evaluated on ``target``: per-image success and
    IoU to target, against the same targets, beside the clean images' scores."""
    rows = []
    with torch.inference_mode():
        clean_pred = predict_classes(target_model(images))
        for attack, adv in advs.items():
            pred = predict_classes(target_model(adv))
            rows += [dict(r, source=source, evaluated_on=target)
                     for r in _rows(attack, target, images, adv, pred, targets, clean_pred)]
        base = pixel_accuracy(clean_pred, targets)
    rows += [{"attack": "none (clean)", "backbone": target, "image": i, "source": source, "evaluated_on": target,
              "success": float(base[i])} for i in range(len(images))]
    return rows


def transfer_all(models: dict[str, nn.Module], advs: dict[str, dict[str, torch.Tensor]], images: torch.Tensor,
                 targets: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """:func:`transfer_matrix` for every ordered pair of distinct backbones: the images each
    backbone crafted (``advs[source][attack]``, toward ``targets[source]``) evaluated on each other one."""
    rows = []
    for source in models:
        for target in models:
            if source != target:
                rows += transfer_matrix(source, advs[source], images, models[target], target, targets[source])
    return rows


def class_difficulty(attack: str, backbone: str, pred: torch.Tensor, targets: torch.Tensor,
                     clean_pred: torch.Tensor) -> list[dict[str, Any]]:
    """Per image and target class: the fraction of its target pixels imposed, counting only pixels
    whose clean prediction was another class (so classes already present do not look easy)."""
    rows = []
    to_change = (targets != clean_pred) & (targets != IGNORE_INDEX)
    for i in range(len(targets)):
        for c in range(NUM_CLASSES):
            where = to_change[i] & (targets[i] == c)
            total = int(where.sum())
            if total:
                rows.append({"attack": attack, "backbone": backbone, "image": i, "class": VOC_CLASSES[c],
                             "pixels": total, "imposed": float((pred[i][where] == c).float().mean())})
    return rows


def run_studies(*, weights: str, images: str, num_images: int, size: int, steps: int, eps: float,
                eps_values: list[float], curve_images: int, curve_steps: int, seed: int = 0, device: str = "cpu",
                out_dir: str | Path, settings_hash: str = "", backbones: tuple[str, ...] = ("mobilenet_v3_large", "resnet50")) -> dict[str, Any]:
    """All four studies on one image set; writes ``out_dir/studies.json`` last, atomically."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    models = {b: load_model(b, weights, device=device) for b in backbones}
    batch, _, truth = study_images(images, num_images, size, seed)
    batch = batch.to(device)
    clean_pred, targets = {}, {}
    for b, model in models.items():
        with torch.no_grad():
            clean_pred[b] = predict_classes(model(batch))
        targets[b] = target_masks(clean_pred[b], "roll")
    comparison, outputs, security, difficulty = [], {}, [], []
    for b, model in models.items():
        rows, outputs[b] = compare_attacks(model, b, batch, targets[b], eps, steps, clean_pred=clean_pred[b])
        comparison += rows
        bounded = tuple(a for a in COMPARED if a != "dag")  # DAG has no epsilon
        security += security_curve(model, b, batch[:curve_images], targets[b][:curve_images], eps_values,
                                   curve_steps, bounded, clean_pred[b][:curve_images])
        for attack, out in outputs[b].items():
            difficulty += class_difficulty(attack, b, out["pred"], targets[b], clean_pred[b])
    transfer = transfer_all(models, {b: {a: out["adv"] for a, out in outputs[b].items()} for b in models}, batch,
                            targets)
    clean_quality = {b: float(mean_iou(clean_pred[b].cpu(), truth).mean()) if truth is not None else None
                     for b in models}
    results = {
        "params": {"weights": weights, "images": images, "num_images": num_images, "size": size, "steps": steps,
                   "eps": eps, "eps_values": eps_values, "curve_images": curve_images, "curve_steps": curve_steps,
                   "seed": seed, "device": device, "targets": "roll (image i -> prediction of image i+1)"},
        "weights": {b: m.info.as_dict() for b, m in models.items()},
        "clean_iou_truth": clean_quality,
        "comparison": comparison, "security": security, "transfer": transfer, "difficulty": difficulty,
        "iteration_curves": {b: {a: out["success_history"] for a, out in outputs[b].items()} for b in models},
        "seconds": time.perf_counter() - started, "settings_hash": settings_hash,
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_dir) / "studies.json", json.dumps(results, indent=1, allow_nan=False))
    return results
