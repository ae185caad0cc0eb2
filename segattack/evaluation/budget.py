"""One perturbation axis for every attack: per image, the smallest budget at which an attack succeeds.

An image is *broken* once a share ``adv_threshold`` of its labelled pixels is at the target
(targeted) or off its label (untargeted): the attacks' ``AttackResult.success``, adv_lib's reading.
How the smallest budget is found depends on the attack's kind in the registry:

- a minimal-norm attack (``kind="minimal_norm"``: ALMA prox, PDPGD, FMN) returns it: the norm of
  its returned perturbation where it succeeds, inf where it does not;
- a budget attack with a budget rule (PGD, SegPGD, CosPGD, DAG, APGD, SEA, ...) is searched over
  its L-inf radius, each image on its own. At every radius tried the attack runs *to convergence*
  (:func:`at_radius`): rounds of ``steps`` iterations, each from the last iterate, until the image
  breaks (it then stops: no pass more) or its success stops moving (a round's best success exceeds
  the best of the rounds before it by less than ``PLATEAU``, :func:`stopped_moving`); a radius still moving after
  ``rounds`` rounds flags the image (``Budgets.converged``). An attack that takes a starting
  perturbation (``init``: PGD) is searched *warm*: first at ``eps_max``; then down a ladder
  (``SHRINK`` times the norm of the last perturbation that broke it) until a radius fails, then a
  bisection of the bracket, every radius started from the last breaking perturbation projected
  onto it, until the bracket is ``rtol`` of its upper end; the budget is the measured norm of the
  last breaking perturbation. Any other is searched *cold* (``warm=False`` does this for every
  attack, the earlier search): ``search_steps`` halvings of [0, ``eps_max``], one run of ``steps``
  from zero at each radius, its convergence read from that run's success;
- ASMA (registered ``searchable=False``: its budget is not an input) and any attack without a
  budget rule are measured: one run of ``steps`` iterations that stops each image as soon as it
  breaks, its L-inf and L2 then; inf where it never breaks.

:func:`robustness_curve` turns the per-image budgets into the share of images broken at each
budget, and :func:`median_budget` gives their median with a bootstrap interval (inf when fewer
than half the images break).
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from segattack.attacks import ATTACKS, AttackResult

SEARCH_STEPS = 13  # most radii a search tries after eps_max (a cold search: halvings, as the ALMA prox harness)
EPS_MAX = 16 / 255  # the search's upper end, [0,1] pixels
ROUNDS = 8  # most rounds of ``steps`` iterations at one radius before the image is flagged as still moving
PLATEAU = 0.005  # success (a share of pixels) a round must gain over the best before it to count as moving
SHRINK = 0.75  # a warm search's ladder: each radius this share of the last breaking perturbation's norm
RTOL = 1 / 16  # a warm search stops once its bracket is this narrow, relative to its upper end
How = Literal["minimal_norm", "search", "measured"]


@dataclass
class Budgets:
    """Per image (B,): the smallest L-inf and L2 perturbation ([0,1] pixels) found to break it (inf
    where none did), the forward+backward passes spent, and how the budgets were found. Under
    ``"search"`` both norms are those of the perturbation found at ``radius``, the smallest radius
    the search broke the image at (inf where none; the measured L-inf under the other kinds).
    ``success``: the share of pixels the returned perturbation reaches (where not broken: at the
    largest radius tried, the evidence); ``converged``: every run that did not break the image had
    stopped moving (a broken image counts as converged)."""

    linf: torch.Tensor
    l2: torch.Tensor
    passes: torch.Tensor
    how: How
    radius: torch.Tensor
    success: torch.Tensor
    converged: torch.Tensor


class Probe(typing.NamedTuple):
    """The attack at one radius: its last result, whether it broke the image, whether it had stopped
    moving (True where it broke), and the passes spent."""

    result: AttackResult
    broken: bool
    converged: bool
    passes: int


def _norms(result: AttackResult, images: torch.Tensor, broken: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    delta = (result.adv - images).flatten(1)
    inf = torch.full((len(images),), float("inf"), dtype=torch.float64)
    linf = torch.where(broken.cpu(), delta.abs().amax(1).double().cpu(), inf)
    l2 = torch.where(broken.cpu(), delta.norm(dim=1).double().cpu(), inf)
    return linf, l2


def _passes(result: AttackResult, count: int, steps: int) -> torch.Tensor:
    return torch.as_tensor(result.params.get("iterations", [steps] * count), dtype=torch.long).cpu()


def stopped_moving(history: torch.Tensor, final: torch.Tensor, before: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) whether success had stopped moving over a run: its best (``history`` and the ``final``
    success) exceeds ``before``, the best of the earlier rounds at this radius, by less than
    ``PLATEAU``; a first round (no ``before``) compares its second half with its first, and one
    of a single iteration counts as moving."""
    half = len(history) // 2
    if before is not None:
        early, late = before.to(final), torch.maximum(history.amax(0).to(final), final)
    else:
        early = history[:half].amax(0).to(final) if half else torch.full_like(final, -1.0)
        late = torch.maximum(history[half:].amax(0).to(final), final)
    return late - early < PLATEAU


