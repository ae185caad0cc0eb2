"""Cross-checks of the minimal-norm attacks against adv_lib 0.2.8 on the same trained model: under
adv_lib's readings our attacks take adv_lib's iterates."""

import importlib

import pytest
import torch
from torch import nn

from segattack.attacks.alma_prox import alma_prox
from segattack.attacks.fmn import fmn
from segattack.attacks.pdpgd import pdpgd
from segattack.models.wrapper import wrap_model

segmentation = pytest.importorskip("adv_lib.attacks.segmentation")
fast_minimum_norm = pytest.importorskip("adv_lib.attacks.fast_minimum_norm")


@pytest.fixture(scope="module")
def batch(tiny_model, scene_inputs):
    images, labels = scene_inputs
    with torch.no_grad():
        targets = tiny_model(images).argmax(1).roll(1, 0)
    return images, labels, targets


def iterates(model, run):
    """The inputs of every forward pass ``run`` makes, and its result."""
    seen = []
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        out = run()
    finally:
        hook.remove()
    return seen, out


@pytest.fixture
def uncompiled_alma_prox(monkeypatch):
    """adv_lib's alma_prox with its prox uncompiled: adv_lib wraps it in torch.compile, which takes
    minutes on a CPU; the function inside is the same."""
    module = importlib.import_module("adv_lib.attacks.segmentation.alma_prox")
    monkeypatch.setattr(module, "prox_linf_indicator", module.prox_linf_indicator._torchdynamo_orig_callable)
    return module.alma_prox


@pytest.mark.parametrize("targeted", [False, True])
def test_alma_prox_takes_adv_libs_iterates(tiny_model, batch, uncompiled_alma_prox, targeted):
    images, labels, targets = batch
    y = targets if targeted else labels
    steps = 25  # rho checks every 5 iterations; constraint masking from the third; lr decay past the 13th
    kwargs = {"lr_init": 0.01, "check_steps": 5}
    theirs, their_adv = iterates(
        tiny_model, lambda: uncompiled_alma_prox(tiny_model, images, y, targeted=targeted, num_steps=steps, **kwargs)
    )
    ours, res = iterates(
        tiny_model,
        lambda: alma_prox(tiny_model, images, y, targeted=targeted, steps=steps, penalty_grad="adv_lib", **kwargs),
    )
    assert (theirs[-1] - images).abs().max() > 0.05  # far from the clean images
    assert len(theirs) == steps and len(ours) == steps + 1  # ours judges the returned images once more
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert torch.equal(a, b), f"iterate {i}"  # bit for bit, the step size's decay included
    assert torch.equal(res.adv, their_adv)
    exact = alma_prox(tiny_model, images, y, targeted=targeted, steps=steps, **kwargs)
    assert (exact.adv - res.adv).abs().max() > 1e-3  # the derivative reading matters


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("masking", [False, True])
def test_pdpgd_takes_adv_libs_iterates(tiny_model, batch, norm, targeted, masking):
    images, labels, targets = batch
    y = targets if targeted else labels
    steps = 12
    # dual_lr 1: the L2 run leaves zero within these steps (with 0.1 its prox keeps it there)
    kwargs = {"constraint_masking": masking, "mask_decay": masking, "dual_lr": 1.0}
    theirs, their_adv = iterates(
        tiny_model,
        lambda: segmentation.pdpgd(
            tiny_model,
            images,
            y,
            norm=float("inf") if norm == "linf" else 2,
            targeted=targeted,
            num_steps=steps,
            **kwargs,
        ),
    )
    ours, res = iterates(
        tiny_model, lambda: pdpgd(tiny_model, images, y, norm=norm, targeted=targeted, steps=steps, **kwargs)
    )
    assert (theirs[-1] - images).flatten(1).norm(dim=1).min() > 0.1  # every image moved
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert torch.allclose(a, b, atol=1e-5), f"iterate {i}"
    assert torch.allclose(res.adv, their_adv, atol=1e-5)


@pytest.fixture(scope="module")
def one_pixel():
    """A random two-layer 1x1-conv net on eight one-pixel images: segmentation with one pixel is
    classification, where adv_lib has FMN."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 1), nn.Tanh(), nn.Conv2d(32, 21, 1))
    model = wrap_model(net, normalize=False)
    x = torch.rand(8, 3, 1, 1)
    with torch.no_grad():
        logits = model(x)
    return model, x, logits.argmax(1), logits.topk(3, dim=1).indices[:, 2]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_fmn_on_one_pixel_takes_adv_libs_classification_iterates(one_pixel, norm, targeted):
    model, x, pred, third = one_pixel
    y = third if targeted else pred  # targeted: each image's third most likely class
    steps = 30
    theirs, their_adv = iterates(
        model,
        lambda: fast_minimum_norm.fmn(
            lambda t: model(t)[:, :, 0, 0],
            x,
            y.flatten(),
            norm=float("inf") if norm == "linf" else 2,
            targeted=targeted,
            steps=steps,
        ),
    )
    # adv_lib's readings: every pixel's margin (one pixel here) and its L2 rescaling onto the sphere
    ours, res = iterates(
        model,
        lambda: fmn(
            model, x, y, targeted=targeted, norm=norm, steps=steps, loss="sum", projection="sphere", adv_threshold=1.0
        ),
    )
    assert all(res.params["adversarial"]) and min(res.params["perturbation_norm"]) > 0.01
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert torch.allclose(a, b, atol=1e-6), f"iterate {i}"
    assert torch.allclose(res.adv, their_adv, atol=1e-6)
