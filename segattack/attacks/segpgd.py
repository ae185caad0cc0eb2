"""SegPGD (Gu et al., ECCV 2022): PGD whose pixel loss shifts weight between pixel groups over time.

Untargeted: correctly classified pixels weigh ``1 - lambda_t``, misclassified ones ``lambda_t``,
with ``lambda_t = t / (2T)`` (t = 0..T-1): early iterations push the pixels that still resist,
later ones also hold those already fooled. Targeted (as in the CosPGD authors' implementation):
pixels already at the target weigh ``lambda_t`` and the rest ``1 - lambda_t``. L-inf, [0,1] pixels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..metrics import predict_classes
from ._common import AttackResult, check_inputs, check_positive, guarded
from ._projected import projected_gradient
from .losses import per_image_mean, pixel_cross_entropy
from .registry import AttackSpec, register


def segpgd_loss(
    logits: torch.Tensor, labels: torch.Tensor, step: int, steps: int, targeted: bool, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) SegPGD's reweighted cross-entropy, averaged over each image's labelled pixels
    (``pred``: the prediction from these logits, when the caller has it)."""
    lam = step / (2 * steps)
    ce = pixel_cross_entropy(logits, labels)
    on_label = (predict_classes(logits) if pred is None else pred) == labels
    settled = on_label if targeted else ~on_label  # pixels where the attack already has what it wants
    weights = torch.where(settled, lam, 1 - lam)
    return per_image_mean(ce * weights, labels)


@guarded
def segpgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 20,
    targeted: bool = True,
    eps: float = 8 / 255,
    alpha: float | None = None,
    random_start: bool = False,
    adv_threshold: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AttackResult:
    """SegPGD on a batch of [0,1] images (L-inf ball, sign steps, ``alpha`` default 2.5*eps/steps).

    ``adv_threshold`` (None: every step) stops a sample once that fraction of its pixels is done."""
    check_inputs(images, labels)
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    alpha = 2.5 * eps / steps if alpha is None else alpha
    check_positive(eps=eps, alpha=alpha)
    params: dict[str, Any] = {
        "attack": "segpgd",
        "targeted": targeted,
        "steps": steps,
        "eps": eps,
        "alpha": alpha,
        "random_start": random_start,
        "adv_threshold": adv_threshold,
        "space": "[0,1] pixels",
        "norm": "linf",
    }
    return projected_gradient(
        model,
        images,
        labels,
        lambda z, y, pred, t: segpgd_loss(z, y, t, steps, targeted, pred),
        targeted=targeted,
        steps=steps,
        eps=eps,
        alpha=alpha,
        random_init=random_start,
        generator=generator,
        adv_threshold=adv_threshold,
        progress=progress,
        params=params,
    )


SPEC = register(
    AttackSpec(
        name="segpgd",
        fn=segpgd,
        label="SegPGD",
        paper_steps=20,
        budget=lambda eps, steps, backbone: {"eps": eps, "steps": steps},
        compared=True,
    )
)
