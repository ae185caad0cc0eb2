"""The minimal-norm attacks on images with ignored pixels, and the rules no other test reaches:
success over labelled pixels only, FMN's masked loss and radius cap, ALMA prox's learning-rate decay
start, PDPGD's random start inside [0,1]."""

import math

import pytest
import torch
from torch import nn

from segattack.attacks._minimal import margins, pixel_share
from segattack.attacks.alma_prox import alma_prox
from segattack.attacks.fmn import fmn
from segattack.attacks.pdpgd import pdpgd

# tests/test_minimal_norm.py's four pixels for the 1x1-conv model (class c scores channel c)
X = torch.tensor([[0.7, 0.2, 0.5, 0.3], [0.2, 0.6, 0.3, 0.35], [0.1, 0.3, 0.45, 0.3]]).view(1, 3, 2, 2)


def test_success_counts_labelled_pixels_only():
    pred = torch.tensor([[[1, 1], [0, 2]]])
    labels = torch.tensor([[[255, 255], [0, 1]]])  # two ignored pixels, one kept (0), one won (2 != 1)
    assert pixel_share(pred, labels, targeted=False).tolist() == [0.5]
    assert pixel_share(pred, labels, targeted=True).tolist() == [0.5]
    assert pixel_share(pred, torch.full_like(labels, 255), targeted=False).tolist() == [0.0]


def test_fmn_loss_and_success_leave_ignored_pixels_out(linear_model):
    # pixel 0 at its label 0, pixel 3 (predicted 1) off its label 0: won; pixels 1 and 2 ignored, and
    # pixel 2 (predicted 0) would count as not won if an ignored pixel were read as label 0
    labels = torch.tensor([[[0, 255], [255, 0]]])
    res = fmn(linear_model, X, labels, targeted=False, steps=1, adv_threshold=0.5)
    with torch.no_grad():
        m = margins(linear_model(X), labels, targeted=False)
    assert m[0, 0, 0].item() == pytest.approx(0.5) and m[0, 1, 0].item() == pytest.approx(0.05)
    # masked: only the labelled pixel not yet won (pixel 0) counts
    assert res.history["loss"][0].item() == pytest.approx(0.5)
    assert res.history["success"][0].item() == 0.5  # one of the two labelled pixels won
    summed = fmn(linear_model, X, labels, targeted=False, steps=1, adv_threshold=0.5, loss="sum")
    assert summed.history["loss"][0].item() == pytest.approx((m[0, 0, 0] + m[0, 1, 1]).item())
    # targeted, an ignored pixel is never "at its target" (255): only the mask keeps it out of the loss;
    # pixel 0 (predicted 0) is 0.7 - 0.2 from target 1, pixel 3 is at it, the ignored ones would add 0.4 - 0.05
    targets = torch.tensor([[[1, 255], [255, 1]]])
    toward = fmn(linear_model, X, targets, targeted=True, steps=1, adv_threshold=0.5)
    assert toward.history["loss"][0].item() == pytest.approx(0.5)
    assert toward.history["success"][0].item() == 0.5


def test_fmn_radius_is_capped_at_the_largest_norm_an_image_allows(linear_model):
    # targeted to class 5 (scores -10 everywhere): the boundary estimate, margin / ||grad||_1 ~ 10, is far
    # beyond any image in [0,1]; the radius is the largest L-inf distance to the cube, max(x, 1 - x)
    far = torch.full((1, 2, 2), 5)
    res = fmn(linear_model, X, far, targeted=True, steps=2)
    assert res.history["epsilon"][0].item() == pytest.approx(torch.maximum(X, 1 - X).max().item())
    l2 = fmn(linear_model, X, far, targeted=True, steps=2, norm="l2")
    assert l2.history["epsilon"][0].item() == pytest.approx(torch.maximum(X, 1 - X).norm().item())


class Switching(nn.Module):
    """Logits (B,4,H,W) predicting class 0 until call ``at[b]`` for image b, class 1 from then on."""

    def __init__(self, at: list[float]) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = torch.tensor([float(self.calls >= a) for a in self.at]).to(x).view(-1, 1, 1, 1)
        self.calls += 1
        z = torch.zeros(x.shape[0], 4, *x.shape[2:], dtype=x.dtype) + 0 * x[:, :1]
        return torch.cat([z[:, :1] + 2 * (1 - lead), z[:, 1:2] + 2 * lead, z[:, 2:3] + 1, z[:, 3:] - 1], 1)


def test_alma_prox_decays_its_step_from_the_first_success_before_half_the_run():
    # untargeted against label 0: image b succeeds from iteration at[b]; the decay starts there if that
    # is before half the run (5 of 10), from half the run otherwise (never, or at 6)
    steps, lr, r = 10, 0.001, 0.1
    at = [0, 2, 6, math.inf]
    res = alma_prox(Switching(at), torch.full((4, 3, 2, 2), 0.5), torch.zeros(4, 2, 2, dtype=torch.long),
                    targeted=False, steps=steps, lr_init=lr, lr_reduction=r)  # fmt: skip
    for b, first in enumerate([0, 2, 5, 5]):
        tangent = r / (1 - r) * (steps - first)
        expected = [lr * tangent / (max(i - first, 0) + tangent) for i in range(steps)]
        assert res.history["step_size"][:, b].tolist() == pytest.approx(expected, rel=1e-6), b


def test_pdpgd_random_start_stays_in_the_image_range(linear_model):
    images = torch.tensor([0.0, 0.02, 0.98, 1.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2).contiguous()
    seen = []
    hook = linear_model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        pdpgd(linear_model, images, torch.zeros(1, 2, 2, dtype=torch.long), targeted=False, steps=2,
              random_init=0.3, generator=torch.Generator().manual_seed(0))  # fmt: skip
    finally:
        hook.remove()
    start = seen[0]
    assert start.min() >= 0 and start.max() <= 1 and (start - images).abs().max() > 0.05
    assert (start - images).abs().max() <= 0.3 + 1e-6
