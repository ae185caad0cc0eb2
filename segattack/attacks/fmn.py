"""FMN, the Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021), for segmentation: the smallest
L-inf or L2 perturbation that wins a share ``adv_threshold`` of an image's pixels.

FMN alternates a step on the loss with a projection onto an eps-ball whose radius it adapts (the
paper's Algorithm 1, with adv_lib's cosine-annealed step sizes). Each iteration k:

1. the loss L is the sum of the pixels' logit margins m (label minus best other logit untargeted,
   best other minus target targeted; a pixel is won below 0) over the labelled pixels not yet won
   (``loss="masked"``, the segmentation form: every step goes to the pixels still to win) or over
   every labelled pixel (``loss="sum"``: on a one-pixel image, the paper's classification loss);
2. the radius: if the image succeeds (share of won pixels >= adv_threshold), eps <- min(eps (1 - gamma),
   best norm); else if it has succeeded before, eps <- eps (1 + gamma); else eps <- ||delta|| +
   L / ||grad L||_dual, a first-order estimate of the distance to success; eps <= the largest norm
   an image in [0,1] allows;
3. delta <- P_eps(delta - alpha grad L / ||grad L||_2), then the image is clipped to [0,1].

alpha and gamma anneal from ``alpha_init`` and ``gamma_init`` to ``alpha_final`` (alpha_init / 100
by default) and ``gamma_final`` by (1 + cos(pi k / steps)) / 2. ``projection="ball"`` projects onto
the L2 ball; ``"sphere"`` is adv_lib 0.2.8's L2 projection, which rescales delta onto the sphere of
radius eps even from inside. An image returns its smallest successful iterate (the clean image if
none succeeds); see :mod:`segattack.attacks._minimal`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from segattack.data.classes import IGNORE_INDEX

from ..metrics import predict_classes
from ._common import AttackResult, SampleTracker, check_inputs, check_positive, guard_finite, guarded
from ._minimal import MinNorm, check_threshold, finish_minimal, lp_norm, margins, pixel_share
from .registry import AttackSpec, register

FmnLoss = Literal["masked", "sum"]


@guarded
def fmn(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = True,
    steps: int = 100,
    norm: MinNorm = "linf",
    adv_threshold: float = 0.99,
    alpha_init: float = 1.0,
    alpha_final: float | None = None,
    gamma_init: float = 0.05,
    gamma_final: float = 0.001,
    loss: FmnLoss = "masked",
    projection: Literal["ball", "sphere"] = "ball",
    progress: bool = False,
) -> AttackResult:
    """FMN on a batch of [0,1] images toward (targeted) or away from ``labels`` (B,H,W).

    History: ``loss`` (L), ``success`` (share of pixels won), ``norm`` (of the iterate's
    perturbation) and ``epsilon`` (the radius it is then projected onto), before each update.
    ``params['perturbation_norm']``: each returned perturbation's norm; ``params['adversarial']``.
    """
    check_inputs(images, labels)
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if loss not in ("masked", "sum"):
        raise ValueError(f"loss must be 'masked' or 'sum', got {loss!r}")
    if projection not in ("ball", "sphere"):
        raise ValueError(f"projection must be 'ball' or 'sphere', got {projection!r}")
    check_threshold(adv_threshold)
    alpha_final = alpha_init / 100 if alpha_final is None else alpha_final
    check_positive(alpha_init=alpha_init, alpha_final=alpha_final, gamma_init=gamma_init, gamma_final=gamma_final)
    params: dict[str, Any] = {
        "attack": "fmn",
        "targeted": targeted,
        "steps": steps,
        "norm": norm,
        "adv_threshold": adv_threshold,
        "alpha_init": alpha_init,
        "alpha_final": alpha_final,
        "gamma_init": gamma_init,
        "gamma_final": gamma_final,
        "loss": loss,
        "projection": projection,
        "space": "[0,1] pixels",
    }
    x = images.detach()
    n, view = len(x), (-1, 1, 1, 1)
    valid = labels != IGNORE_INDEX
    p, dual = (float("inf"), 1.0) if norm == "linf" else (2.0, 2.0)
    delta = torch.zeros_like(x)
    eps = torch.full((n,), float("inf"), device=x.device)
    worst_norm = torch.maximum(x, 1 - x).flatten(1).norm(p=p, dim=1)
    best_norm, best_adv = worst_norm.clone(), x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    tracker = SampleTracker(n, x.device, ("loss", "success", "norm", "epsilon"), None)
    for k in tqdm(range(steps), desc="fmn", disable=not progress, leave=False):
        cosine = (1 + math.cos(math.pi * k / steps)) / 2
        alpha = alpha_final + (alpha_init - alpha_final) * cosine
        gamma = gamma_final + (gamma_init - gamma_final) * cosine
        d = delta.detach().requires_grad_(True)
        logits = model(x + d)
        pred = predict_classes(logits.detach())
        m = margins(logits, labels, targeted)
        won = (pred == labels) if targeted else (pred != labels)
        counted = valid & ~won if loss == "masked" else valid
        value = (m * counted).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(value.sum(), d)
        with torch.no_grad():
            guard_finite(k, logits, grad, best_adv, tracker, params)
            size = lp_norm(delta, norm)
            share = pixel_share(pred, labels, targeted)
            success = share >= adv_threshold
            smaller = success & (size < best_norm)
            found |= success
            best_norm = torch.where(smaller, size, best_norm)
            best_adv = torch.where(smaller.view(view), x + delta, best_adv)
            to_boundary = value.abs() / grad.flatten(1).norm(p=dual, dim=1).clamp_min(1e-12)
            eps = torch.where(
                success,
                torch.minimum(eps * (1 - gamma), best_norm),
                torch.where(found, eps * (1 + gamma), size + to_boundary),
            )
            eps = torch.minimum(eps, worst_norm)
            tracker.record(slice(None), loss=value, success=share, norm=size, epsilon=eps)
            step = delta - alpha * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            if norm == "linf":
                step = step.clamp(-eps.view(view), eps.view(view))
            else:
                factor = eps.view(view) / step.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
                step = (step * factor).clamp(max=1) if projection == "sphere" else step * factor.clamp(max=1)
            delta = (x + step).clamp(0, 1) - x
    return finish_minimal(model, best_adv, x, labels, targeted, tracker, steps, params, norm, adv_threshold)


SPEC = register(AttackSpec(name="fmn", fn=fmn, label="FMN", paper_steps=100, kind="minimal_norm"))
