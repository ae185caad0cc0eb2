"""The worst case over registered attacks, per image: ``ensemble:pgd,segpgd,cospgd``.

Each member runs on the whole batch with the ensemble's ``targeted`` and ``steps`` (a member's own
``steps`` in ``member_params`` wins), then :func:`segattack.attacks.sea.worst_case` keeps per image
the member that did best: the highest share of pixels at the target (targeted) or the lowest
accuracy to the labels (untargeted), the first member on ties. Every member's params and per-image
success are kept in ``params['members']``, so a table can show what each one did alone.

The name ``ensemble:A,B,...`` is resolved by the registry (a family), so any registered budget
attack, shipped or a plugin's, can be a member. Minimal-norm attacks are refused: their results
compare on the budget axis (:mod:`segattack.evaluation.budget`), not by success at a fixed budget.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._common import AttackResult, check_inputs, guarded
from .registry import ATTACKS, AttackSpec, Params, register_family
from .sea import worst_case

PREFIX = "ensemble"


def members_of(args: str) -> tuple[str, ...]:
    """The member names of ``ensemble:ARGS``, checked: registered budget attacks, none a family's (an
    ensemble inside an ensemble would run its members twice), no repeats."""
    names = tuple(n.strip() for n in args.split(","))
    if not args.strip() or "" in names:
        raise ValueError(f"{PREFIX}: names its members, comma-separated (e.g. {PREFIX}:pgd,segpgd), got {args!r}")
    nested = next((n for n in names if ":" in n), None)
    if nested is not None:
        raise ValueError(
            f"{PREFIX}:{args}: {nested!r} is not a registered attack; members are single attacks (no ensemble "
            f"inside an ensemble): name each once, e.g. {PREFIX}:pgd,segpgd"
        )
    if len(set(names)) < len(names):
        raise ValueError(f"{PREFIX}:{args} names a member twice")
    for name in names:
        spec = ATTACKS.check(name)
        if spec.kind != "budget":
            raise ValueError(f"{PREFIX}: {name} is a minimal-norm attack; compare it on the budget axis instead")
    return names


@guarded
def ensemble(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    members: Sequence[str],
    member_params: dict[str, dict[str, Any]] | None = None,
    targeted: bool = True,
    steps: int = 50,
    progress: bool = False,
) -> AttackResult:
    """Run every attack in ``members`` on the batch and return their per-image worst case.

    ``member_params[name]``: that member's keywords (its function's defaults otherwise).
    A member without a ``targeted`` keyword is targeted only, and refused when ``targeted`` is
    False.
    """
    check_inputs(images, labels)
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    names = members_of(",".join(members))
    given = dict(member_params or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"member_params names {unknown[0]!r}, which is not a member ({', '.join(names)})")
    calls = []
    for name in names:  # every member's keywords checked before any of them runs
        fn = ATTACKS[name].fn
        keywords = inspect.signature(fn).parameters
        kwargs: Params = {"steps": steps, "progress": progress, **given.get(name, {})}
        if "targeted" in keywords:
            kwargs["targeted"] = targeted
        elif not targeted:
            raise ValueError(f"{name} has no untargeted form, so it cannot be a member of an untargeted ensemble")
        bad = sorted(k for k in kwargs if k not in keywords)
        if bad:
            raise ValueError(f"{name} has no parameter {bad[0]!r}")
        calls.append((name, kwargs))
    results = [ATTACKS[name](model, images, labels, **kwargs) for name, kwargs in calls]
    return worst_case(results, targeted, {"attack": f"{PREFIX}:{','.join(names)}", "steps": steps})


def spec(args: str) -> AttackSpec:
    """The spec of ``ensemble:ARGS``: members' paper values and budget rules, gathered."""
    names = members_of(args)
    specs = [ATTACKS[n] for n in names]

    def run(
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        member_params: dict[str, dict[str, Any]] | None = None,
        targeted: bool = True,
        steps: int = 50,
        progress: bool = False,
    ) -> AttackResult:
        return ensemble(
            model, images, labels, members=names, member_params=member_params, targeted=targeted, steps=steps,
            progress=progress,
        )  # fmt: skip

    def paper_params(backbone: str) -> Params:
        return {"member_params": {s.name: s.paper_params(backbone) for s in specs}}

    budget = None
    if all(s.budget is not None for s in specs):

        def budget(eps: float, steps: int, backbone: str) -> Params:
            return {"member_params": {s.name: s.budget_params(eps, steps, backbone) for s in specs}}

    return AttackSpec(
        name=f"{PREFIX}:{','.join(names)}",
        fn=run,
        label=f"worst of {', '.join(s.label for s in specs)}",
        paper_params=paper_params,
        paper_steps=max(s.paper_steps for s in specs),
        default_steps=max(s.steps_for("default") for s in specs),
        budget=budget,
        security_curve=all(s.security_curve for s in specs),
        describe=lambda params: "members " + ", ".join(names),
    )


register_family(PREFIX, spec)
