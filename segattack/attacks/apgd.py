"""APGD for segmentation (Croce and Hein 2020, as the SEA authors run it per image), L-inf and L2.

From x^(0) (the clean image, or a random point of the ball) with step size eta = 2 eps per image,
each iteration k takes a projected step and mixes it with the last move (momentum)::

    z^(k+1) = P(x^(k) + eta * s(grad))                     s = sign (L-inf), grad / ||grad||_2 (L2)
    x^(k+1) = P(x^(k) + a (z^(k+1) - x^(k)) + (1 - a)(x^(k) - x^(k-1)))     a = 1 at k = 0, else 0.75

where P projects onto the eps-ball around the clean image and clips to [0,1], and grad is the
gradient of the attack ``loss`` (ascended untargeted, descended targeted; see
:mod:`segattack.attacks.losses`). At checkpoints w_1 = max(0.22 N, 1), then spaced by
max(previous spacing - 0.03 N, 0.06 N) (integer parts, at least 1, as the authors' code), an
image's step size halves, and it restarts from its best point (highest tracked loss) with that
point's gradient, when

1. the tracked loss rose at most ``rho`` (0.75) of the iterations since the last checkpoint, or
2. its step did not halve at the last checkpoint and its best loss has not improved since.

The tracked loss is ``track_loss`` (default: the attack loss itself; SEA steps along masked
losses but tracks plain cross-entropy). Each image returns its iterate with the highest success
(share of pixels off the label untargeted, at the target targeted), the later one on ties, as the
authors keep their lowest-accuracy iterate.

Readings where the SEA authors' ``apgd_train`` differs from the paper or from this library, each
with the option that gives theirs:

- ``checkpoint_rule="paper"`` (default): the first checkpoint compares the first iteration's loss
  with the start's (the paper's rule). Their code compares it with an unfilled zero, which counts
  it as a rise whenever the tracked loss is positive (``"authors"``). The iterates agree unless the
  first step lowers the tracked loss, as it often does from a high-loss start (SEA's later stages).
- ``early_stop="image"`` (default): ``adv_threshold`` stops each image once it reaches that
  success, so an image's result never depends on the rest of its batch. Their ``early_stop`` stops
  the whole batch once every image's best iterate reaches it (``"batch"``, with
  ``adv_threshold=1.0``); the images stopped first then keep iterating.
- Accuracy is over labelled pixels at every iterate; theirs counts ignored pixels as wrong at the
  start and as right afterwards, which can pin their choice to the start on images with ignored
  pixels.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..metrics import predict_classes
from ._common import (
    AttackResult,
    SampleTracker,
    check_inputs,
    check_positive,
    finish,
    guard_finite,
    guarded,
    success_rate,
)
from ._projected import Norm, _per_sample_l2, project
from ._projected import random_start as random_point
from .losses import LossName, get_loss
from .registry import AttackSpec, register

DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}
CheckpointRule = Literal["paper", "authors"]
EarlyStop = Literal["image", "batch"]


def checkpoint_spacing(steps: int) -> tuple[int, int, int]:
    """(first spacing, shrink per checkpoint, least spacing) of the step-size checkpoints for ``steps``."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


def checkpoints(steps: int) -> list[int]:
    """The iterations (1-based counts of evaluated iterates) at which APGD checks its step size."""
    spacing, shrink, least = checkpoint_spacing(steps)
    out, at = [], spacing
    while at <= steps:
        out.append(at)
        spacing = max(spacing - shrink, least)
        at += spacing
    return out


def check_readings(checkpoint_rule: str, early_stop: str) -> None:
    """One error for an unknown ``checkpoint_rule`` or ``early_stop``."""
    if checkpoint_rule not in ("paper", "authors"):
        raise ValueError(f"checkpoint_rule must be 'paper' or 'authors', got {checkpoint_rule!r}")
    if early_stop not in ("image", "batch"):
        raise ValueError(f"early_stop must be 'image' or 'batch', got {early_stop!r}")


