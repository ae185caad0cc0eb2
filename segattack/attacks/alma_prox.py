"""ALMA prox (Rony et al. 2023, "Proximal splitting adversarial attack for semantic segmentation"):
the smallest L-inf perturbation that wins a share ``adv_threshold`` of an image's pixels.

It minimises ||delta||_inf subject to one constraint per pixel, c = w * DLR <= 0 (the pixel is
won; :func:`~segattack.attacks._minimal.dlr_constraints`, ``logit_tolerance`` added), by an
augmented Lagrangian: each iteration i

1. scales the constraints by w (divided by 1 + ``scale_gamma`` while the image succeeds, by
   1 - ``scale_gamma`` otherwise, kept in [``scale_min``, ``scale_max``]);
2. with ``constraint_masking``, drops the k - 1 largest constraints, k = (1 - adv_threshold) x the
   labelled pixels (times i / (steps - 1) with ``mask_decay``), keeping those up to the k-th largest
   as adv_lib does: about the pixels the threshold lets lose;
3. every ``check_steps`` iterations, multiplies the penalty parameter rho of each pixel by
   ``gamma`` unless it was won since the last check or its constraint fell below ``tau`` times;
4. moves the multipliers mu toward the penalty's derivative P'(c) (an EMA of weight ``alpha``,
   clamped to [1e-12, 1]), from the second iteration on;
5. takes an RMSProp-scaled step on sum P(c) (metric H = sqrt of the bias-corrected EMA of squared
   gradients, weight ``alpha_rms``), of size lr, decayed from the iteration an image first
   succeeds (before half the run; otherwise from half the run) toward ``lr_reduction`` x lr;
6. applies the proximal operator of lr * ||.||_inf in the metric H, restricted to [0,1] images
   (a ternary search on the L-inf radius to 1e-6).

P is ALMA's P2 penalty: mu y + mu rho y^2 + rho^2 y^3 / 6 for y >= 0, mu y / (1 - max(rho, 1) y)
below. ``penalty_grad="exact"`` uses its derivative; ``"adv_lib"`` is adv_lib 0.2.8's backward,
whose y >= 0 branch has mu y in place of mu (zero slope at y = 0 instead of mu). Defaults are
adv_lib's. Among the iterates an image returns the smallest successful one (before any success,
the one winning the most pixels); see :mod:`segattack.attacks._minimal`. The constraints need
3 classes untargeted, 4 targeted (the DLR's z_3, z_4).
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
from ._minimal import check_threshold, dlr_constraints, finish_minimal, is_better, lp_norm, pixel_share
from .registry import AttackSpec, register

PenaltyGrad = Literal["exact", "adv_lib"]


def p2_penalty(y: torch.Tensor, rho: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """ALMA's P2 penalty of a constraint value y (elementwise)."""
    above = mu * y + mu * rho * y**2 + rho**2 * y**3 / 6
    below = mu * y / (1 - rho.clamp_min(1) * y.clamp_max(0))
    return torch.where(y >= 0, above, below)


def p2_derivative(y: torch.Tensor, rho: torch.Tensor, mu: torch.Tensor, reading: PenaltyGrad = "exact") -> torch.Tensor:
    """dP2/dy (``reading="adv_lib"``: adv_lib's backward, mu y for mu on the y >= 0 branch)."""
    first = mu * y if reading == "adv_lib" else mu
    above = first + 2 * mu * rho * y + rho**2 * y**2 / 2
    below = mu / (1 - rho.clamp_min(1) * y.clamp_max(0)) ** 2
    return torch.where(y >= 0, above, below)


