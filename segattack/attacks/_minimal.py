"""What the minimal-norm attacks (ALMA prox, PDPGD, FMN) share: norms, the best-iterate rule,
proximal operators and the result's norm record.

A minimal-norm attack succeeds on an image once a share ``adv_threshold`` of its labelled pixels
is at the target (targeted) or off the label (untargeted), adv_lib's reading; among its
iterates it returns the smallest perturbation that succeeds. ``params['perturbation_norm']`` records each
returned perturbation's norm and ``params['adversarial']`` whether it succeeds, so that every
attack can be placed on one "smallest budget that succeeds" axis.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from segattack.data.classes import IGNORE_INDEX

from ._common import AttackResult, SampleTracker, finish
from .dag import logit_margin

MinNorm = Literal["linf", "l2"]


def lp_norm(delta: torch.Tensor, norm: MinNorm) -> torch.Tensor:
    """(B,) the L-inf or L2 norm of each perturbation."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def check_threshold(adv_threshold: float) -> None:
    if not 0 < adv_threshold <= 1:
        raise ValueError(f"adv_threshold must be in (0, 1], got {adv_threshold}")


def is_better(
    dist: torch.Tensor,
    best_dist: torch.Tensor,
    share: torch.Tensor,
    best_share: torch.Tensor,
    found: torch.Tensor,
    adv_threshold: float,
) -> torch.Tensor:
    """(B,) adv_lib's rule for replacing an image's best iterate: a successful one no larger than the
    best, or, before any success, one whose share of won pixels is at least the best's."""
    success = share >= adv_threshold
    return (success & (dist <= best_dist)) | (~found & (share >= best_share.clamp_max(adv_threshold)))


def margins(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """(B,H,W) the logit margin that must go below zero: label minus best other logit (untargeted),
    best other minus target (targeted); ignored pixels read label 0 (mask them)."""
    return logit_margin(logits, labels, targeted)


def dlr_constraints(logits: torch.Tensor, labels: torch.Tensor, targeted: bool, tolerance: float) -> torch.Tensor:
    """(B,H,W) adv_lib's difference-of-logits-ratio constraints (Croce and Hein's DLR, kept positive
    while a pixel is not won): ``+-(z_label - max_other + tolerance) / (z_1 - z_3)`` untargeted,
    ``... / (z_1 - (z_3 + z_4) / 2)`` targeted (z_k the k-th largest logit), signs as adv_lib."""
    own_minus_other = -logit_margin(logits, labels, targeted=True)
    top = logits.topk(4 if targeted else 3, dim=1).values
    scale = top[:, 0] - (top[:, 2] + top[:, 3]) / 2 if targeted else top[:, 0] - top[:, 2]
    ratio = (own_minus_other + tolerance) / (scale + 1e-8)
    return -ratio if targeted else ratio


def l1_ball_projection(x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """(B,N) Euclidean projection of each row onto the L1 ball of its ``radius`` (B,) (Duchi et al. 2008)."""
    outside = x.abs().sum(1) > radius
    if not outside.any():
        return x
    v = x[outside].abs()
    r = radius[outside].unsqueeze(1)
    sorted_v = v.sort(1, descending=True).values
    ranks = torch.arange(1, v.shape[1] + 1, device=x.device, dtype=v.dtype)
    thresholds = (sorted_v.cumsum(1) - r) / ranks
    last = ((thresholds < sorted_v) * (ranks - 1)).amax(1, keepdim=True).long()  # the largest rank still above
    projected = (v - thresholds.gather(1, last)).clamp_min(0).copysign(x[outside])
    out = x.clone()
    out[outside] = projected
    return out


def linf_prox(x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """prox of lam * ||.||_inf per image (lam (B,1,1,1)): x - lam * P_{L1 ball of radius 1}(x / lam) (Moreau)."""
    scaled = (x / lam).flatten(1)
    ones = torch.ones(len(x), device=x.device, dtype=x.dtype)
    return x - lam * l1_ball_projection(scaled, ones).view_as(x)


def l2_prox(x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """prox of lam * ||.||_2 per image: shrink each image's vector toward 0 by lam (block soft threshold)."""
    norms = x.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    return x * (1 - lam / norms).clamp_min(0)


def pixel_share(pred: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """(B,) the share of labelled pixels won (float32), the success of one iterate."""
    valid = labels != IGNORE_INDEX
    won = (pred == labels) if targeted else (pred != labels)
    return (won & valid).flatten(1).sum(1).float() / valid.flatten(1).sum(1).clamp_min(1)


def finish_minimal(
    model: nn.Module,
    best_adv: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    tracker: SampleTracker,
    steps: int,
    params: dict[str, Any],
    norm: MinNorm,
    adv_threshold: float,
) -> AttackResult:
    """:func:`finish`, with ``params['perturbation_norm']`` (each returned perturbation's norm) and
    ``params['adversarial']`` (whether it reaches ``adv_threshold``)."""
    result = finish(model, best_adv, labels, targeted, tracker, steps, params)
    result.params["perturbation_norm"] = lp_norm(result.adv - images, norm).tolist()
    result.params["adversarial"] = (result.success >= adv_threshold).tolist()
    return result
