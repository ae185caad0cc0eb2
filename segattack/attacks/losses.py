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
- ``mask-ce-bal``: ``mask-ce`` with each pixel weighted by its label's class weight (``mask-ce-bal``),
  so rare classes count more: see :func:`class_weights`.
- ``js``: the Jensen-Shannon divergence between the softmax and the one-hot label, on every
  labelled pixel (``js-avg``). It is bounded by log 2 and its gradient fades on pixels already
  far from the label (untargeted) or at the target (targeted), so it needs no mask.

The authors divide by all H*W pixels instead of the labelled ones: a positive per-image constant,
so sign and L2-normalised steps and every per-image comparison are the same under both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch.nn import functional as F

from segattack.data.classes import IGNORE_INDEX

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


def _classes_last(logits: torch.Tensor) -> bool:
    """Whether (B,C,H,W) ``logits`` hold each pixel's class scores side by side (channels_last memory)."""
    return logits.dim() == 4 and logits.shape[1] > 1 and logits.stride(1) == 1


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(B,H,W) cross-entropy per pixel, 0 where ``labels`` is 255 (ignored).

    Channels_last logits (a channels_last network's, the wrapper's upsampled ones) are read as
    (pixels, classes) rows, a view: PyTorch's CPU log-softmax over the class dim of a channels_last
    tensor is 1.5-2x slower than over contiguous rows (4x21x520x520: 432 against 232 ms forward and
    backward, one thread). NCHW logits go to ``F.cross_entropy`` as they are.
    """
    if _classes_last(logits):
        rows = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        ce = F.cross_entropy(rows, labels.reshape(-1), weight=weight, ignore_index=IGNORE_INDEX, reduction="none")
        return ce.view_as(labels)
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE_INDEX, reduction="none")


def class_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) softmax over the classes, in the layout of ``logits``: over contiguous rows when they
    are channels_last (2x faster there, as :func:`pixel_cross_entropy`)."""
    if _classes_last(logits):
        return logits.permute(0, 2, 3, 1).softmax(-1).permute(0, 3, 1, 2)
    return logits.softmax(1)


def class_norm(scores: torch.Tensor) -> torch.Tensor:
    """(B,H,W) L2 norm of each pixel's (B,C,H,W) class scores, by the kernel faster in their layout:
    ``vector_norm`` over channels_last (9 against 58 ms at 4x21x520x520, one thread), a square-sum
    over NCHW (54 against 127 ms)."""
    return torch.linalg.vector_norm(scores, dim=1) if _classes_last(scores) else scores.square().sum(1).sqrt()


def per_image_mean(pixel_loss: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,H,W) pixel terms (zero where ignored) -> (B,) sums over the image's labelled pixels count."""
    labelled = (labels != IGNORE_INDEX).flatten(1).sum(1).clamp_min(1)
    return pixel_loss.flatten(1).sum(1) / labelled


def ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) mean cross-entropy over each image's labelled pixels."""
    return per_image_mean(pixel_cross_entropy(logits, labels), labels)


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
    ce = pixel_cross_entropy(logits, labels, class_weights)
    return per_image_mean(ce * unsettled(logits, labels, targeted, pred), labels)


def label_frequency_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(B,C) per image, each class's inverse share of the labelled pixels, normalised to sum 1 over
    the classes present (0 for the absent ones): the authors' weighting rule read on the image."""
    valid = labels != IGNORE_INDEX
    flat = torch.where(valid, labels, 0).flatten(1)
    counts = torch.zeros(len(labels), classes, dtype=torch.float64, device=labels.device)
    counts.scatter_add_(1, flat, valid.flatten(1).to(counts.dtype))
    inverse = torch.where(counts > 0, 1 / counts.clamp_min(1), 0)
    return inverse / inverse.sum(1, keepdim=True).clamp_min(1e-300)


def class_weights(labels: torch.Tensor, classes: int) -> torch.Tensor | None:
    """The balanced mask-CE's class weights for ``classes``-class logits: the SEA authors' Pascal VOC
    table (:data:`VOC_CLASS_WEIGHTS`, their ``VOC_WTS``) for 21 classes, (C,); for any other count
    :func:`label_frequency_weights`, (B,C), the rule behind that table (weights proportional to
    1 / the class's pixel share, summing to 1), taken on each image's own labels, so an image's
    loss never depends on the rest of its batch. None: use the VOC table."""
    return None if classes == len(VOC_CLASS_WEIGHTS) else label_frequency_weights(labels, classes)


def balanced_masked_ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) :func:`masked_ce_loss` weighted by :func:`class_weights`."""
    per_image = class_weights(labels, logits.shape[1])
    if per_image is None:
        weights = torch.tensor(VOC_CLASS_WEIGHTS, dtype=logits.dtype, device=logits.device)
        return masked_ce_loss(logits, labels, targeted, pred, weights)
    pixel_weights = per_image.to(logits.dtype).gather(1, torch.where(labels != IGNORE_INDEX, labels, 0).flatten(1))
    ce = pixel_cross_entropy(logits, labels) * pixel_weights.view_as(labels)
    return per_image_mean(ce * unsettled(logits, labels, targeted, pred), labels)


def js_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) mean over labelled pixels of JS(softmax, one-hot label) = (KL(p||m) + KL(q||m)) / 2, m = (p+q)/2.

    With q one-hot at the label y, m is p/2 on every other class, so the divergence depends on
    p_y = exp(-CE) alone: JS = log 2 + (p_y log p_y - (1 + p_y) log(1 + p_y)) / 2 (log 2 at p_y = 0,
    0 at p_y = 1). One cross-entropy pass instead of a softmax, a one-hot and two logs over every
    class, and no 0 * log 0 where a class's probability underflows.
    """
    ce = pixel_cross_entropy(logits, labels)
    p = torch.exp(-ce)
    js = math.log(2) - (ce * p + (1 + p) * torch.log1p(p)) / 2  # p log p = -CE p
    return per_image_mean(js * (labels != IGNORE_INDEX), labels)


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