def linf_prox_box(
    delta: torch.Tensor,
    lam: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    metric: torch.Tensor,
    tol: float = 1e-6,
    section: float = 1 / 3,
) -> torch.Tensor:
    """argmin_u 1/2 ||u - delta||_H^2 + lam ||u||_inf with lower <= u <= upper (H = ``metric``, lam (B,)).

    Given a radius t the minimiser is delta clipped to the box and to [-t, t]; t is found by a
    ternary search (``section``) on [0, ||clipped delta||_inf] to ``tol``."""
    shape = delta.shape
    delta, metric = delta.flatten(1), metric.flatten(1)
    clipped = delta.clamp(lower.flatten(1), upper.flatten(1))
    hi = clipped.abs().amax(1)
    lo = torch.zeros_like(hi)
    top = hi.max()  # the search count in the tensor's precision, as adv_lib counts it
    searches = int(torch.ceil(torch.log(tol / top) / math.log(1 - section))) if top > tol else 0

    def cost(t: torch.Tensor) -> torch.Tensor:
        u = clipped.clamp(-t.unsqueeze(1), t.unsqueeze(1))
        return torch.addcmul(((u - delta) ** 2 * metric).sum(1), t, 2 * lam)

    for _ in range(searches):
        left, right = torch.lerp(lo, hi, section), torch.lerp(lo, hi, 1 - section)
        go_right = cost(left) >= cost(right)
        lo, hi = torch.where(go_right, left, lo), torch.where(go_right, hi, right)
    t = torch.lerp(lo, hi, 0.5).unsqueeze(1)
    return clipped.clamp(-t, t).view(shape)


