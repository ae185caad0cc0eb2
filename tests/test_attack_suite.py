"""Every registered attack: budgets, valid images, untouched inputs, progress toward the target."""

import pytest
import torch
from torch import nn

from segattack.attacks import ATTACKS, cospgd, dag, pgd, segpgd
from segattack.attacks._projected import project
from segattack.attacks.cospgd import cospgd_loss
from segattack.attacks.dag import logit_margin
from segattack.attacks.segpgd import segpgd_loss
from segattack.models.wrapper import wrap_model

BUDGETED = {  # attack -> (kwargs, L-inf bound in [0,1] pixels or None, L2 bound or None)
    "segpgd": ({"eps": 8 / 255, "steps": 12}, 8 / 255, None),
    "cospgd": ({"eps": 8 / 255, "steps": 12}, 8 / 255, None),
    "cospgd_l2": ({"norm": "l2", "eps": 1.0, "steps": 12}, None, 1.0),
    "pgd_l2": ({"mode": "l2", "eps": 1.0, "steps": 12}, None, 1.0),
    "asma_eps": ({"beta": 1e-2, "tau": 1e-2, "eps": 4 / 255, "steps": 12}, 4 / 255, None),
    "dag": ({"steps": 12, "gamma": 0.02}, None, None),
}


def attack_of(name):
    return ATTACKS[name.split("_")[0]]


def targets_for(model, images):
    with torch.no_grad():
        return model(images).argmax(1).roll(1, 0)


@pytest.mark.parametrize("name", sorted(BUDGETED))
def test_budget_validity_inputs_and_progress(tiny_model, scene_inputs, name):
    kwargs, linf, l2 = BUDGETED[name]
    images, _ = scene_inputs
    targets = targets_for(tiny_model, images)
    before_images, before_targets = images.clone(), targets.clone()
    res = attack_of(name)(tiny_model, images, targets, **kwargs)
    assert torch.equal(images, before_images) and torch.equal(targets, before_targets)
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    delta = (res.adv - images).flatten(1)
    if linf is not None:
        assert delta.abs().max() <= linf + 1e-6
    if l2 is not None:
        assert (delta.norm(dim=1) <= l2 + 1e-5).all()
    assert res.success.shape == (4,) and res.pred.shape == targets.shape
    with torch.no_grad():
        assert torch.equal(res.pred, tiny_model(res.adv).argmax(1))
    assert res.success.mean() > res.history["success"][0].mean()  # targeted success rises


@pytest.mark.parametrize("attack", ["pgd", "segpgd", "cospgd", "dag"])
def test_untargeted_mode_moves_away_from_the_labels(tiny_model, scene_inputs, attack):
    images, truth = scene_inputs
    kwargs = {"steps": 10, "targeted": False} | ({"mode": "linf", "eps": 16 / 255} if attack == "pgd" else {})
    kwargs |= {"gamma": 0.05} if attack == "dag" else {}
    res = ATTACKS[attack](tiny_model, images, truth, **kwargs)
    assert res.params["targeted"] is False
    assert res.success.mean() > res.history["success"][0].mean()  # more pixels off the label


