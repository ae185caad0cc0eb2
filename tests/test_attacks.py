import pytest
import torch
from torch import nn

from segattack.attacks import AttackDiverged, asma, targeted_pgd
from segattack.attacks.asma import step_multiplier
from segattack.metrics import IMAGENET_STD, pixel_accuracy
from segattack.models.wrapper import wrap_model


def targets_for(model, images):
    with torch.no_grad():
        pred = model(images).argmax(1)
    return pred.roll(1, 0)


def test_pgd_paper_mode_stays_in_normalised_eps_ball(tiny_model, scene_inputs):
    images, _ = scene_inputs
    before = images.clone()
    model = wrap_model(tiny_model.net, normalize=True)  # ImageNet-normalising wrapper
    res = targeted_pgd(model, images, targets_for(model, images), steps=5)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    delta_norm = (res.adv - images) / std
    assert delta_norm.abs().max() <= 0.1 + 1e-5
    assert delta_norm.abs().max() > 0.09  # raw steps with alpha=100 reach the boundary
    assert (res.adv - images).abs().max() <= 0.1 * 0.229 + 1e-6  # = 5.8/255 in pixels
    assert torch.equal(images, before)  # inputs untouched
    assert res.loss.shape == (5, 4)
    assert res.params["clip"] is False and res.params["eps"] == 0.1 and res.params["alpha"] == 100


def test_pgd_linf_mode_keeps_images_valid(tiny_model, scene_inputs):
    images, _ = scene_inputs
    eps = 4 / 255
    res = targeted_pgd(
        tiny_model,
        images,
        targets_for(tiny_model, images),
        steps=4,
        mode="linf",
        eps=eps,
        random_start=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert (res.adv - images).abs().max() <= eps + 1e-6


def test_pgd_lowers_loss_and_imposes_target(tiny_model, scene_inputs):
    images, _ = scene_inputs
    targets = targets_for(tiny_model, images)
    res = targeted_pgd(tiny_model, images, targets, steps=20, mode="linf", eps=32 / 255)
    assert res.loss[-1].mean() < 0.7 * res.loss[0].mean()
    with torch.no_grad():
        hit = pixel_accuracy(tiny_model(res.adv).argmax(1), targets)
    assert (hit > res.history["success"][0]).all()


def test_asma_step_matches_hand_computation(linear_model):
    model = linear_model
    x = torch.tensor([[0.9, 0.2, 0.1, 0.6], [0.1, 0.8, 0.2, 0.3], [0.1, 0.1, 0.7, 0.2]]).view(1, 3, 2, 2)
    target = torch.tensor([[[1, 1], [2, 0]]])
    # predictions [[0,1],[2,0]]: only pixel (0,0) is off target (0 instead of 1).
    # IoU present: class 0 1/2, class 1 1/2, class 2 1 -> 2/3; alpha = 0.3 * 2/3 + 0.1 = 0.3.
    # eq. (1) gradient: d(logit_1)/dx at pixel (0,0) = W[1] = (0, 1, 0); zero elsewhere.
    res = asma(model, x, target, beta=0.3, tau=0.1, steps=1)
    expected = x.clone()
    expected[0, 1, 0, 0] += 0.3
    assert torch.allclose(res.adv, expected, atol=1e-6)
    assert res.history["step_size"][0].item() == pytest.approx(0.3)
    assert res.history["iou_target"][0].item() == pytest.approx(2 / 3)
    assert res.loss[0].item() == pytest.approx(0.9 * 0 + 0.1)  # logit_1 at (0,0) = green = 0.1


def test_asma_l2_penalty_changes_later_steps_only():
    model = wrap_model(nn.Conv2d(3, 21, 1), normalize=False)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 6)
    target = torch.randint(0, 21, (2, 6, 6))
    plain = asma(model, x, target, beta=1e-2, tau=1e-2, steps=2, clip=False)
    pen = asma(model, x, target, beta=1e-2, tau=1e-2, steps=2, clip=False, l2_penalty=True)
    one = asma(model, x, target, beta=1e-2, tau=1e-2, steps=1, clip=False, l2_penalty=True)
    assert torch.allclose(asma(model, x, target, beta=1e-2, tau=1e-2, steps=1, clip=False).adv, one.adv)
    assert not torch.allclose(plain.adv, pen.adv)


