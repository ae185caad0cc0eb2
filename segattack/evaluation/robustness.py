"""The robustness evaluation's readings: pooled scores, the per-image worst case, smallest breaking eps.

Pure functions over confusion counts and per-image values, so the numbers of ``segattack
evaluate`` (:mod:`segattack.study.evaluate`) can be checked by hand. The conventions are the field's:

- scores are read from **one confusion matrix summed over the whole dataset** (torchvision's and
  MMSeg's evaluation; ignored pixels dropped), never averaged over batches or images: mIoU over
  the classes present in prediction or reference, aAcc (pixel accuracy) and mean class accuracy
  over the classes present in the reference;
- the **worst case** over attacks is per image the attack whose prediction has the lowest pixel
  accuracy against the ground truth (SEA's rule); its scores are pooled over the chosen
  predictions;
- an image is **broken** at a radius once a share ``break_share`` of its labelled pixels is off
  its label (untargeted) or of the pixels that had to change is at the target (targeted); its
  smallest breaking eps is the smallest radius tried that broke it (inf where none did).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from segattack.evaluation.budget import robustness_curve

BREAK_SHARE = 0.99  # an image is broken once this share of its pixels is won (adv_lib's and the budget axis's)
CONVERGED_WINDOW = 0.1  # the share of an attack's last iterations its objective is watched over
CONVERGED_CHANGE = 0.01  # relative change of the objective over that window below which it has converged


@dataclass(frozen=True)
class Scores:
    """A dataset's segmentation scores from pooled confusion counts; None where undefined."""

    miou: float | None  # mean IoU over the classes present in prediction or reference
    aacc: float | None  # pixel accuracy over labelled pixels
    macc: float | None  # mean class accuracy over the classes present in the reference
    class_iou: list[float | None]  # per class; None for a class in neither prediction nor reference


def _defined(value: torch.Tensor) -> float | None:
    number = float(value)
    return None if number != number or number in (float("inf"), float("-inf")) else number


def pooled_scores(conf: torch.Tensor) -> Scores:
    """Scores from confusion counts ``(..., C, C)`` (rows = reference class), summed over every
    leading dimension first: one matrix for the whole dataset."""
    if conf.dim() < 2 or conf.shape[-1] != conf.shape[-2]:
        raise ValueError(f"confusion counts must be (..., C, C), got {tuple(conf.shape)}")
    total = conf.reshape(-1, conf.shape[-2], conf.shape[-1]).sum(0).double()
    inter = total.diagonal()
    union = total.sum(0) + total.sum(1) - inter
    rows = total.sum(1)
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))
    acc = torch.where(rows > 0, inter / rows.clamp_min(1), torch.full_like(inter, float("nan")))
    labelled = total.sum()
    return Scores(
        miou=_defined(iou.nanmean()) if (union > 0).any() else None,
        aacc=_defined(inter.sum() / labelled) if labelled > 0 else None,
        macc=_defined(acc.nanmean()) if (rows > 0).any() else None,
        class_iou=[_defined(v) for v in iou],
    )


def image_accuracy(conf: torch.Tensor) -> torch.Tensor:
    """(..., N) each image's pixel accuracy from its confusion counts (..., N, C, C); NaN for an
    image without a labelled pixel."""
    hits = conf.diagonal(dim1=-2, dim2=-1).sum(-1).double()
    labelled = conf.sum((-2, -1)).double()
    return torch.where(labelled > 0, hits / labelled.clamp_min(1), torch.full_like(hits, float("nan")))


def worst_case(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SEA's per-image worst case over attacks: from per-attack, per-image confusion counts
    ``(A, N, C, C)``, each image's attack with the lowest pixel accuracy (the first on ties; an image
    without labelled pixels takes the first attack) and the chosen counts ``(N, C, C)``."""
    if conf.dim() != 4 or conf.shape[0] < 1:
        raise ValueError(f"worst_case takes (attacks, images, C, C) counts, got {tuple(conf.shape)}")
    acc = image_accuracy(conf).nan_to_num(float("inf"))
    choice = acc.argmin(0)
    return choice, conf[choice, torch.arange(conf.shape[1])]


def untargeted_success(conf: torch.Tensor) -> torch.Tensor:
    """(N,) share of each image's labelled pixels off their label (0 without a labelled pixel)."""
    return (1 - image_accuracy(conf)).nan_to_num(0.0)


def smallest_breaking(success: torch.Tensor, eps: Sequence[float], break_share: float = BREAK_SHARE) -> torch.Tensor:
    """(N,) each image's smallest radius of ``eps`` (ascending) at which its success ``(E, N)``
    reached ``break_share``; inf where no radius did."""
    radii = torch.as_tensor(list(eps), dtype=torch.float64)
    if success.dim() != 2 or success.shape[0] != len(radii):
        raise ValueError(f"success must be (len(eps), images) = ({len(radii)}, N), got {tuple(success.shape)}")
    if len(radii) and not bool((radii[1:] > radii[:-1]).all()):
        raise ValueError(f"eps must be strictly increasing, got {list(eps)}")
    broken = success.double() >= break_share
    found = torch.where(broken, radii[:, None], torch.full_like(broken, float("inf"), dtype=torch.float64))
    return found.amin(0) if len(radii) else torch.full((success.shape[1],), float("inf"), dtype=torch.float64)


def robust_share(smallest: torch.Tensor, eps: Sequence[float]) -> list[float]:
    """The share of images not broken at each radius of ``eps``: robust accuracy against eps."""
    if not len(smallest):
        raise ValueError("no images to read a robust share from")
    return [1.0 - float(v) for v in robustness_curve(smallest.double(), torch.tensor(list(eps), dtype=torch.float64))]


def objective_change(loss: torch.Tensor, window: float = CONVERGED_WINDOW) -> float:
    """How much an attack's objective still moved at its end: the relative change of the mean loss
    over images ``(steps, N)`` across its last ``window`` share of iterations (at least one)."""
    if loss.dim() != 2 or loss.shape[0] < 2:
        return 0.0  # one iteration: nothing to compare
    curve = loss.double().nanmean(1)
    span = max(1, round(window * (len(curve) - 1)))
    start, end = curve[-1 - span], curve[-1]
    if start.isnan() or end.isnan():
        return 0.0
    return float((end - start).abs() / start.abs().clamp_min(1e-12))


def converged(loss: torch.Tensor, window: float = CONVERGED_WINDOW, change: float = CONVERGED_CHANGE) -> bool:
    """Whether the objective had settled: it moved less than ``change`` over the last iterations."""
    return objective_change(loss, window) < change


@dataclass(frozen=True)
class TargetedScores:
    """A targeted cell's reading: success over the pixels that had to change, and the target IoU."""

    success_changed: float | None  # pooled: hits over every image's pixels whose target differs from its prediction
    target_miou: float | None  # mIoU of the adversarial predictions against the target masks, pooled


def targeted_scores(hits: torch.Tensor, todo: torch.Tensor, conf_target: torch.Tensor) -> TargetedScores:
    """Pooled targeted reading from per-image hits and pixels to change (N,) and confusion counts
    against the targets (N, C, C)."""
    total = float(todo.double().sum())
    return TargetedScores(
        success_changed=float(hits.double().sum()) / total if total > 0 else None,
        target_miou=pooled_scores(conf_target).miou,
    )
