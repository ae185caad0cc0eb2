"""DAG, Dense Adversary Generation (Xie et al., ICCV 2017), with per-sample early stopping.

Each iteration takes one normalised step down the summed positive logit margins of the pixels
that are not yet adversarial: ``max_{c != t} z_c - z_t`` toward the target t (targeted), or
``z_y - max_{c != y} z_c`` away from the label y (untargeted); a pixel is adversarial once its
margin is negative. The step is the gradient scaled to L-inf (DAG's own rule) or L2 norm
``gamma``. A sample stops costing forward/backward work once a fraction ``adv_threshold`` of its
pixels is adversarial. The perturbation is unbounded; the image is clipped to [0,1].

``gamma`` is in [0,1] pixel units. Xie et al.'s gamma=0.5 is on 0-255 (Caffe) inputs, so the
paper's step is 0.5/255 here (the default); adv_lib's default gamma=0.5 is the same number in
[0,1] units, a step 255 times larger (pass ``gamma=0.5`` for it). ``unsuccessful`` says what a
sample that never reaches ``adv_threshold`` returns: its last iterate (``"last"``, the default:
the perturbation the attack found, measured like any other) or the clean image (``"clean"``,
adv_lib's reading: it returns only adversarial examples).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from segattack.data.classes import IGNORE_INDEX

from ._common import AttackResult, SampleTracker, check_inputs, check_positive, finish, guard_finite, guarded
from .registry import AttackSpec, register

PAPER_GAMMA = 0.5 / 255  # Xie et al.'s 0.5 on 0-255 inputs, in [0,1] pixel units


def logit_margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """(B,H,W) margin that DAG drives below zero (label/target logit vs. the best other one).

    The best other class is found without gradient and both logits are gathered, so the backward
    pass touches two logits per pixel (``amax`` over a masked copy would cost three more full passes).
    """
    safe = torch.where(labels == IGNORE_INDEX, 0, labels).unsqueeze(1)
    with torch.no_grad():
        rival = logits.scatter(1, safe, float("-inf")).max(1, keepdim=True).indices
    own, other = logits.gather(1, safe).squeeze(1), logits.gather(1, rival).squeeze(1)
    return other - own if targeted else own - other


@guarded
def dag(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 200,
    targeted: bool = True,
    gamma: float = PAPER_GAMMA,
    norm: Literal["linf", "l2"] = "linf",
    adv_threshold: float | None = 0.99,
    unsuccessful: Literal["last", "clean"] = "last",
    progress: bool = False,
) -> AttackResult:
    """DAG on a batch of [0,1] images toward (targeted) or away from ``labels`` (B,H,W).

    History: ``loss`` (summed positive margins) and ``success`` per iteration; a stopped sample's
    entries repeat its last values. ``params['iterations']`` lists each sample's iterations.
    ``adv_threshold=None`` runs every step (and every sample returns its last iterate).
    """
    check_inputs(images, labels)
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if unsuccessful not in ("last", "clean"):
        raise ValueError(f"unsuccessful must be 'last' or 'clean', got {unsuccessful!r}")
    check_positive(gamma=gamma)
    p = float("inf") if norm == "linf" else 2.0
    images = images.detach()
    valid = labels != IGNORE_INDEX
    counts = valid.flatten(1).sum(1).clamp_min(1)
    r = torch.zeros_like(images)
    tracker = SampleTracker(len(images), images.device, ("loss", "success"), adv_threshold)
    params: dict[str, Any] = {
        "attack": "dag",
        "targeted": targeted,
        "steps": steps,
        "gamma": gamma,
        "norm": norm,
        "adv_threshold": adv_threshold,
        "unsuccessful": unsuccessful,
    }
    for step in tqdm(range(steps), desc="dag", disable=not progress, leave=False):
        rows = tracker.rows()
        if rows is None:
            break
        r_a = r[rows].detach().requires_grad_(True)
        logits = model((images[rows] + r_a).clamp(0, 1))
        margin = logit_margin(logits, labels[rows], targeted)
        pixel_adv = (margin < 0) & valid[rows]
        loss = (margin.clamp_min(0) * valid[rows]).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(loss.sum(), r_a)
        with torch.no_grad():
            done = tracker.record(rows, loss=loss, success=pixel_adv.flatten(1).sum(1) / counts[rows])
            guard_finite(step, logits, grad, lambda: (images + r).clamp(0, 1), tracker, params)
            scale = grad.flatten(1).norm(p=p, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            r[rows] = torch.where(done.view(-1, 1, 1, 1), r_a.detach(), r_a.detach() - gamma * grad / scale)
    adv = (images + r).clamp(0, 1)
    if unsuccessful == "clean" and adv_threshold is not None:  # never reached the threshold: clean image
        adv = torch.where(tracker.active.view(-1, 1, 1, 1), images, adv)
    return finish(model, adv, labels, targeted, tracker, steps, params)


# DAG is unbounded by design: the studies give it steps of L-inf size eps/4 and report the norms it reaches.
SPEC = register(
    AttackSpec(
        name="dag",
        fn=dag,
        label="DAG",
        paper_steps=200,
        budget=lambda eps, steps, backbone: {"gamma": eps / 4, "steps": steps},
        compared=True,
        security_curve=False,
    )
)
