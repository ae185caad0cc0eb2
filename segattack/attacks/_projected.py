"""The projected-gradient loop shared by PGD, SegPGD and CosPGD: only their pixel losses differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..metrics import predict_classes
from ._common import AttackResult, SampleTracker, finish, guard_finite, success_rate

# loss_fn(logits, labels, pred, iteration) -> (B,) per-image loss, ``pred`` the prediction from
# these logits; the attack descends it when targeted and ascends it otherwise.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
Norm = Literal["linf", "l2"]


def _per_sample_l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def project(delta: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project a perturbation onto the eps-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_sample_l2(delta)).clamp(max=1.0)


def random_start(
    shape: torch.Size, eps: float, norm: Norm, generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """A uniform point of the L-inf ball, or a random direction at a uniform radius of the L2 ball."""
    if norm == "linf":
        return ((torch.rand(shape, generator=generator) * 2 - 1) * eps).to(like)
    direction = torch.randn(shape, generator=generator)
    radius = torch.rand(shape[0], generator=generator).view(-1, 1, 1, 1) * eps
    return (direction / _per_sample_l2(direction) * radius).to(like)


def check_init(
    init: torch.Tensor,
    images: torch.Tensor,
    eps: float,
    norm: Norm,
    random_init: bool,
    to_valid: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``init`` as the first iterate, refused unless it is a perturbation of the images' shape inside
    the eps-ball that keeps them valid (a warm start is projected by its caller, not here)."""
    if random_init:
        raise ValueError("init and random_start exclude each other: one starting point")
    if not isinstance(init, torch.Tensor) or init.shape != images.shape:
        raise ValueError(f"init must be a perturbation of the images' shape {tuple(images.shape)}")
    init = init.detach().to(images)
    size = init.flatten(1).abs().amax(1) if norm == "linf" else init.flatten(1).norm(dim=1)
    slack = 1e-6 * max(eps, 1.0)
    if bool((size > eps + slack).any()) or not torch.allclose(to_valid(init, images), init, atol=1e-6, rtol=0):
        raise ValueError(
            f"init must lie in the {norm} ball of radius {eps:g} and keep the images valid (largest norm "
            f"{float(size.max()):g}): project it onto the new radius first"
        )
    return init.clone()


def projected_gradient(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: LossFn,
    *,
    targeted: bool,
    steps: int,
    eps: float,
    alpha: float,
    norm: Norm = "linf",
    raw_gradient: bool = False,
    scale: torch.Tensor | None = None,
    clip: bool = True,
    random_init: bool = False,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    adv_threshold: float | None = None,
    weights: torch.Tensor | None = None,
    progress: bool = False,
    params: dict[str, Any],
) -> AttackResult:
    """Iterate ``delta <- project(delta -/+ alpha * step(grad))`` in the attack's own space.

    The image seen by the model is ``images + delta * scale`` (``scale`` maps the attack space to
    [0,1] pixels: 1, or the model's per-channel std for the normalised space). Steps are the sign
    (L-inf), the per-sample L2-normalised gradient (L2), or the raw gradient (``raw_gradient``).
    ``clip`` keeps the image in [0,1]. ``init`` (None: zero, or the random start) is a starting
    perturbation in the attack's space, e.g. the last iterate of a search at another radius: it
    must already lie in the eps-ball and keep the image valid (the caller projects it; an attack
    never evaluates a point outside its ball), else one ValueError. ``adv_threshold`` (None: run
    every step) stops a sample once that fraction of its pixels is at the target (off the label
    when untargeted). ``weights`` (B,) scale each image's loss in the gradient (not in the
    history): None sums them, so each image steps as it would alone.
    History: ``loss`` and ``success`` per iteration and image, from the logits of the step itself.
    """
    images = images.detach()
    scale = torch.ones(1, 3, 1, 1).to(images) if scale is None else scale
    delta = torch.zeros_like(images)
    if random_init:
        delta = random_start(images.shape, eps, norm, generator, images)

    def to_valid(d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x + d * scale).clamp(0, 1).sub(x).div(scale) if clip else d

    delta = to_valid(delta, images) if init is None else check_init(init, images, eps, norm, random_init, to_valid)
    tracker = SampleTracker(len(images), images.device, ("loss", "success"), adv_threshold)
    for step in tqdm(range(steps), desc=params.get("attack", "attack"), disable=not progress, leave=False):
        rows = tracker.rows()
        if rows is None:
            break
        x, y, d = images[rows], labels[rows], delta[rows].detach().requires_grad_(True)
        logits = model(x + d * scale)
        pred = predict_classes(logits.detach())
        loss = loss_fn(logits, y, pred, step)
        objective = loss if weights is None else loss * weights[rows]
        (grad,) = torch.autograd.grad(objective.sum(), d)
        with torch.no_grad():
            done = tracker.record(rows, loss=loss, success=success_rate(pred, y, targeted))
            guard_finite(step, logits, grad, lambda: images + delta * scale, tracker, params)
            direction = -grad if targeted else grad
            if raw_gradient:
                update = alpha * direction
            elif norm == "linf":
                update = alpha * direction.sign()
            else:
                update = alpha * direction / _per_sample_l2(direction)
            moved = to_valid(project(d.detach() + update, eps, norm), x)
            delta[rows] = torch.where(done.view(-1, 1, 1, 1), d.detach(), moved)
    return finish(model, images + delta * scale, labels, targeted, tracker, steps, params)