def at_radius(run: Callable[[float, torch.Tensor | None], AttackResult], radius: float, start: torch.Tensor | None,
              image: torch.Tensor, threshold: float, rounds: int, warm: bool) -> Probe:  # fmt: skip
    """The attack at one radius to convergence: rounds of ``run(radius, start)``, each from the last
    iterate (``warm``; a cold attack has one round), until the image breaks or its success stops moving."""
    passes, best = 0, None
    for _ in range(rounds if warm else 1):
        result = run(radius, start)
        passes += int(_passes(result, 1, len(result.history["success"])).sum())
        if bool(result.success.item() >= threshold):
            return Probe(result, True, True, passes)
        moving = not bool(stopped_moving(result.history["success"], result.success, best).item())
        if not moving:
            return Probe(result, False, True, passes)
        best = torch.maximum(result.history["success"].amax(0), result.success.cpu().to(result.history["success"]))
        start = result.adv - image
    return Probe(result, False, False, passes)


def project(delta: torch.Tensor, radius: float, image: torch.Tensor) -> torch.Tensor:
    """``delta`` on the L-inf ball of ``radius`` with the image kept in [0,1]: a warm start at a new radius."""
    return (image + delta.clamp(-radius, radius)).clamp(0, 1) - image


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
    rounds: int = ROUNDS,
    warm: bool = True,
    rtol: float = RTOL,
) -> Budgets:
    """The smallest budget at which ``attack`` (a registry name) breaks each image (module docstring).

    ``params``: the attack's own keywords (its ``paper_params(backbone)`` are the base; a budget
    attack's radius and steps come from its budget rule). ``steps``: its iterations per run (per
    round of a search). ``rounds``: most rounds at one radius. ``warm=False``: a cold bisection even
    for an attack that takes a starting perturbation (the reference the warm search is checked against).
    """
    if not 0 < adv_threshold <= 1:
        raise ValueError(f"adv_threshold must be in (0, 1], got {adv_threshold}")
    if not eps_max > 0 or search_steps < 1 or steps < 1 or rounds < 1 or not 0 < rtol < 1:
        raise ValueError(
            f"eps_max must be > 0, search_steps, steps and rounds >= 1, rtol in (0, 1); got {eps_max}, "
            f"{search_steps}, {steps}, {rounds}, {rtol}"
        )
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
    if "adv_threshold" in keywords:  # every attack stops on an image once it is broken: fewer passes
        kwargs["adv_threshold"] = adv_threshold
    n = len(images)
    if spec.kind == "minimal_norm" or spec.budget is None or not spec.searchable:
        # a minimal-norm attack returns the budget; ASMA has no radius to search: measured at its first break
        result = spec(model, images, labels, steps=steps, **kwargs)
        broken = result.success >= adv_threshold
        linf, l2 = _norms(result, images, broken)
        how: How = "minimal_norm" if spec.kind == "minimal_norm" else "measured"
        converged = broken.cpu() | stopped_moving(result.history["success"], result.success).cpu()
        return Budgets(linf, l2, _passes(result, n, steps), how, linf.clone(), result.success.double().cpu(), converged)

    warm = warm and "init" in keywords
    search = (eps_max, search_steps, rounds, rtol, warm)
    found = [_search(spec.name, model, images[i : i + 1], labels[i : i + 1], kwargs, steps, backbone,
                     adv_threshold, *search) for i in range(n)]  # fmt: skip
    linf, l2, radius, success = (torch.tensor([f[k] for f in found], dtype=torch.float64) for k in range(4))
    passes, converged = torch.tensor([f[4] for f in found]), torch.tensor([f[5] for f in found])
    return Budgets(linf, l2, passes, "search", radius, success, converged)


def _search(
    attack: str,
    model: nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    kwargs: dict[str, Any],
    steps: int,
    backbone: str,
    threshold: float,
    eps_max: float,
    search_steps: int,
    rounds: int,
    rtol: float,
    warm: bool,
) -> tuple[float, float, float, float, int, bool]:
    """One image's search (module docstring): (L-inf, L2, radius, success, passes, converged)."""
    spec = ATTACKS[attack]

    def run(radius: float, start: torch.Tensor | None) -> AttackResult:
        rule = spec.budget_params(radius, steps, backbone)
        return spec(model, image, label, **{**kwargs, **rule, **({"init": start} if start is not None else {})})

    probe = at_radius(run, eps_max, None, image, threshold, rounds, warm)
    passes, converged = probe.passes, probe.converged
    if not probe.broken:
        return math.inf, math.inf, math.inf, float(probe.result.success.item()), passes, converged
    best, low, high = probe.result, 0.0, eps_max
    for _ in range(search_steps):
        if warm:
            high = min(high, float((best.adv - image).abs().max()))
            if high - low <= rtol * high:
                break
            radius = (low + high) / 2 if low else SHRINK * high  # down the ladder until a radius fails
            start = project(best.adv - image, radius, image)
        else:
            radius, start = (low + high) / 2, None
        probe = at_radius(run, radius, start, image, threshold, rounds, warm)
        passes += probe.passes
        if probe.broken:
            best, high = probe.result, radius
        else:
            low, converged = radius, converged and probe.converged
    delta = (best.adv - image).flatten()
    linf, l2 = float(delta.abs().max()), float(delta.norm())
    return linf, l2, min(high, linf) if warm else high, float(best.success.item()), passes, converged


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