def test_asma_moves_toward_target_and_stays_valid(tiny_model, scene_inputs):
    images, _ = scene_inputs
    targets = targets_for(tiny_model, images)
    res = asma(tiny_model, images, targets, beta=1e-3, tau=1e-3, steps=15)
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert res.history["iou_target"][-1].mean() > res.history["iou_target"][0].mean()


def test_step_multiplier_readings():
    pred = torch.tensor([[[0, 1], [1, 1]]])
    tgt = torch.tensor([[[0, 1], [1, 0]]])
    # present: class0 1/2, class1 2/3; pixel: 3/4
    assert step_multiplier(pred, tgt, 1.0, 0.0).item() == pytest.approx((0.5 + 2 / 3) / 2)
    assert step_multiplier(pred, tgt, 1.0, 0.0, "pixel").item() == pytest.approx(0.75)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": 0.0}, "eps must be > 0"),
        ({"eps": -1.0}, "eps must be > 0"),
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"steps": 0}, "steps must be > 0"),
        ({"mode": "l1"}, "mode must be"),
        ({"restarts": 3}, "only with random_start"),
    ],
)
def test_pgd_bad_hyperparameters(tiny_model, scene_inputs, kwargs, message):
    images, _ = scene_inputs
    with pytest.raises(ValueError, match=message):
        targeted_pgd(tiny_model, images, targets_for(tiny_model, images), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta": -1.0}, "beta must be > 0"),
        ({"beta": 1e-3, "tau": -1e-5}, "tau must be > 0"),
        ({"beta": 1e-3, "steps": -3}, "steps must be > 0"),
        ({"beta": 1e-3, "iou_average": "micro"}, "iou_average must be"),
    ],
)
def test_asma_bad_hyperparameters(tiny_model, scene_inputs, kwargs, message):
    images, _ = scene_inputs
    with pytest.raises(ValueError, match=message):
        asma(tiny_model, images, targets_for(tiny_model, images), **kwargs)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda x, t: (x[:, :1], t), r"\(B,3,H,W\)"),
        (lambda x, t: (x * 2, t), r"must lie in \[0,1\]"),
        (lambda x, t: (x.masked_fill(x > 0.5, float("nan")), t), "NaN"),
        (lambda x, t: (x, t[:, :8]), "target masks must be"),
        (lambda x, t: (x, t + 30), r"hold class id \d+ but the model outputs 21 classes"),
        (lambda x, t: ((x * 255).to(torch.uint8), t), "floating point"),
    ],
)
def test_bad_inputs(tiny_model, scene_inputs, mutate, message):
    images, _ = scene_inputs
    x, t = mutate(images.clone(), targets_for(tiny_model, images))
    for attack in (lambda: targeted_pgd(tiny_model, x, t), lambda: asma(tiny_model, x, t, beta=1e-3)):
        with pytest.raises(ValueError, match=message):
            attack()


class NaNAfter(nn.Module):
    """Returns NaN logits from the ``after``-th call on."""

    def __init__(self, net: nn.Module, after: int) -> None:
        super().__init__()
        self.net, self.after, self.calls = net, after, 0

    def forward(self, x):
        self.calls += 1
        out = self.net(x)
        return out * float("nan") if self.calls > self.after else out


def test_nan_logits_stop_with_partial_result(tiny_model, scene_inputs):
    images, _ = scene_inputs
    targets = targets_for(tiny_model, images)
    for attack in (
        lambda m: targeted_pgd(m, images, targets, steps=10),
        lambda m: asma(m, images, targets, beta=1e-3, steps=10),
    ):
        with pytest.raises(AttackDiverged, match="non-finite logits at iteration 3") as info:
            attack(NaNAfter(tiny_model, 3))
        assert info.value.partial.loss.shape == (3, 4)
        assert torch.isfinite(info.value.partial.adv).all()


def test_attacks_converge_under_bf16_autocast(tiny_model, scene_inputs):
    images, _ = scene_inputs
    targets = targets_for(tiny_model, images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = targeted_pgd(tiny_model, images, targets, steps=15, mode="linf", eps=32 / 255)
        asm = asma(tiny_model, images, targets, beta=1e-3, tau=1e-3, steps=10)
    assert res.adv.dtype == torch.float32 and (res.adv - images).abs().max() <= 32 / 255 + 1e-6
    assert res.loss[-1].mean() < 0.8 * res.loss[0].mean()
    assert asm.history["iou_target"][-1].mean() > asm.history["iou_target"][0].mean()