class BatchLog(nn.Module):
    """A 1x1 convolution that logs the batch size of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.sizes = nn.Conv2d(3, 21, 1), []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.conv(x)


EARLY_STOP = {
    "pgd": {"mode": "linf"},
    "segpgd": {},
    "cospgd": {},
    "dag": {"gamma": 0.1},
    "asma": {"beta": 1.0, "tau": 0.1},
}


def logged(batch: int):
    """A BatchLog model, a seeded batch and its clean prediction; the log starts empty."""
    torch.manual_seed(0)
    net = BatchLog()
    model = wrap_model(net, normalize=False)
    x = torch.rand(batch, 3, 6, 6)
    with torch.no_grad():
        pred = model(x).argmax(1)
    net.sizes.clear()
    return net, model, x, pred


@pytest.mark.parametrize("attack", sorted(EARLY_STOP))
def test_finished_samples_leave_the_batch(attack):
    net, model, x, pred = logged(3)
    targets = pred.clone()
    targets[2] = (pred[2] + 1) % 21  # only sample 2 needs work; 0 and 1 are already at target
    res = ATTACKS[attack](model, x, targets, steps=5, adv_threshold=1.0, **EARLY_STOP[attack])
    assert res.params["iterations"] == [1, 1, 5]
    assert net.sizes == [3, 1, 1, 1, 1, 3]  # the last pass is the final prediction of the whole batch
    assert torch.equal(res.adv[:2], x[:2])
    assert res.history["success"].shape == (5, 3) and (res.history["success"][:, :2] == 1).all()


@pytest.mark.parametrize("attack", sorted(EARLY_STOP))
def test_without_a_threshold_every_sample_runs_every_step(attack):
    net, model, x, targets = logged(2)  # already at target
    kwargs = EARLY_STOP[attack] | ({"adv_threshold": None} if attack == "dag" else {})
    res = ATTACKS[attack](model, x, targets, steps=3, **kwargs)
    assert res.params["iterations"] == [3, 3] and net.sizes == [2, 2, 2, 2]


def test_history_of_a_batch_that_stops_early_repeats_its_last_row():
    _, model, x, targets = logged(2)
    res = segpgd(model, x, targets, steps=4, adv_threshold=0.5)
    assert res.params["iterations"] == [1, 1]
    assert res.history["loss"].shape == (4, 2) and (res.history["loss"] == res.history["loss"][0]).all()


def test_cospgd_weights_are_the_cosine_to_the_one_hot_label():
    torch.manual_seed(0)
    logits = torch.randn(2, 21, 5, 5, requires_grad=True)
    labels = torch.randint(0, 21, (2, 5, 5))
    labels[0, 0] = 255
    valid = labels != 255
    one_hot = nn.functional.one_hot(torch.where(valid, labels, 0), 21).permute(0, 3, 1, 2).float()
    cos = nn.functional.cosine_similarity(logits.softmax(1), one_hot, dim=1).detach()
    for targeted, weights in ((True, 1 - cos), (False, cos)):
        ce = nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")
        expected = (ce * weights).flatten(1).sum(1) / valid.flatten(1).sum(1)
        ours = cospgd_loss(logits, labels, targeted)
        assert torch.allclose(ours, expected, atol=1e-6)
        (g1,), (g2,) = torch.autograd.grad(ours.sum(), logits), torch.autograd.grad(expected.sum(), logits)
        assert torch.allclose(g1, g2, atol=1e-7)


def authors_cospgd_loss(logits, labels):
    """CosPGD's targeted loss as its authors write it: each pixel's CE times one minus the cosine of
    the *softmax* scores to the one-hot target (a constant of the step), mean per image."""
    one_hot = nn.functional.one_hot(labels, 21).permute(0, 3, 1, 2).float()
    cos = nn.functional.cosine_similarity(logits.softmax(1), one_hot, dim=1).detach()
    return (nn.functional.cross_entropy(logits, labels, reduction="none") * (1 - cos)).flatten(1).mean(1)


def gradient_at_clean(model, images, loss_fn):
    """(B,3,H,W) gradient of the summed per-image losses at the clean images."""
    delta = torch.zeros_like(images, requires_grad=True)
    (grad,) = torch.autograd.grad(loss_fn(model(images + delta)).sum(), delta)
    return grad


def test_cospgd_default_is_the_authors_softmax_cosine(tiny_model, scene_inputs):
    images, _ = scene_inputs
    targets = targets_for(tiny_model, images)
    alpha = 1 / 255
    res = cospgd(tiny_model, images, targets, steps=1, alpha=alpha)
    assert res.params["cosine"] == "softmax"
    with torch.no_grad():
        expected_loss = authors_cospgd_loss(tiny_model(images), targets)
    assert torch.allclose(res.history["loss"][0], expected_loss, rtol=1e-5, atol=0)
    grad = gradient_at_clean(tiny_model, images, lambda z: authors_cospgd_loss(z, targets))
    clear = grad.abs() > 1e-9 * grad.abs().max()  # where no float rounding can flip the sign (flips seen: 3e-12)
    expected = (images - alpha * grad.sign()).clamp(0, 1)
    assert clear.float().mean() > 0.75 and torch.allclose(res.adv[clear], expected[clear], atol=1e-7)


def test_l2_projection_leaves_the_balls_interior_alone():
    torch.manual_seed(0)
    delta = torch.randn(3, 3, 4, 4)
    norms = torch.tensor([0.5, 2.0, 4.0])
    delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * norms.view(-1, 1, 1, 1)
    projected = project(delta, 1.0, "l2")
    assert torch.equal(projected[0], delta[0])  # inside the ball: unchanged
    assert torch.allclose(projected.flatten(1).norm(dim=1), torch.tensor([0.5, 1.0, 1.0]))  # outside: to the sphere
    assert torch.allclose(projected[1:], delta[1:] / norms[1:].view(-1, 1, 1, 1))  # along its own direction


@pytest.mark.parametrize("attack", ["pgd", "cospgd"])
def test_l2_step_is_the_normalised_gradient(tiny_model, scene_inputs, attack):
    """L2 mode: X_1 = X - alpha * g / ||g||_2 per image (targeted), g the gradient of the image's
    loss; a step shorter than eps stays inside the ball, where the projection leaves it alone."""
    images, _ = scene_inputs
    images = images * 0.6 + 0.2  # away from 0 and 1, so no clip acts
    targets = targets_for(tiny_model, images)
    alpha = 0.05
    if attack == "pgd":
        res = pgd(tiny_model, images, targets, steps=1, mode="l2", alpha=alpha)
        loss_fn = lambda z: nn.functional.cross_entropy(z, targets, reduction="none").flatten(1).mean(1)
    else:
        res = cospgd(tiny_model, images, targets, steps=1, norm="l2", alpha=alpha)
        loss_fn = lambda z: authors_cospgd_loss(z, targets)
    assert res.params["eps"] == 0.5  # the default ball, ten steps wide
    grad = gradient_at_clean(tiny_model, images, loss_fn)
    expected = images - alpha * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(res.adv, expected, atol=1e-6)
    assert torch.allclose((res.adv - images).flatten(1).norm(dim=1), torch.full((4,), alpha), atol=1e-5)


def test_dag_margin_and_segpgd_weights_by_hand():
    logits = torch.tensor([[2.0, 0.5, 1.0]]).view(1, 3, 1, 1)
    target = torch.tensor([[[2]]])
    assert logit_margin(logits, target, targeted=True).item() == pytest.approx(1.0)  # 2.0 - 1.0
    assert logit_margin(logits, target, targeted=False).item() == pytest.approx(-1.0)
    ce = -torch.log_softmax(logits, 1)[0, 2, 0, 0]
    # the pixel is not at its target: weight 1 - t/(2T); at t=2 of T=4 that is 0.75
    assert segpgd_loss(logits, target, 2, 4, targeted=True).item() == pytest.approx(0.75 * ce.item())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, t: segpgd(m, x, t, eps=0), "eps must be > 0"),
        (lambda m, x, t: cospgd(m, x, t, norm="l1"), "norm must be"),
        (lambda m, x, t: cospgd(m, x, t, steps=0), "steps must be > 0"),
        (lambda m, x, t: dag(m, x, t, gamma=-1), "gamma must be > 0"),
        (lambda m, x, t: dag(m, x, t, adv_threshold=1.5), "adv_threshold must be in"),
        (lambda m, x, t: segpgd(m, x, t, adv_threshold=0), "adv_threshold must be in"),
    ],
)
def test_bad_hyperparameters(tiny_model, scene_inputs, call, message):
    images, _ = scene_inputs
    with pytest.raises(ValueError, match=message):
        call(tiny_model, images, targets_for(tiny_model, images))
