"""PDPGD, primal-dual proximal gradient descent (Matyasko and Chau 2021), for segmentation as in
adv_lib: the smallest L2 or L-inf perturbation that wins a share ``adv_threshold`` of an image's pixels.

One constraint per pixel, the logit margin m (label minus best other logit untargeted, best other
minus target targeted; won below 0), and one dual variable per pixel. Each iteration i

1. weights each pixel by softmax([0, lambda]) over the image's constrained pixels (an EMA of
   weight ``dual_ema`` from the second iteration on), so the weights sum below 1 and the rest,
   1 - sum, weighs the norm;
2. takes an Adam step (betas 0.9, 0.999) on sum_pixels weight * softplus(m), of size
   ``primal_lr`` x ``primal_lr_decrease`` ** (i / steps), keeping the image in [0,1];
3. applies the proximal operator of the norm, weighted (1 - sum) / sum, in Adam's metric
   (``proximal_steps`` fixed-point sub-iterations, stopped once they move less than
   ``prox_tolerance`` relatively);
4. raises lambda by sign(m) (a step ``dual_lr`` decaying linearly to ``dual_lr_decrease`` x that),
   clamped to +-log(``dual_min_ratio``).

With ``constraint_masking`` the largest (1 - adv_threshold) share of margins is dropped from the
weights (times i / (steps - 1) with ``mask_decay``). ``random_init`` starts from a uniform point of
that L-inf radius. Defaults are adv_lib's. Among the iterates an image returns the smallest
successful one (before any success, the one winning the most pixels); see
:mod:`segattack.attacks._minimal`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from segattack.data.classes import IGNORE_INDEX

from ..metrics import predict_classes
from ._common import AttackResult, SampleTracker, check_inputs, check_positive, guard_finite, guarded
from ._minimal import (
    MinNorm,
    check_threshold,
    finish_minimal,
    is_better,
    l1_ball_projection,
    lp_norm,
    margins,
    pixel_share,
)
from .registry import AttackSpec, register


def softmax_plus_one(t: torch.Tensor) -> torch.Tensor:
    """Per image, softmax over [0, t (flattened)] without the 0's own entry: weights summing below 1."""
    padded = F.pad(t.flatten(1), (1, 0), value=0.0)
    return padded.softmax(1)[:, 1:].view_as(t)


def _prox(z: torch.Tensor, lam: torch.Tensor, norm: MinNorm) -> torch.Tensor:
    """prox of lam * ||.|| per image (lam (B,1,1,1)), written as adv_lib rounds it."""
    if norm == "l2":
        norms = z.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return z * (lam / -norms + 1).clamp_min(0)
    ones = torch.ones(len(z), device=z.device, dtype=z.dtype)
    return torch.addcmul(z, l1_ball_projection((z / lam).flatten(1), ones).view_as(z), lam, value=-1)