def stalled(
    rises: torch.Tensor,
    spacing: int,
    rho: float,
    halved_last: torch.Tensor,
    best_at_last_check: torch.Tensor,
    best: torch.Tensor,
) -> torch.Tensor:
    """(B,) Croce and Hein's two conditions for halving the step at a checkpoint ``spacing`` iterations
    after the last: the loss rose on at most ``rho * spacing`` of them, or the step did not halve last
    time and the best loss has not improved since."""
    return (rises <= spacing * rho) | (~halved_last & (best_at_last_check >= best))


def _step(
    x: torch.Tensor,
    current: torch.Tensor,
    previous: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor,
    eps: float,
    norm: Norm,
    momentum: float,
) -> torch.Tensor:
    """One APGD update from ``current`` (``previous`` the point the last step left from)."""

    def to_ball(point: torch.Tensor) -> torch.Tensor:
        return (x + project(point - x, eps, norm)).clamp(0, 1)

    direction = grad.sign() if norm == "linf" else grad / _per_sample_l2(grad)
    z = to_ball(current + step_size.view(-1, 1, 1, 1) * direction)
    return to_ball(current + momentum * (z - current) + (1 - momentum) * (current - previous))


def run_apgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    start: torch.Tensor,
    *,
    targeted: bool,
    steps: int,
    eps: float,
    norm: Norm,
    loss: str,
    track_loss: str | None,
    rho: float,
    adv_threshold: float | None,
    progress: bool,
    params: dict[str, Any],
    checkpoint_rule: CheckpointRule = "paper",
    early_stop: EarlyStop = "image",
) -> AttackResult:
    """APGD from ``start`` (already in the ball and in [0,1]); see the module docstring.

    History (steps, B): ``loss`` (attack loss), ``track`` (tracked loss), ``step_size`` (the eta the
    update from that iterate used) and ``success``, at x^(0..steps-1); x^(steps) costs one forward pass.
    """
    x = images.detach()
    loss_fn = get_loss(loss)
    track_fn = loss_fn if track_loss is None else get_loss(track_loss)
    sign = -1.0 if targeted else 1.0
    n = len(x)
    adv, previous = start.detach().clone(), start.detach().clone()
    best_x, best_grad = adv.clone(), torch.zeros_like(x)
    best_adv = adv.clone()
    real = x.new_zeros(n)  # losses and step sizes in the input's precision
    best_track = torch.full_like(real, float("-inf"))
    best_success = torch.full((n,), -1.0, device=x.device)
    last_track, track_at_check = torch.zeros_like(real), torch.zeros_like(real)
    rises = torch.zeros(n, dtype=torch.long, device=x.device)
    halved_last = torch.ones(n, dtype=torch.bool, device=x.device)  # no condition 2 at the first checkpoint
    step_size = torch.full_like(real, 2 * eps)
    spacing, shrink, least = checkpoint_spacing(steps)
    since_check = 0
    per_image = adv_threshold if early_stop == "image" else None
    tracker = SampleTracker(n, x.device, ("loss", "track", "step_size", "success"), per_image, x.dtype)
    for it in tqdm(range(steps + 1), desc=params.get("attack", "apgd"), disable=not progress, leave=False):
        rows = tracker.rows()
        if rows is None:
            break
        last = it == steps
        xa = adv[rows].detach().requires_grad_(not last)
        y = labels[rows]
        logits = model(xa)
        pred = predict_classes(logits.detach())
        value = loss_fn(logits, y, targeted, pred)
        g = None if last else torch.autograd.grad((sign * value).sum(), xa)[0]
        with torch.no_grad():
            guard_finite(it, logits, g, lambda: best_adv, tracker, params)
            track = sign * (value if track_loss is None else track_fn(logits, y, targeted, pred))
            success = success_rate(pred, y, targeted).to(best_success)
            better = success >= best_success[rows]
            best_adv[rows] = torch.where(better.view(-1, 1, 1, 1), xa.detach(), best_adv[rows])
            best_success[rows] = torch.maximum(success, best_success[rows])
            if last or g is None:
                break
            if it == 0:
                improved = torch.ones_like(better)
            else:
                rises[rows] += (track > last_track[rows]).long()
                improved = track > best_track[rows]
            # the authors' first checkpoint reads an unfilled zero where the paper reads the start's loss
            last_track[rows] = torch.zeros_like(track) if it == 0 and checkpoint_rule == "authors" else track
            best_x[rows] = torch.where(improved.view(-1, 1, 1, 1), xa.detach(), best_x[rows])
            best_grad[rows] = torch.where(improved.view(-1, 1, 1, 1), g, best_grad[rows])
            best_track[rows] = torch.where(improved, track, best_track[rows])
            if it == 0:
                track_at_check[rows] = track
            current = xa.detach()
            if it > 0:
                since_check += 1
            if since_check == spacing:  # checkpoint: halve and restart from the best point where stalled
                halve = stalled(rises[rows], spacing, rho, halved_last[rows], track_at_check[rows], best_track[rows])
                halved_last[rows], track_at_check[rows], rises[rows] = halve, best_track[rows], 0
                step_size[rows] = torch.where(halve, step_size[rows] / 2, step_size[rows])
                current = torch.where(halve.view(-1, 1, 1, 1), best_x[rows], current)
                g = torch.where(halve.view(-1, 1, 1, 1), best_grad[rows], g)
                since_check, spacing = 0, max(spacing - shrink, least)
            done = tracker.record(rows, loss=value, track=track * sign, step_size=step_size[rows], success=success)
            moved = _step(x[rows], current, previous[rows], g, step_size[rows], eps, norm, 1.0 if it == 0 else 0.75)
            previous[rows] = current
            adv[rows] = torch.where(done.view(-1, 1, 1, 1), xa.detach(), moved)
            if per_image is None and adv_threshold is not None and it > 0 and best_success.min() >= adv_threshold:
                break  # the authors' whole-batch stop, after at least one step as theirs
    return finish(model, best_adv, labels, targeted, tracker, steps, params)


