"""Target schemes: which image's clean prediction each image is attacked toward.

Targets are defined over the whole image set, so splitting a set into shards never changes an
image's target. ``single`` (the paper's): every image takes the mask of image ``target_index``;
``roll``: image i takes image i+1's, so no image targets itself. The mask is the target image's
clean prediction, or (``target_source="truth"``, [5]'s) its ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

TargetScheme = Literal["single", "roll"]
TARGET_SCHEMES: tuple[str, ...] = ("single", "roll")
# what a target mask is made of: the target image's clean prediction, or its ground truth ([5] attacks
# toward image 1's ground-truth mask)
TARGET_SOURCES: tuple[str, ...] = ("prediction", "truth")


def target_sources(indices: Sequence[int], total: int, scheme: str, target_index: int) -> list[int]:
    """For each image index, the index of the image whose clean prediction is its target."""
    if scheme == "single":
        if not 0 <= target_index < total:
            raise ValueError(f"target_index {target_index} is outside the set of {total} images")
        return [target_index for _ in indices]
    if scheme == "roll":
        if total < 2:
            raise ValueError("the 'roll' target scheme needs at least 2 images")
        return [(i + 1) % total for i in indices]
    raise ValueError(f"target scheme must be one of {', '.join(TARGET_SCHEMES)}, got {scheme!r}")


def target_masks(clean_pred: torch.Tensor, scheme: TargetScheme = "single", target_index: int = 1) -> torch.Tensor:
    """Target masks for a whole set from its clean predictions (B,H,W)."""
    b = clean_pred.shape[0]
    return clean_pred[target_sources(range(b), b, scheme, target_index)].clone()


def attacked_images(count: int, scheme: str, target_index: int) -> list[int]:
    """The images whose numbers Table 1 averages: under the ``single`` scheme the target image
    attacks its own prediction (ASMA leaves it untouched, PGD perturbs it), so it is left out."""
    return [i for i in range(count) if not (scheme == "single" and i == target_index)] or list(range(count))
