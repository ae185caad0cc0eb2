"""SEA, the Segmentation Ensemble Attack (Croce, Singh and Hein 2024), and the per-image worst case
over any attacks' results.

SEA runs APGD (:mod:`segattack.attacks.apgd`) once per loss, ``mask-ce-bal``, ``mask-ce`` and
``js`` (the authors' order), each tracking plain cross-entropy for its step-size checkpoints, and
keeps per image the run that did best. Each run is the authors' ``apgd_largereps`` schedule:
3 stages of int(0.3 N), int(0.3 N) and the remaining iterations at radii 2 eps, 1.5 eps and eps;
the first stage starts from a uniform random point of its (2 eps) ball, each later one from the
previous stage's returned images projected onto its own ball, and each stage restarts APGD's step
size (2 x its radius) and checkpoints. A stage of 0 iterations (N < 4) only projects.
The authors' defaults: N = 300, eps = 8/255 (L-inf), stop once fully won (``adv_threshold=1.0``).
Their ``early_stop`` stops a stage's whole batch once every image is fully won; here each image
stops on its own (``early_stop="image"``), so an image's result never depends on its batch
(``early_stop="batch"`` is theirs). APGD's first checkpoint follows the paper
(``checkpoint_rule="paper"``; ``"authors"`` is their code's): see :mod:`segattack.attacks.apgd`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from ._common import AttackResult, check_inputs, check_positive, guarded
from ._projected import project
from ._projected import random_start as random_point
from .apgd import CheckpointRule, EarlyStop, check_readings, run_apgd
from .losses import LossName, get_loss
from .registry import AttackSpec, register

SEA_LOSSES: tuple[LossName, ...] = ("mask-ce-bal", "mask-ce", "js")
STAGE_SHARES, STAGE_RADII = (0.3, 0.3), (2.0, 1.5, 1.0)


def stage_steps(steps: int) -> list[int]:
    """The iterations of SEA's three stages for a run of ``steps``: int(0.3 N), int(0.3 N), the rest."""
    first = [int(share * steps) for share in STAGE_SHARES]
    return [*first, steps - sum(first)]


def worst_case(results: Sequence[AttackResult], targeted: bool, params: dict[str, Any] | None = None) -> AttackResult:
    """Per image, the result of the attack that did best on it: the highest success, that is the
    highest share of pixels at the target (targeted) or the lowest accuracy to the labels
    (untargeted); the first on ties.

    Every result must come from the same images and labels, and from a ``targeted`` attack exactly
    when ``targeted``. ``adv``, ``pred`` and ``success`` come from each image's chosen result;
    ``history`` holds the results' histories one after another (the keys they all have);
    ``params``: ``members`` (each result's params and per-image success), ``chosen`` (each image's
    member index), ``iterations`` (summed over the members), and ``params`` merged in.
    """
    if not results:
        raise ValueError("worst_case needs at least one result")
    preds, successes = [], []
    for i, result in enumerate(results):
        if not result.success.numel() or not result.pred.numel():
            raise ValueError(f"result {i} has no prediction or success to compare")
        preds.append(result.pred)
        successes.append(result.success)
        if result.params.get("targeted", targeted) != targeted:
            raise ValueError(
                f"result {i} is {'un' if targeted else ''}targeted; worst_case was asked for "
                f"{'' if targeted else 'un'}targeted results"
            )
        if result.adv.shape != results[0].adv.shape:
            raise ValueError(f"result {i} has images {tuple(result.adv.shape)}, result 0 {tuple(results[0].adv.shape)}")
    success = torch.stack(successes)  # (members, B)
    chosen = success.argmax(0)  # the first maximum: the earliest member on ties

    def pick(tensors: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(tensors)
        index = chosen.view(1, -1, *[1] * (stacked.dim() - 2)).expand(1, *stacked.shape[1:])
        return stacked.gather(0, index).squeeze(0)

    keys = [k for k in results[0].history if all(k in r.history for r in results)]
    history = {k: torch.cat([r.history[k] for r in results]) for k in keys}
    iterations = torch.stack([torch.as_tensor(r.params.get("iterations", [0] * len(chosen))) for r in results]).sum(0)
    out = {
        "attack": "worst_case",
        "targeted": targeted,
        **(params or {}),
        "members": [{**r.params, "success": rs.tolist()} for r, rs in zip(results, successes)],
        "chosen": chosen.tolist(),
        "iterations": iterations.tolist(),
    }
    return AttackResult(
        pick([r.adv for r in results]), history, out, pick(preds), success.gather(0, chosen.view(1, -1)).squeeze(0)
    )


def staged_apgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    start: torch.Tensor,
    *,
    targeted: bool,
    steps: int,
    eps: float,
    norm: Literal["linf", "l2"],
    loss: str,
    track_loss: str,
    adv_threshold: float | None,
    progress: bool,
    checkpoint_rule: CheckpointRule = "paper",
    early_stop: EarlyStop = "image",
) -> AttackResult:
    """One SEA member: APGD with ``loss`` over the three stages' radii, from ``start`` (in the 2 eps ball).

    History: the stages' histories one after another; ``params['stages']``: each stage's steps and radius."""
    results, point, stages = [], start, []
    for count, radius in zip(stage_steps(steps), (r * eps for r in STAGE_RADII)):
        point = (images + project(point - images, radius, norm)).clamp(0, 1)
        if count == 0:
            continue
        params = {
            "attack": "apgd",
            "targeted": targeted,
            "steps": count,
            "eps": radius,
            "norm": norm,
            "loss": loss,
            "track_loss": track_loss,
            "adv_threshold": adv_threshold,
        }
        stages.append({"steps": count, "eps": radius})
        result = run_apgd(
            model,
            images,
            labels,
            point,
            targeted=targeted,
            steps=count,
            eps=radius,
            norm=norm,
            loss=loss,
            track_loss=track_loss,
            rho=0.75,
            adv_threshold=adv_threshold,
            progress=progress,
            params=params,
            checkpoint_rule=checkpoint_rule,
            early_stop=early_stop,
        )
        results.append(result)
        point = result.adv
    last = results[-1]
    history = {k: torch.cat([r.history[k] for r in results]) for k in last.history}
    iterations = torch.tensor([r.params["iterations"] for r in results]).sum(0).tolist()
    params = {
        "attack": "apgd",
        "targeted": targeted,
        "steps": steps,
        "eps": eps,
        "norm": norm,
        "loss": loss,
        "track_loss": track_loss,
        "adv_threshold": adv_threshold,
        "checkpoint_rule": checkpoint_rule,
        "early_stop": early_stop,
        "stages": stages,
        "iterations": iterations,
    }
    return AttackResult(last.adv, history, params, last.pred, last.success)