@guarded
def apgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = True,
    steps: int = 100,
    eps: float | None = None,
    norm: Literal["linf", "l2"] = "linf",
    loss: LossName = "ce",
    track_loss: LossName | None = None,
    rho: float = 0.75,
    random_start: bool = False,
    adv_threshold: float | None = None,
    checkpoint_rule: CheckpointRule = "paper",
    early_stop: EarlyStop = "image",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AttackResult:
    """APGD on a batch of [0,1] images toward (targeted) or away from ``labels`` (B,H,W).

    Defaults: ``eps`` 8/255 (L-inf) or 0.5 (L2) in [0,1] pixels; ``loss="ce"`` tracked by itself;
    ``random_start`` a uniform point of the L-inf ball (a random direction at a uniform radius, L2).
    ``adv_threshold`` (None: every step) stops an image once that share of its pixels is won
    (``early_stop="batch"``: the batch once every image has); ``checkpoint_rule``: see the module
    docstring.
    ``params['iterations']`` counts forward/backward passes; one more forward pass judges the last iterate.
    """
    check_inputs(images, labels)
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if norm not in DEFAULT_EPS:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    get_loss(loss)
    if track_loss is not None:
        get_loss(track_loss)
    eps = DEFAULT_EPS[norm] if eps is None else eps
    check_positive(eps=eps)
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    check_readings(checkpoint_rule, early_stop)
    params: dict[str, Any] = {
        "attack": "apgd",
        "targeted": targeted,
        "steps": steps,
        "eps": eps,
        "norm": norm,
        "loss": loss,
        "track_loss": track_loss or loss,
        "rho": rho,
        "random_start": random_start,
        "adv_threshold": adv_threshold,
        "checkpoint_rule": checkpoint_rule,
        "early_stop": early_stop,
        "space": "[0,1] pixels",
    }
    images = images.detach()
    start = images
    if random_start:
        start = (images + random_point(images.shape, eps, norm, generator, images)).clamp(0, 1)
    return run_apgd(
        model,
        images,
        labels,
        start,
        targeted=targeted,
        steps=steps,
        eps=eps,
        norm=norm,
        loss=loss,
        track_loss=track_loss,
        rho=rho,
        adv_threshold=adv_threshold,
        progress=progress,
        params=params,
        checkpoint_rule=checkpoint_rule,
        early_stop=early_stop,
    )


SPEC = register(
    AttackSpec(
        name="apgd",
        fn=apgd,
        label="APGD",
        paper_steps=100,
        budget=lambda eps, steps, backbone: {"eps": eps, "steps": steps, "norm": "linf"},
    )
)
