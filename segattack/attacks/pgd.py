"""PGD for segmentation; targeted by default (the paper's section 2): min CE(g(X+P), Y_t) s.t. |P| <= eps.

Modes:

- ``mode="paper"`` (default) follows the implementation the paper cites (its reference [5]): the
  perturbation lives in ImageNet-*normalised* input space, ``eps=0.1`` and ``alpha=100`` there,
  raw-gradient steps ``P_n = clamp(P_{n-1} - alpha * grad, -eps, eps)``, and the image is *not*
  clipped to the valid range (``clip=False``): X+P can leave [0,1] by up to ``eps * std``. In
  [0,1] pixels this eps is 0.1*std, about 0.0226 (5.8/255). [5] runs 15 iterations on a batch of 4.
- ``mode="linf"``: the conventional attack (torchattacks, adv_lib): eps and step in [0,1] pixel
  space, sign-gradient steps, X+P kept in [0,1], optional uniform random start.
- ``mode="l2"``: per-image L2 ball in [0,1] pixel space, L2-normalised gradient steps.

``reduction`` says how the pixel cross-entropies (``ignore_index=255``) become the loss that is
differentiated. ``"batch"`` (the default in paper mode, [5]'s ``nn.CrossEntropyLoss``): one mean
over every labelled pixel of the whole batch, so with raw-gradient steps an image's step shrinks
as the batch grows (the paper's alpha=100 was tuned at batch 4). ``"image"`` (the default of the
other modes): the sum of per-image means, so each image steps as it would alone (batch-size-free;
sign and L2-normalised steps are the same under both). The recorded ``loss`` history is each
image's mean cross-entropy under both readings. With ``targeted=False`` the attack ascends the
cross-entropy to ``labels`` (true or clean labels). ``restarts > 1`` (with ``random_start``) keeps,
per image, the restart with the highest success. ``adv_threshold`` stops a sample (it leaves the
batch) once that fraction of its pixels is at the target (off the label when untargeted); None,
the default and the paper's setting, runs every step. A stopped sample leaves the batch mean's
denominator unchanged, so the others' steps do not grow.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from segattack.data.classes import IGNORE_INDEX

from ..metrics import IMAGENET_STD
from ._common import AttackResult, check_inputs, check_positive, guarded, input_std
from ._projected import projected_gradient
from .losses import ce_loss
from .registry import AttackSpec, register

PAPER_EPS, PAPER_ALPHA, PAPER_STEPS = 0.1, 100.0, 15
DEFAULT_EPS = {"paper": PAPER_EPS, "linf": 8 / 255, "l2": 0.5}
Reduction = Literal["batch", "image"]


def batch_mean_weights(labels: torch.Tensor) -> torch.Tensor:
    """(B,) weights turning per-image mean cross-entropies into one mean over the batch's labelled
    pixels: ``sum_i w_i * ce_i`` equals ``nn.CrossEntropyLoss(ignore_index=255)`` on the batch."""
    valid = (labels != IGNORE_INDEX).flatten(1).sum(1).to(torch.float32)
    return valid / valid.sum().clamp_min(1)


def best_of(results: list[AttackResult]) -> AttackResult:
    """Per image, the result with the highest final success (the first on ties); ``iterations``
    counts the forward/backward passes of every restart."""
    best = results[0]
    for other in results[1:]:
        better = other.success > best.success
        pick = lambda a, b, better=better: torch.where(better.view(-1, *[1] * (a.dim() - 1)), b, a)
        history = {k: torch.where(better.view(1, -1), other.history[k], v) for k, v in best.history.items()}
        params = {
            **best.params,
            "iterations": [a + b for a, b in zip(best.params["iterations"], other.params["iterations"])],
        }
        best = AttackResult(
            pick(best.adv, other.adv),
            history,
            params,
            pick(best.pred, other.pred),
            torch.where(better, other.success, best.success),
        )
    return best


@guarded
def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int | None = None,
    mode: Literal["paper", "linf", "l2"] = "paper",
    targeted: bool = True,
    eps: float | None = None,
    alpha: float | None = None,
    clip: bool | None = None,
    reduction: Reduction | None = None,
    random_start: bool = False,
    restarts: int = 1,
    init: torch.Tensor | None = None,
    adv_threshold: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AttackResult:
    """PGD on a batch of [0,1] images toward (targeted) or away from ``labels`` (B,H,W).

    Defaults per mode: paper ``steps=15, eps=0.1, alpha=100, reduction="batch"`` (normalised space,
    raw gradient, no clip; [5]'s settings); other modes ``steps=50``;
    linf ``eps=8/255, alpha=2.5*eps/steps``; l2 ``eps=0.5, alpha=2.5*eps/steps`` (pixel space, clip,
    ``reduction="image"``).
    ``init``: a starting perturbation inside the ball (a warm start; see ``projected_gradient``).
    History: ``loss`` (per-image CE before each update) and ``success`` (fraction of pixels at the
    target, or off the label when untargeted, from the same logits).
    """
    check_inputs(images, labels)
    if mode not in DEFAULT_EPS:
        raise ValueError(f"mode must be 'paper', 'linf' or 'l2', got {mode!r}")
    paper = mode == "paper"
    steps = (PAPER_STEPS if paper else 50) if steps is None else steps
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if restarts < 1 or (restarts > 1 and not random_start):
        raise ValueError(f"restarts must be >= 1, and > 1 only with random_start (got {restarts})")
    eps = DEFAULT_EPS[mode] if eps is None else eps
    alpha = (PAPER_ALPHA if paper else 2.5 * eps / steps) if alpha is None else alpha
    clip = (not paper) if clip is None else clip
    reduction = ("batch" if paper else "image") if reduction is None else reduction
    if reduction not in ("batch", "image"):
        raise ValueError(f"reduction must be 'batch' or 'image', got {reduction!r}")
    check_positive(eps=eps, alpha=alpha)
    params: dict[str, Any] = {
        "attack": "pgd",
        "mode": mode,
        "targeted": targeted,
        "steps": steps,
        "eps": eps,
        "alpha": alpha,
        "clip": clip,
        "reduction": reduction,
        "random_start": random_start,
        "restarts": restarts,
        "adv_threshold": adv_threshold,
        "space": "imagenet-normalised" if paper else "[0,1] pixels",
        "step_rule": "raw gradient" if paper else ("sign of gradient" if mode == "linf" else "L2-normalised gradient"),
    }
    runs = [
        projected_gradient(
            model,
            images,
            labels,
            lambda logits, y, _, __: ce_loss(logits, y),
            targeted=targeted,
            steps=steps,
            eps=eps,
            alpha=alpha,
            norm="l2" if mode == "l2" else "linf",
            raw_gradient=paper,
            scale=input_std(model, images) if paper else None,
            clip=clip,
            random_init=random_start,
            init=init,
            generator=generator,
            adv_threshold=adv_threshold,
            weights=batch_mean_weights(labels) if reduction == "batch" else None,
            progress=progress,
            params=dict(params),
        )
        for _ in range(restarts)
    ]
    return best_of(runs)


@guarded
def targeted_pgd(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> AttackResult:
    """The paper's targeted PGD: :func:`pgd` with ``targeted=True`` (see its parameters)."""
    return pgd(model, images, targets, targeted=True, **kwargs)


def _paper_notes(params: dict[str, Any], image_size: int, images: int) -> str | None:
    """The discussion's paragraph on [5]'s protocol, for a paper-mode run."""
    if params.get("mode") != "paper":
        return None
    reduction = params.get("reduction")
    how = (
        "one cross-entropy mean over the batch, as [5]"
        if reduction == "batch"
        else "per-image means summed: each image steps as if alone, B times [5] step"
    )
    return (
        f"[5]'s PGD protocol: {params['steps']} raw-gradient steps of alpha={params['alpha']:g} on a batch of "
        f"{images}, loss reduction `{reduction}` ({how}), eps={params['eps']:g} in normalised space, no clip "
        f"(its images leave [0,1] by up to {params['eps'] * max(IMAGENET_STD):.4f}; figures show them clamped, "
        f"every number uses the unclamped tensor)."
    )


SPEC = register(
    AttackSpec(
        name="pgd",
        fn=pgd,
        label="PGD Attack",
        paper_params=lambda backbone: {"mode": "paper"},
        paper_steps=PAPER_STEPS,
        budget=lambda eps, steps, backbone: {"mode": "linf", "eps": eps, "steps": steps},
        compared=True,
        in_paper=True,
        describe=lambda p: f"mode {p['mode']}, {p.get('reduction', 'image')}-mean CE",
        notes=_paper_notes,
    )
)
