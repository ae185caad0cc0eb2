"""Targeted PGD for segmentation (the paper's section 2): minimise CE(g(X+P), Y_t) s.t. |P| <= eps.

Two modes:

- ``mode="paper"`` (default) follows the implementation the paper cites (its reference [5]): the
  perturbation lives in ImageNet-*normalised* input space, ``eps=0.1`` and ``alpha=100`` there,
  raw-gradient steps ``P_n = clamp(P_{n-1} - alpha * grad, -eps, eps)``, cross-entropy with
  ``ignore_index=255``, and the image is *not* clipped to the valid range (``clip=False``): X+P can
  leave [0,1] by up to ``eps * std``. In [0,1] pixels this eps is 0.1*std, about 0.0226 (5.8/255).
- ``mode="linf"``: the conventional attack (torchattacks, adv_lib): eps and step in [0,1] pixel
  space, sign-gradient steps, X+P kept in [0,1], optional uniform random start.

The loss is the per-image mean cross-entropy over non-ignored pixels, summed over the batch, so
every sample's step is what it would be alone (with batch 1 this equals [5]'s mean).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..classes import IGNORE_INDEX
from ._common import AttackResult, check_inputs, check_positive, guard_finite, input_std

PAPER_EPS, PAPER_ALPHA = 0.1, 100.0


def per_image_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) mean cross-entropy over each image's non-ignored pixels."""
    ce = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (targets != IGNORE_INDEX).flatten(1).sum(1).clamp_min(1)
    return ce.flatten(1).sum(1) / valid


def targeted_pgd(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, steps: int = 50,
                 mode: Literal["paper", "linf"] = "paper", eps: float | None = None,
                 alpha: float | None = None, clip: bool | None = None, random_start: bool = False,
                 generator: torch.Generator | None = None, progress: bool = False) -> AttackResult:
    """Targeted PGD on a batch of [0,1] images toward ``targets`` (B,H,W).

    Defaults per mode: paper ``eps=0.1, alpha=100`` (normalised space, raw gradient, no clip);
    linf ``eps=8/255, alpha=2.5*eps/steps`` (pixel space, sign step, clip to [0,1]).
    History: ``loss`` (per-image CE before each update) and ``acc_target`` (fraction of pixels
    already at the target, from the same logits).
    """
    check_inputs(images, targets)
    if mode not in ("paper", "linf"):
        raise ValueError(f"mode must be 'paper' or 'linf', got {mode!r}")
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    paper = mode == "paper"
    eps = (PAPER_EPS if paper else 8 / 255) if eps is None else eps
    alpha = (PAPER_ALPHA if paper else 2.5 * eps / steps) if alpha is None else alpha
    clip = (not paper) if clip is None else clip
    check_positive(eps=eps, alpha=alpha)
    params: dict[str, Any] = {"attack": "pgd", "mode": mode, "steps": steps, "eps": eps, "alpha": alpha,
                              "clip": clip, "random_start": random_start,
                              "space": "imagenet-normalised" if paper else "[0,1] pixels",
                              "step_rule": "raw gradient" if paper else "sign of gradient"}

    images = images.detach()
    # Work on the perturbation in the attack's own space: scale = std (normalised) or 1 (pixels).
    scale = input_std(model, images) if paper else torch.ones(1, 3, 1, 1).to(images)
    delta = torch.zeros_like(images)
    if random_start:
        delta = (torch.rand(images.shape, generator=generator, device="cpu").to(images) * 2 - 1) * eps
    if clip:
        delta = (images + delta * scale).clamp(0, 1).sub(images).div(scale)
    history: dict[str, list[torch.Tensor]] = {"loss": [], "acc_target": []}
    for step in tqdm(range(steps), desc="pgd", disable=not progress, leave=False):
        delta.requires_grad_(True)
        logits = model(images + delta * scale)
        loss = per_image_ce(logits, targets)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            valid = targets != IGNORE_INDEX
            history["loss"].append(loss.detach())
            history["acc_target"].append(((logits.argmax(1) == targets) & valid).flatten(1).sum(1)
                                         / valid.flatten(1).sum(1).clamp_min(1))
            guard_finite(step, logits, grad, images + delta.detach() * scale, history, params)
            update = alpha * grad if paper else alpha * grad.sign()
            delta = (delta.detach() - update).clamp(-eps, eps)
            if clip:
                delta = (images + delta * scale).clamp(0, 1).sub(images).div(scale)
    adv = (images + delta * scale).detach()
    return AttackResult(adv, {k: torch.stack(v) for k, v in history.items()}, params)
