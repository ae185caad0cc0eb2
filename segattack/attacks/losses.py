"""The pixel losses of SEA (Croce, Singh and Hein 2024), each reduced to one number per image.

Every loss is ``loss(logits, labels, targeted=False, pred=None) -> (B,)``: the sum of a per-pixel
term over the pixels it covers, divided by the image's labelled pixels (255 = ignore), a constant
per image, so that a loss never jumps when its pixel mask changes. An untargeted attack ascends it
(``labels`` the true or clean labels); a targeted one descends it (``labels`` the target masks).
``pred`` is the prediction from these logits when the caller already has it.

- ``ce``: plain cross-entropy on every labelled pixel (the authors' ``ce-avg``).
- ``mask-ce``: cross-entropy on the pixels the attack has not yet won: still at their label
  (untargeted) or not yet at their target (targeted) (``mask-ce-avg``). Won pixels stop pulling,
  so the step goes to the pixels that still resist.
- ``mask-ce-bal``: ``mask-ce`` with each pixel weighted by its label's class weight (``mask-ce-bal``;
  the authors' Pascal VOC weights, :data:`VOC_CLASS_WEIGHTS`), so rare classes count more.
- ``js``: the Jensen-Shannon divergence between the softmax and the one-hot label, on every
  labelled pixel (``js-avg``). It is bounded by log 2 and its gradient fades on pixels already
  far from the label (untargeted) or at the target (targeted), so it needs no mask.

The authors divide by all H*W pixels instead of the labelled ones: a positive per-image constant,
so sign and L2-normalised steps and every per-image comparison are the same under both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch.nn import functional as F

from ..classes import IGNORE_INDEX
from ..metrics import predict_classes

LossName = Literal["ce", "mask-ce", "mask-ce-bal", "js"]
PixelLoss = Callable[..., torch.Tensor]

# The SEA authors' class weights for Pascal VOC (their ``VOC_WTS``), background first.
VOC_CLASS_WEIGHTS = (
    0.0007,
    0.0531,
    0.1394,
    0.0500,
    0.0814,
    0.0575,
    0.0256,
    0.0312,
    0.0198,
    0.0626,
    0.0382,
    0.0457,
    0.0212,
    0.0404,
    0.0421,
    0.0089,
    0.0915,
    0.0585,
    0.0366,
    0.0279,
    0.0677,
)


def _per_image(pixel_loss: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,H,W) pixel terms (zero where ignored) -> (B,) sums over the image's labelled pixels count."""
    labelled = (labels != IGNORE_INDEX).flatten(1).sum(1).clamp_min(1)
    return pixel_loss.flatten(1).sum(1) / labelled


def ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) mean cross-entropy over each image's labelled pixels."""
    return _per_image(F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none"), labels)


def unsettled(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,H,W) the labelled pixels the attack has not won: at the label (untargeted), off the target (targeted)."""
    pred = predict_classes(logits.detach()) if pred is None else pred
    at_label = pred == labels
    return (labels != IGNORE_INDEX) & (~at_label if targeted else at_label)


def masked_ce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool = False,
    pred: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) cross-entropy summed over the :func:`unsettled` pixels, per labelled pixel; ``class_weights``
    (C,) scale each pixel by its label's weight."""
    ce = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="none")
    return _per_image(ce * unsettled(logits, labels, targeted, pred), labels)


def balanced_masked_ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) :func:`masked_ce_loss` weighted by the SEA authors' Pascal VOC class weights."""
    if logits.shape[1] != len(VOC_CLASS_WEIGHTS):
        raise ValueError(
            f"mask-ce-bal has weights for {len(VOC_CLASS_WEIGHTS)} classes, the logits have {logits.shape[1]}"
        )
    weights = torch.tensor(VOC_CLASS_WEIGHTS, dtype=logits.dtype, device=logits.device)
    return masked_ce_loss(logits, labels, targeted, pred, weights)


def js_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) mean over labelled pixels of JS(softmax, one-hot label) = (KL(p||m) + KL(q||m)) / 2, m = (p+q)/2."""
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels)).unsqueeze(1)
    log_p = logits.log_softmax(1)
    p = log_p.exp()
    m = (p + F.one_hot(safe.squeeze(1), logits.shape[1]).permute(0, 3, 1, 2).to(p)) / 2
    kl_pm = (p * (log_p - m.log())).sum(1)
    kl_qm = -m.gather(1, safe).squeeze(1).log()  # q is one-hot: only its label's term survives
    return _per_image((kl_pm + kl_qm) / 2 * valid, labels)


LOSSES: dict[str, PixelLoss] = {
    "ce": ce_loss,
    "mask-ce": masked_ce_loss,
    "mask-ce-bal": balanced_masked_ce_loss,
    "js": js_loss,
}


def get_loss(name: str) -> PixelLoss:
    """The loss called ``name``; one error listing the names otherwise."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {name!r}")
    return LOSSES[name]
