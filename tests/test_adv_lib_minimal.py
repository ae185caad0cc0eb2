"""Cross-checks of the minimal-norm attacks against adv_lib 0.2.8 on the same trained model: under
adv_lib's readings our attacks take adv_lib's iterates."""

import importlib

import pytest
import torch

from segattack.attacks.alma_prox import alma_prox
from segattack.attacks.pdpgd import pdpgd

segmentation = pytest.importorskip("adv_lib.attacks.segmentation")


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
    steps = 15  # rho checks every 5 iterations; constraint masking from the third iteration
    kwargs = {"lr_init": 0.01, "check_steps": 5}
    theirs, their_adv = iterates(tiny_model, lambda: uncompiled_alma_prox(tiny_model, images, y, targeted=targeted,
                                                                          num_steps=steps, **kwargs))
    ours, res = iterates(tiny_model, lambda: alma_prox(tiny_model, images, y, targeted=targeted, steps=steps,
                                                       penalty_grad="adv_lib", **kwargs))
    assert (theirs[-1] - images).abs().max() > 0.05  # far from the clean images
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert torch.allclose(a, b, atol=1e-5), f"iterate {i}"
    assert torch.allclose(res.adv, their_adv, atol=1e-5)
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
    theirs, their_adv = iterates(tiny_model, lambda: segmentation.pdpgd(
        tiny_model, images, y, norm=float("inf") if norm == "linf" else 2, targeted=targeted, num_steps=steps,
        **kwargs))
    ours, res = iterates(tiny_model, lambda: pdpgd(tiny_model, images, y, norm=norm, targeted=targeted, steps=steps,
                                                   **kwargs))
    assert (theirs[-1] - images).flatten(1).norm(dim=1).min() > 0.1  # every image moved
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert torch.allclose(a, b, atol=1e-5), f"iterate {i}"
    assert torch.allclose(res.adv, their_adv, atol=1e-5)

