"""PGD for segmentation; targeted by default (the paper's section 2): min CE(g(X+P), Y_t) s.t. |P| <= eps.

Modes:

- ``mode="paper"`` (default) follows the implementation the paper cites (its reference [5]): the
  perturbation lives in ImageNet-*normalised* input space, ``eps=0.1`` and ``alpha=100`` there,
  raw-gradient steps ``P_n = clamp(P_{n-1} - alpha * grad, -eps, eps)``, cross-entropy with
  ``ignore_index=255``, and the image is *not* clipped to the valid range (``clip=False``): X+P can
  leave [0,1] by up to ``eps * std``. In [0,1] pixels this eps is 0.1*std, about 0.0226 (5.8/255).
- ``mode="linf"``: the conventional attack (torchattacks, adv_lib): eps and step in [0,1] pixel
  space, sign-gradient steps, X+P kept in [0,1], optional uniform random start.
- ``mode="l2"``: per-image L2 ball in [0,1] pixel space, L2-normalised gradient steps.

The loss is the per-image mean cross-entropy over non-ignored pixels, summed over the batch, so
every sample's step is what it would be alone (with batch 1 this equals [5]'s mean). With
``targeted=False`` the attack ascends the cross-entropy to ``labels`` (true or clean labels).
``restarts > 1`` (with ``random_start``) keeps, per image, the restart with the highest success.
``adv_threshold`` stops a sample (it leaves the batch) once that fraction of its pixels is at the
target (off the label when untargeted); None, the default and the paper's setting, runs every step.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..classes import IGNORE_INDEX
from ._common import AttackResult, check_inputs, check_positive, input_std
from ._projected import projected_gradient

PAPER_EPS, PAPER_ALPHA = 0.1, 100.0
DEFAULT_EPS = {"paper": PAPER_EPS, "linf": 8 / 255, "l2": 0.5}


def per_image_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) mean cross-entropy over each image's non-ignored pixels."""
    ce = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (labels != IGNORE_INDEX).flatten(1).sum(1).clamp_min(1)
    return ce.flatten(1).sum(1) / valid


def best_of(results: list[AttackResult]) -> AttackResult:
    """Per image, the result with the highest final success (the first on ties); ``iterations``
    counts the forward/backward passes of every restart."""
    best = results[0]
    for other in results[1:]:
        better = other.success > best.success
        pick = lambda a, b: torch.where(better.view(-1, *[1] * (a.dim() - 1)), b, a)  # noqa: E731
        history = {k: torch.where(better.view(1, -1), other.history[k], v) for k, v in best.history.items()}
        params = {**best.params, "iterations": [a + b for a, b in zip(best.params["iterations"],
                                                                      other.params["iterations"])]}
        best = AttackResult(pick(best.adv, other.adv), history, params, pick(best.pred, other.pred),
                            torch.where(better, other.success, best.success))
    return best


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 50,
        mode: Literal["paper", "linf", "l2"] = "paper", targeted: bool = True, eps: float | None = None,
        alpha: float | None = None, clip: bool | None = None, random_start: bool = False, restarts: int = 1,
        adv_threshold: float | None = None, generator: torch.Generator | None = None,
        progress: bool = False) -> AttackResult:
    """PGD on a batch of [0,1] images toward (targeted) or away from ``labels`` (B,H,W).

    Defaults per mode: paper ``eps=0.1, alpha=100`` (normalised space, raw gradient, no clip);
    linf ``eps=8/255, alpha=2.5*eps/steps``; l2 ``eps=0.5, alpha=2.5*eps/steps`` (pixel space, clip).
    History: ``loss`` (per-image CE before each update) and ``success`` (fraction of pixels at the
    target, or off the label when untargeted, from the same logits).
    """
    check_inputs(images, labels)
    if mode not in DEFAULT_EPS:
        raise ValueError(f"mode must be 'paper', 'linf' or 'l2', got {mode!r}")
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if restarts < 1 or (restarts > 1 and not random_start):
        raise ValueError(f"restarts must be >= 1, and > 1 only with random_start (got {restarts})")
    paper = mode == "paper"
    eps = DEFAULT_EPS[mode] if eps is None else eps
    alpha = (PAPER_ALPHA if paper else 2.5 * eps / steps) if alpha is None else alpha
    clip = (not paper) if clip is None else clip
    check_positive(eps=eps, alpha=alpha)
    params: dict[str, Any] = {"attack": "pgd", "mode": mode, "targeted": targeted, "steps": steps, "eps": eps,
                              "alpha": alpha, "clip": clip, "random_start": random_start, "restarts": restarts,
                              "adv_threshold": adv_threshold,
                              "space": "imagenet-normalised" if paper else "[0,1] pixels",
                              "step_rule": "raw gradient" if paper else ("sign of gradient" if mode == "linf"
                                                                          else "L2-normalised gradient")}
    runs = [projected_gradient(
        model, images, labels, lambda logits, y, _, __: per_image_ce(logits, y), targeted=targeted, steps=steps,
        eps=eps, alpha=alpha, norm="l2" if mode == "l2" else "linf", raw_gradient=paper,
        scale=input_std(model, images) if paper else None, clip=clip, random_init=random_start,
        generator=generator, adv_threshold=adv_threshold, progress=progress, params=dict(params))
        for _ in range(restarts)]
    return best_of(runs)


def targeted_pgd(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> AttackResult:
    """The paper's targeted PGD: :func:`pgd` with ``targeted=True`` (see its parameters)."""
    return pgd(model, images, targets, targeted=True, **kwargs)
