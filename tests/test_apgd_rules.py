"""APGD's step-size schedule and tie rules pinned where they show: the checkpoints of 100 and 300
iterations against SEA's code, the first checkpoint's condition 2, which best point a restart reads,
the later iterate on success ties, the step size's precision; SEA's default stop."""

import inspect
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segattack.attacks.apgd import apgd, checkpoints
from segattack.attacks.sea import sea
from segattack.models import wrap_model


def their_checkpoints(n_iter: int) -> list[int]:
    """The iterations (1-based) at which SEA's ``apgd_train`` checks its step size: its counter
    reaches k, k starts at max(int(0.22 N), 1) and shrinks by max(int(0.03 N), 1) to max(int(0.06 N), 1)."""
    k, least, decrease = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    out, counter = [], 0
    for i in range(n_iter):
        counter += 1
        if counter == k:
            out.append(i + 1)
            counter, k = 0, max(k - decrease, least)
    return out


@pytest.mark.parametrize("steps", [12, 100, 300])
def test_a_flat_loss_halves_the_step_at_seas_checkpoints(steps):
    # a model whose output ignores its input: the loss never rises, so every checkpoint halves the step
    flat = nn.Conv2d(3, 21, 1)
    with torch.no_grad():
        flat.weight.zero_()
    model = wrap_model(flat, normalize=False)
    eps = 0.1
    res = apgd(
        model,
        torch.full((1, 3, 2, 2), 0.5),
        torch.zeros(1, 2, 2, dtype=torch.long),
        targeted=False,
        steps=steps,
        eps=eps,
    )
    marks = their_checkpoints(steps)
    assert checkpoints(steps) == marks
    expected, size = [], 2 * eps
    for it in range(steps):
        size = size / 2 if it in marks else size
        expected.append(size)
    assert res.history["step_size"][:, 0].tolist() == pytest.approx(expected)
    halved = sum(mark < steps for mark in marks)  # a checkpoint at the last iteration changes nothing
    assert expected[-1] == pytest.approx(2 * eps / 2**halved)
    assert halved == {12: 10, 100: 8, 300: 8}[steps]  # 0.06 N keeps the late checkpoints apart (1 at 12)


class Scripted(nn.Module):
    """Logits (B,2,H,W) whose class-1 score is ``script[b][t]`` at the t-th call (the last one held)
    plus ``slope`` times the red channel's move from where it is (value unchanged, gradient ``slope``):
    with label 0, image b's cross-entropy at call t is softplus(script[b][t]) exactly."""

    def __init__(self, script: list[list[float]], slope: float = 1e-3) -> None:
        super().__init__()
        self.script, self.slope, self.calls = torch.tensor(script, dtype=torch.float64), slope, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = min(self.calls, self.script.shape[1] - 1)
        self.calls += 1
        red = x[:, 0]
        score = self.script[:, t].to(x).view(-1, 1, 1) + self.slope * (red - red.detach())
        return torch.stack([torch.zeros_like(score), score], 1)


def margin(loss: float) -> float:
    """The class-1 score whose cross-entropy against label 0 is ``loss``."""
    return math.log(math.expm1(loss))


def test_the_first_checkpoint_has_no_condition_2_and_a_restart_reads_the_first_best_point():
    # 23 iterations: the first checkpoint after 5, rho * 5 = 3.75
    # image 0: the loss falls, then rises 4 times without regaining the start's: condition 1 fails,
    #   condition 2 (no improvement since the last checkpoint) does not apply at the first: no halving
    # image 1: the start's loss is met again at iteration 2, never passed; one rise: halve and restart
    #   from the best point, the start (the first to reach the best), with its gradient
    losses = [[5, 1, 2, 3, 4, 4.5], [5, 1, 5, 1, 1, 1]]
    model = Scripted([[margin(v) for v in row] for row in losses])
    x, eps = torch.full((2, 3, 2, 2), 0.5), 0.1
    seen = []
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    res = apgd(model, x, torch.zeros(2, 2, 2, dtype=torch.long), targeted=False, steps=23, eps=eps)
    hook.remove()
    sizes = res.history["step_size"]
    assert sizes[5].tolist() == pytest.approx([2 * eps, eps])
    assert res.history["track"][:6, 0].tolist() == pytest.approx(losses[0])
    # iterates 1-5 sit on the ball's edge (red + eps); image 1 restarts from the start x with momentum
    # against x^(4): x + 0.75 * eps + 0.25 * (x - (x + eps)) = x + eps / 2; image 0 stays on the edge
    assert seen[5][:, 0].unique().tolist() == pytest.approx([0.6])
    assert seen[6][1, 0].unique().tolist() == pytest.approx([0.55])
    assert seen[6][0, 0].unique().tolist() == pytest.approx([0.6])
    # every iterate wins every pixel (class 1 leads): on ties the later iterate is returned
    assert (res.success == 1).all() and torch.equal(res.adv, seen[23])


def test_the_step_size_keeps_the_inputs_precision():
    conv = nn.Conv2d(3, 21, 1).double()
    model = wrap_model(conv, normalize=False)
    x = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = apgd(model, x, torch.zeros(1, 2, 2, dtype=torch.long), targeted=False, steps=3, eps=0.1)
    assert res.history["step_size"].dtype == torch.float64 and res.history["step_size"][0].item() == 2 * 0.1
    assert res.history["loss"].dtype == torch.float64
    with torch.no_grad():
        clean = F.cross_entropy(conv(x), torch.zeros(1, 2, 2, dtype=torch.long)).item()
    assert res.history["loss"][0].item() == pytest.approx(clean, rel=1e-13)  # float32 would be ~1e-8 away


def test_sea_stops_an_image_once_fully_won_by_default(linear_model):
    assert inspect.signature(sea).parameters["adv_threshold"].default == 1.0  # the authors' stop
    images = 0.5 + 0.08 * torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = linear_model(images).argmax(1)
    kwargs = {"targeted": False, "steps": 10, "eps": 0.08}
    default = sea(linear_model, images, labels, generator=torch.Generator().manual_seed(3), **kwargs)
    never = sea(linear_model, images, labels, adv_threshold=None, generator=torch.Generator().manual_seed(3), **kwargs)
    won = default.success == 1
    cost = torch.tensor(default.params["iterations"])
    assert won.any() and (cost[won] < 30).all()  # (an image won early may lose it to a later stage's smaller ball)
    assert never.params["iterations"] == [30] * 4 and default.params["adv_threshold"] == 1.0