@guarded
def alma_prox(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = True,
    steps: int = 500,
    adv_threshold: float = 0.99,
    lr_init: float = 0.001,
    lr_reduction: float = 0.1,
    mu_init: float = 1.0,
    rho_init: float = 0.01,
    check_steps: int = 10,
    tau: float = 0.95,
    gamma: float = 2.0,
    alpha: float = 0.8,
    alpha_rms: float | None = None,
    scale_min: float = 0.1,
    scale_max: float = 1.0,
    scale_init: float = 1.0,
    scale_gamma: float = 0.02,
    logit_tolerance: float = 1e-4,
    constraint_masking: bool = True,
    mask_decay: bool = True,
    penalty_grad: PenaltyGrad = "exact",
    progress: bool = False,
) -> AttackResult:
    """ALMA prox on a batch of [0,1] images toward (targeted) or away from ``labels`` (B,H,W).

    History: ``loss`` (sum of the masked penalties), ``success`` (share of pixels won), ``norm``
    (||delta||_inf) and ``step_size`` (lr after decay), at each iterate before its update.
    ``params['perturbation_norm']``: each returned perturbation's L-inf norm; ``params['adversarial']``.
    """
    check_inputs(images, labels)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    check_threshold(adv_threshold)
    check_positive(
        lr_init=lr_init,
        mu_init=mu_init,
        rho_init=rho_init,
        check_steps=check_steps,
        gamma=gamma,
        scale_min=scale_min,
        scale_init=scale_init,
    )
    if not 0 < lr_reduction <= 1:
        raise ValueError(f"lr_reduction must be in (0, 1], got {lr_reduction}")
    for name, value in (("alpha", alpha), ("alpha_rms", alpha_rms), ("tau", tau), ("scale_gamma", scale_gamma)):
        if value is not None and not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if penalty_grad not in ("exact", "adv_lib"):
        raise ValueError(f"penalty_grad must be 'exact' or 'adv_lib', got {penalty_grad!r}")
    alpha_rms = alpha if alpha_rms is None else alpha_rms
    params: dict[str, Any] = {
        "attack": "alma_prox",
        "targeted": targeted,
        "steps": steps,
        "adv_threshold": adv_threshold,
        "lr_init": lr_init,
        "lr_reduction": lr_reduction,
        "mu_init": mu_init,
        "rho_init": rho_init,
        "check_steps": check_steps,
        "tau": tau,
        "gamma": gamma,
        "alpha": alpha,
        "alpha_rms": alpha_rms,
        "scale_min": scale_min,
        "scale_max": scale_max,
        "scale_init": scale_init,
        "scale_gamma": scale_gamma,
        "logit_tolerance": logit_tolerance,
        "constraint_masking": constraint_masking,
        "mask_decay": mask_decay,
        "penalty_grad": penalty_grad,
        "norm": "linf",
        "space": "[0,1] pixels",
    }
    x = images.detach()
    n, view = len(x), (-1, 1, 1, 1)
    valid = labels != IGNORE_INDEX
    labelled = valid.flatten(1).sum(1)
    delta = torch.zeros_like(x)
    lr = torch.full((n,), lr_init, device=x.device)
    sq_avg = torch.zeros_like(x)
    mu = torch.full(labels.shape, mu_init, device=x.device, dtype=torch.float64)
    rho = torch.full(labels.shape, rho_init, device=x.device, dtype=torch.float64)
    w = torch.full((n,), scale_init, device=x.device)
    best_dist, best_share = torch.full((n,), float("inf"), device=x.device), torch.zeros(n, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_adv = x.clone()
    won_since_check = torch.zeros_like(valid)
    first_success = torch.full((n,), float(steps // 2), device=x.device)
    keep = valid
    previous = torch.zeros(labels.shape, device=x.device)
    tracker = SampleTracker(n, x.device, ("loss", "success", "norm", "step_size"), None)
    for i in tqdm(range(steps), desc="alma_prox", disable=not progress, leave=False):
        d = delta.detach().requires_grad_(True)
        logits = model(x + d)
        if i == 0 and logits.shape[1] < (4 if targeted else 3):
            raise ValueError(
                f"alma_prox needs at least {4 if targeted else 3} classes {'' if targeted else 'un'}targeted "
                f"(its DLR constraints read the 3rd{' and 4th' if targeted else ''} largest logit); "
                f"the model outputs {logits.shape[1]}"
            )
        pred = predict_classes(logits.detach())
        dist = lp_norm(delta, "linf")
        with torch.no_grad():
            won = (pred == labels) if targeted else (pred != labels)
            won_since_check |= won
            share = pixel_share(pred, labels, targeted)
            success = share >= adv_threshold
            better = is_better(dist, best_dist, share, best_share, found, adv_threshold)
            if i < steps // 2:
                first_success = torch.where(~found & success, float(i), first_success)
            found |= success
            best_dist, best_share = torch.where(better, dist, best_dist), torch.where(better, share, best_share)
            best_adv = torch.where(better.view(view), x + delta, best_adv)
            w = (w / torch.where(success, 1 + scale_gamma, 1 - scale_gamma)).clamp(scale_min, scale_max)
        constraints = w.view(-1, 1, 1) * dlr_constraints(logits, labels, targeted, logit_tolerance)
        with torch.no_grad():
            c = constraints.detach()
            if constraint_masking:
                k = ((1 - adv_threshold) * labelled * (i / (steps - 1) if mask_decay else 1)).long()
                if k.any():
                    ranked = c.masked_fill(~valid, float("-inf")).flatten(1).topk(int(k.max()), dim=1).values
                    kth = ranked.gather(1, (k - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
                    kth = torch.where(k > 0, kth, torch.full_like(kth, float("inf")))
                    keep = valid & (c <= kth.view(-1, 1, 1))
            if i == 0:
                previous = c
            elif (i + 1) % check_steps == 0:
                improved = c * keep <= tau * previous
                rho = torch.where(~(won_since_check | improved), gamma * rho, rho)
                previous = c
                won_since_check = torch.zeros_like(won_since_check)
            c64 = c.to(torch.float64)
            if i:
                target_mu = p2_derivative(c64, rho, mu, penalty_grad) * keep
                mu = torch.lerp(mu, target_mu, 1 - alpha).clamp(1e-12, 1)
            slope = p2_derivative(c, rho, mu, penalty_grad) * keep  # at the float32 constraints, as adv_lib
            loss = (p2_penalty(c64, rho, mu) * keep).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(constraints, d, grad_outputs=slope.to(constraints.dtype))
        with torch.no_grad():
            guard_finite(i, logits, grad, best_adv, tracker, params)
            if lr_reduction != 1:  # the decay first, then lr times it: adv_lib's rounding
                tangent = lr_reduction / (1 - lr_reduction) * (steps - first_success).clamp_min(1)
                lam = lr * (tangent / ((i - first_success).clamp_min(0) + tangent))
            else:
                lam = lr
            tracker.record(slice(None), loss=loss, success=share, norm=dist, step_size=lam)
            sq_avg = torch.addcmul(alpha_rms * sq_avg, grad, grad, value=1 - alpha_rms)
            metric = (sq_avg / (1 - alpha_rms ** (i + 1))).sqrt().clamp_min(1e-8)
            delta = linf_prox_box(torch.addcmul(delta, grad, lam.view(view) / metric, value=-1), lam, -x, 1 - x, metric)
    return finish_minimal(model, best_adv, x, labels, targeted, tracker, steps, params, "linf", adv_threshold)


SPEC = register(AttackSpec(name="alma_prox", fn=alma_prox, label="ALMA prox", paper_steps=500, kind="minimal_norm"))
