"""One perturbation axis for every attack: per image, the smallest budget at which an attack succeeds.

An image is *broken* once a share ``adv_threshold`` of its labelled pixels is at the target
(targeted) or off its label (untargeted): the attacks' ``AttackResult.success``, adv_lib's reading.
How the smallest budget is found depends on the attack's kind in the registry:

- a minimal-norm attack (``kind="minimal_norm"``: ALMA prox, PDPGD, FMN) returns it: the norm of
  its returned perturbation where it succeeds, inf where it does not;
- a budget attack with a budget rule (PGD, SegPGD, CosPGD, DAG, APGD, SEA, ...) is searched: a
  bisection over its L-inf radius in [0, ``eps_max``], ``search_steps`` halvings per image (13, as
  the ALMA prox paper's harness), each image on its own bracket, so an image decided (not broken
  at ``eps_max``: one run, inf) costs no more runs; the budget is the measured norm of the
  perturbation found at the bracket's upper end (at most that radius for a projected attack; DAG,
  unbounded, steps by the radius and may exceed it);
- ASMA (registered ``searchable=False``: its budget is not an input) and any attack without a
  budget rule are measured after the fact: the final L-inf and L2 of one run where it succeeds,
  inf where it does not.

:func:`robustness_curve` turns the per-image budgets into the share of images broken at each
budget, and :func:`median_budget` gives their median with a bootstrap interval (inf when fewer
than half the images break).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from segattack.attacks import ATTACKS, AttackResult

SEARCH_STEPS = 13  # bisection halvings of the L-inf radius (the ALMA prox harness's 13)
EPS_MAX = 16 / 255  # the search's upper end, [0,1] pixels
How = Literal["minimal_norm", "search", "measured"]


@dataclass
class Budgets:
    """Per image (B,): the smallest L-inf and L2 perturbation ([0,1] pixels) found to break it (inf
    where none did), the forward+backward passes spent, and how the budgets were found. Under
    ``"search"`` both norms are those of the perturbation found at ``radius``, the smallest radius
    the search broke the image at (inf where none; the measured L-inf under the other kinds)."""

    linf: torch.Tensor
    l2: torch.Tensor
    passes: torch.Tensor
    how: How
    radius: torch.Tensor


def _norms(result: AttackResult, images: torch.Tensor, broken: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    delta = (result.adv - images).flatten(1)
    inf = torch.full((len(images),), float("inf"), dtype=torch.float64)
    linf = torch.where(broken.cpu(), delta.abs().amax(1).double().cpu(), inf)
    l2 = torch.where(broken.cpu(), delta.norm(dim=1).double().cpu(), inf)
    return linf, l2


def _passes(result: AttackResult, count: int, steps: int) -> torch.Tensor:
    return torch.as_tensor(result.params.get("iterations", [steps] * count), dtype=torch.long).cpu()


def smallest_budget(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: str,
    *,
    targeted: bool = True,
    steps: int = 20,
    adv_threshold: float = 0.99,
    eps_max: float = EPS_MAX,
    search_steps: int = SEARCH_STEPS,
    backbone: str = "",
    params: dict[str, Any] | None = None,
) -> Budgets:
    """The smallest budget at which ``attack`` (a registry name) breaks each image (module docstring).

    ``params``: the attack's own keywords (its ``paper_params(backbone)`` are the base; a budget
    attack's radius and steps come from its budget rule). ``steps``: its iterations per run.
    """
    if not 0 < adv_threshold <= 1:
        raise ValueError(f"adv_threshold must be in (0, 1], got {adv_threshold}")
    if not eps_max > 0 or search_steps < 1 or steps < 1:
        raise ValueError(f"eps_max must be > 0, search_steps and steps >= 1; got {eps_max}, {search_steps}, {steps}")
    if images.dim() != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"images must be (B,3,H,W) and labels (B,H,W) of the same B, H, W; got {tuple(images.shape)} "
            f"and {tuple(labels.shape)}"
        )
    spec = ATTACKS.check(attack)
    kwargs: dict[str, Any] = {**spec.paper_params(backbone), **(params or {})}
    keywords = inspect.signature(spec.fn).parameters
    if "targeted" in keywords:
        kwargs["targeted"] = targeted
    elif not targeted:
        raise ValueError(f"{attack} has no untargeted form")
    n = len(images)
    if spec.kind == "minimal_norm" or spec.budget is None or not spec.searchable:
        # a minimal-norm attack returns the budget; ASMA has no radius to search: measured after the fact
        if spec.kind == "minimal_norm":
            kwargs["adv_threshold"] = adv_threshold
        result = spec(model, images, labels, steps=steps, **kwargs)
        linf, l2 = _norms(result, images, result.success >= adv_threshold)
        how: How = "minimal_norm" if spec.kind == "minimal_norm" else "measured"
        return Budgets(linf, l2, _passes(result, n, steps), how, linf.clone())

    if "adv_threshold" in keywords:  # a budget attack stops on an image once it is broken: fewer passes
        kwargs.setdefault("adv_threshold", adv_threshold)

    def run(i: int, eps: float) -> tuple[AttackResult, bool]:
        rule = spec.budget_params(eps, steps, backbone)
        result = spec(model, images[i : i + 1], labels[i : i + 1], **{**kwargs, **rule})
        return result, bool(result.success.item() >= adv_threshold)

    linf = torch.full((n,), float("inf"), dtype=torch.float64)
    l2, radius, passes = linf.clone(), linf.clone(), torch.zeros(n, dtype=torch.long)
    for i in range(n):
        best, broken = run(i, eps_max)
        passes[i] += _passes(best, 1, steps).sum()
        if not broken:
            continue
        low, high = 0.0, eps_max
        for _ in range(search_steps):
            mid = (low + high) / 2
            result, broken = run(i, mid)
            passes[i] += _passes(result, 1, steps).sum()
            if broken:
                high, best = mid, result
            else:
                low = mid
        delta = (best.adv - images[i : i + 1]).flatten()
        linf[i], l2[i], radius[i] = float(delta.abs().max()), float(delta.norm()), high
    return Budgets(linf, l2, passes, "search", radius)


def robustness_curve(budgets: torch.Tensor | np.ndarray, grid: torch.Tensor | np.ndarray) -> np.ndarray:
    """The share of images broken at each budget of ``grid``: mean over images of budget <= g."""
    values, points = np.asarray(budgets, dtype=float), np.asarray(grid, dtype=float)
    if values.ndim != 1 or not len(values) or points.ndim != 1:
        raise ValueError(f"budgets and grid must be non-empty 1-D, got shapes {values.shape}, {points.shape}")
    if np.isnan(values).any() or (values < 0).any() or (points < 0).any():
        raise ValueError("budgets and grid must be >= 0 (inf for an image never broken), without NaN")
    return (values[None, :] <= points[:, None]).mean(1)


def median_budget(
    budgets: torch.Tensor | np.ndarray, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """The median budget over images and its 95% bootstrap interval (percentiles of resampled
    medians, seeded); inf where fewer than half the images (of a resample) are broken."""
    values = np.asarray(budgets, dtype=float)
    if values.ndim != 1 or not len(values) or np.isnan(values).any():
        raise ValueError(f"budgets must be a non-empty 1-D array without NaN, got shape {values.shape}")
    draws = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    medians = np.sort(np.median(values[draws], axis=1))
    low, high = medians[int(0.025 * (resamples - 1))], medians[int(np.ceil(0.975 * (resamples - 1)))]
    return float(np.median(values)), float(low), float(high)