@guarded
def sea(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    targeted: bool = True,
    steps: int = 300,
    eps: float = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    losses: list[LossName] | None = None,
    track_loss: LossName = "ce",
    adv_threshold: float | None = 1.0,
    checkpoint_rule: CheckpointRule = "paper",
    early_stop: EarlyStop = "image",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AttackResult:
    """SEA on a batch of [0,1] images toward (targeted) or away from ``labels`` (B,H,W).

    ``steps`` is each member's iteration count (the authors' ``n_iter``; SEA costs 3 x that);
    ``losses`` the members (default :data:`SEA_LOSSES`), each from its own random start drawn from
    ``generator`` in that order. The authors run L-inf only; ``norm="l2"`` uses the same schedule.
    Returns :func:`worst_case` over the members: ``params['members']`` keeps each member's params
    (its stages among them) and per-image success, ``params['chosen']`` each image's member.
    """
    check_inputs(images, labels)
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    check_positive(eps=eps)
    losses = list(SEA_LOSSES) if losses is None else list(losses)
    if not losses:
        raise ValueError("losses must name at least one loss")
    for name in [*losses, track_loss]:
        get_loss(name)
    check_readings(checkpoint_rule, early_stop)
    images = images.detach()
    members = []
    for loss in losses:
        start = (images + random_point(images.shape, STAGE_RADII[0] * eps, norm, generator, images)).clamp(0, 1)
        members.append(
            staged_apgd(
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
                adv_threshold=adv_threshold,
                progress=progress,
                checkpoint_rule=checkpoint_rule,
                early_stop=early_stop,
            )
        )
    params = {
        "attack": "sea",
        "steps": steps,
        "eps": eps,
        "norm": norm,
        "losses": losses,
        "track_loss": track_loss,
        "adv_threshold": adv_threshold,
        "checkpoint_rule": checkpoint_rule,
        "early_stop": early_stop,
        "stage_steps": stage_steps(steps),
        "stage_eps": [r * eps for r in STAGE_RADII],
        "random_start": True,
        "space": "[0,1] pixels",
    }
    return worst_case(members, targeted, params)


SPEC = register(
    AttackSpec(
        name="sea",
        fn=sea,
        label="SEA",
        paper_steps=300,
        budget=lambda eps, steps, backbone: {"eps": eps, "steps": steps, "norm": "linf"},
    )
)
