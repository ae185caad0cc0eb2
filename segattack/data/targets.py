"""Target schemes: which image's clean prediction each image is attacked toward.

Targets are defined over the whole image set, so splitting a set into shards never changes an
image's target. ``single`` (the paper's): every image takes the mask of image ``target_index``;
``roll``: image i takes image i+1's, so no image targets itself. The mask is the target image's
clean prediction, or (``target_source="truth"``, [5]'s) its ground truth. Two schemes take each
image's own mask and change it, for label spaces beyond VOC: ``fixed:CLASS``, every pixel to one
class; ``remove:CLASS``, that class's pixels take the nearest other class (Metzen et al. 2017's
dynamic target: "make the pedestrians vanish"), class 0 where the image holds no other class.
CLASS is a name or an id of the label space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from segattack.data.labels import VOC, LabelSpace

TargetScheme = Literal["single", "roll"]
TARGET_SCHEMES: tuple[str, ...] = ("single", "roll")
CLASS_SCHEMES: tuple[str, ...] = ("fixed", "remove")  # written fixed:CLASS, remove:CLASS
# what a target mask is made of: the target image's clean prediction, or its ground truth ([5] attacks
# toward image 1's ground-truth mask)
TARGET_SOURCES: tuple[str, ...] = ("prediction", "truth")


def check_scheme(scheme: str, space: LabelSpace = VOC) -> str:
    """``scheme`` checked, in its canonical form (``fixed:person`` for ``fixed:15`` on VOC)."""
    kind, colon, name = scheme.partition(":")
    if not colon:
        if scheme in TARGET_SCHEMES:
            return scheme
    elif kind in CLASS_SCHEMES:
        return f"{kind}:{space.names[space.class_id(name)]}"
    raise ValueError(
        f"unknown target_scheme {scheme!r}; choose one of {', '.join(TARGET_SCHEMES)}, fixed:CLASS or remove:CLASS"
    )


def own_mask(scheme: str) -> bool:
    """Whether the scheme changes each image's own mask (fixed:, remove:) rather than take another's."""
    return scheme.partition(":")[0] in CLASS_SCHEMES


def scheme_target(mask: torch.Tensor, scheme: str, space: LabelSpace = VOC) -> torch.Tensor:
    """An image's target under ``scheme`` from the (H,W) mask :func:`target_sources` picked;
    ignored pixels stay ignored."""
    if not own_mask(scheme):
        return mask
    kind, _, name = scheme.partition(":")
    cls = space.class_id(name)
    ignored = mask == space.ignore
    if kind == "fixed":
        return torch.where(ignored, mask, torch.full_like(mask, cls))
    fill = (mask == cls) | ignored  # the pixels to fill (ignore is no class to take), filled from the rest
    if bool(fill.all()):
        return torch.where(mask == cls, torch.zeros_like(mask), mask)
    _, (rows, cols) = ndimage.distance_transform_edt(fill.cpu().numpy(), return_indices=True)
    nearest = mask.new_tensor(mask.cpu().numpy()[rows, cols].astype(np.int64))
    return torch.where(mask == cls, nearest, mask)


def target_sources(indices: Sequence[int], total: int, scheme: str, target_index: int) -> list[int]:
    """For each image index, the index of the image whose clean prediction is its target."""
    if own_mask(scheme):
        return list(indices)
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