@guarded
def pdpgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = True,
    steps: int = 500,
    norm: MinNorm = "linf",
    adv_threshold: float = 0.99,
    random_init: float = 0.0,
    primal_lr: float = 0.1,
    primal_lr_decrease: float = 0.01,
    dual_ratio_init: float = 1.0,
    dual_lr: float = 0.1,
    dual_lr_decrease: float = 0.1,
    dual_ema: float = 0.9,
    dual_min_ratio: float = 1e-12,
    proximal_steps: int = 5,
    prox_tolerance: float = 1e-2,
    constraint_masking: bool = False,
    mask_decay: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AttackResult:
    """PDPGD on a batch of [0,1] images toward (targeted) or away from ``labels`` (B,H,W).

    History: ``loss`` (the weighted softplus of the margins), ``success`` (share of pixels won),
    ``norm`` (of the iterate's perturbation) and ``step_size`` (the primal step), before each update.
    ``params['perturbation_norm']``: each returned perturbation's norm; ``params['adversarial']``.
    """
    check_inputs(images, labels)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    check_threshold(adv_threshold)
    check_positive(
        primal_lr=primal_lr,
        primal_lr_decrease=primal_lr_decrease,
        dual_ratio_init=dual_ratio_init,
        dual_lr=dual_lr,
        dual_lr_decrease=dual_lr_decrease,
        dual_min_ratio=dual_min_ratio,
        proximal_steps=proximal_steps,
        prox_tolerance=prox_tolerance,
    )
    if not 0 <= dual_ema < 1 or random_init < 0:
        raise ValueError(f"dual_ema must be in [0, 1) and random_init >= 0, got {dual_ema} and {random_init}")
    params: dict[str, Any] = {
        "attack": "pdpgd",
        "targeted": targeted,
        "steps": steps,
        "norm": norm,
        "adv_threshold": adv_threshold,
        "random_init": random_init,
        "primal_lr": primal_lr,
        "primal_lr_decrease": primal_lr_decrease,
        "dual_ratio_init": dual_ratio_init,
        "dual_lr": dual_lr,
        "dual_lr_decrease": dual_lr_decrease,
        "dual_ema": dual_ema,
        "dual_min_ratio": dual_min_ratio,
        "proximal_steps": proximal_steps,
        "prox_tolerance": prox_tolerance,
        "constraint_masking": constraint_masking,
        "mask_decay": mask_decay,
        "space": "[0,1] pixels",
    }
    x = images.detach()
    n, view = len(x), (-1, 1, 1, 1)
    valid = labels != IGNORE_INDEX
    labelled = valid.flatten(1).sum(1)
    r = torch.zeros_like(x)
    if random_init:
        r = ((torch.rand(x.shape, generator=generator) * 2 - 1) * random_init).to(x)
        r = (x + r).clamp(0, 1) - x
    exp_avg, exp_avg_sq = torch.zeros_like(x), torch.zeros_like(x)
    beta1, beta2 = 0.9, 0.999
    log_min = math.log(dual_min_ratio)
    lam = torch.zeros(labels.shape, dtype=torch.float64, device=x.device)
    lam += (labelled.float() * dual_ratio_init).log().neg().view(-1, 1, 1)
    lam[~valid] = float("-inf")
    lam_ema = softmax_plus_one(lam)
    keep, dropped = valid, torch.zeros(labels.shape, device=x.device)
    best_dist, best_share = torch.full((n,), float("inf"), device=x.device), torch.zeros(n, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_adv = x.clone()
    tracker = SampleTracker(n, x.device, ("loss", "success", "norm", "step_size"), None)
    for i in tqdm(range(steps), desc="pdpgd", disable=not progress, leave=False):
        ra = r.detach().requires_grad_(True)
        adv = x + ra
        logits = model(adv)
        pred = predict_classes(logits.detach())
        with torch.no_grad():
            dist = lp_norm(adv - x, norm)
            share = pixel_share(pred, labels, targeted)
            better = is_better(dist, best_dist, share, best_share, found, adv_threshold)
            found |= share >= adv_threshold
            best_dist, best_share = torch.where(better, dist, best_dist), torch.where(better, share, best_share)
            best_adv = torch.where(better.view(view), adv, best_adv)
        m = margins(logits, labels, targeted)
        with torch.no_grad():
            if constraint_masking:
                k = ((1 - adv_threshold) * labelled * (i / (steps - 1) if mask_decay else 1)).long()
                if k.any():
                    ranked = m.detach().masked_fill(~valid, float("-inf")).flatten(1).topk(int(k.max()), dim=1).values
                    kth = ranked.gather(1, (k - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
                    kth = torch.where(k > 0, kth, torch.full_like(kth, float("inf")))
                    keep = valid & (m <= kth.view(-1, 1, 1))
                    dropped = torch.zeros_like(dropped).masked_fill(~keep, float("inf"))
            if i:
                lam_ema = torch.lerp(lam_ema, softmax_plus_one(lam - dropped), 1 - dual_ema)
            weights = lam_ema * keep
        loss = (F.softplus(m) * weights).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(loss.sum(), ra)
        with torch.no_grad():
            guard_finite(i, logits, grad, best_adv, tracker, params)
            step_size = primal_lr * primal_lr_decrease ** (i / steps)
            tracker.record(
                slice(None), loss=loss, success=share, norm=dist, step_size=torch.full((n,), step_size, device=x.device)
            )
            exp_avg = torch.lerp(exp_avg, grad, 1 - beta1)
            exp_avg_sq = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
            correction1, correction2 = 1 - beta1 ** (i + 1), 1 - beta2 ** (i + 1)
            denom = (exp_avg_sq.sqrt() / math.sqrt(correction2)) + 1e-8
            r = torch.addcdiv(r, exp_avg, denom, value=-step_size / correction1)
            r = (x + r).clamp(0, 1) - x
            # proximal Adam: the norm's prox in the metric denom / max(denom), a few fixed-point steps
            psi_max = denom.flatten(1).amax(1)
            weight_sum = weights.flatten(1).sum(1)
            mu = ((1 - weight_sum) / weight_sum).float() * (step_size / psi_max)
            metric = denom / psi_max.view(view)
            z, moved = r, torch.ones(n, device=x.device)
            for _ in range(proximal_steps):
                previous = z
                candidate = _prox(torch.addcmul(z, metric, z - r, value=-1), mu.view(view), norm)
                candidate = (x + candidate).clamp(0, 1) - x
                z = torch.where((moved > prox_tolerance).view(view), candidate, previous)
                moved = (z - previous).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1)
                if (moved < prox_tolerance).all():
                    break
            r = z
            dual_step = dual_lr * ((steps - 1 - i) / (steps - 1) * (1 - dual_lr_decrease) + dual_lr_decrease)
            lam = (lam + dual_step * m.detach().sign() * keep).clamp(log_min, -log_min)
            lam[~valid] = float("-inf")
    return finish_minimal(model, best_adv, x, labels, targeted, tracker, steps, params, norm, adv_threshold)


SPEC = register(AttackSpec(name="pdpgd", fn=pdpgd, label="PDPGD", paper_steps=500, kind="minimal_norm"))
