"""A third-party attack, registered through the ``segattack.attacks`` entry point (tests/test_registry.py).

Iterated FGSM toward the targets in an L-inf ball, written with torch and segattack's public API only.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from segattack.attacks import AttackResult, AttackSpec


def toy(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 3,
    eps: float = 8 / 255,
    targeted: bool = True,
    progress: bool = False,
) -> AttackResult:
    """``steps`` sign steps of size eps/steps on the cross-entropy to ``labels``, kept in the eps ball and [0,1]."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    adv, losses, successes = images.detach().clone(), [], []
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = model(adv)
        loss = F.cross_entropy(logits, labels, ignore_index=255, reduction="none").flatten(1).mean(1)
        (grad,) = torch.autograd.grad(loss.sum(), adv)
        with torch.no_grad():
            hit = (logits.argmax(1) == labels).flatten(1).float().mean(1)
            losses.append(loss.detach())
            successes.append(hit if targeted else 1 - hit)
            step = -grad.sign() if targeted else grad.sign()
            adv = (images + (adv + eps / steps * step - images).clamp(-eps, eps)).clamp(0, 1).detach()
    with torch.no_grad():
        pred = model(adv).argmax(1)
    hit = (pred == labels).flatten(1).float().mean(1)
    params = {"attack": "toy", "steps": steps, "eps": eps, "targeted": targeted, "iterations": [steps] * len(images)}
    return AttackResult(
        adv,
        {"loss": torch.stack(losses), "success": torch.stack(successes)},
        params,
        pred,
        hit if targeted else 1 - hit,
    )


SPEC = AttackSpec(
    name="toy",
    fn=toy,
    label="Toy FGSM",
    paper_steps=3,
    budget=lambda eps, steps, backbone: {"eps": eps, "steps": steps},
    compared=True,
)
