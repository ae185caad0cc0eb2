"""Cross-checks against adv_lib (the field's reference implementation) on the same trained model."""

import pytest
import torch

from segattack.attacks import asma, dag
from segattack.metrics import pixel_accuracy

segmentation = pytest.importorskip("adv_lib.attacks.segmentation")

# adv_lib-compatible ASMA: its L2 penalty, its batch-level IoU over all classes, alpha_0 = tau.
# adv_lib sums the logit term over the batch *before* subtracting each sample's L2 and summing
# again, which multiplies the logit gradient by the batch size; one image at a time, the two
# implementations mean the same step, so the comparisons run per image.
ADV_LIB_ASMA = {"l2_penalty": True, "iou_average": "adv_lib", "initial_step": "tau"}


@pytest.fixture(scope="module")
def batch(tiny_model, scene_inputs):
    images, _ = scene_inputs
    with torch.no_grad():
        targets = tiny_model(images).argmax(1).roll(1, 0)
    return images, targets


def success(model, adv, targets):
    with torch.no_grad():
        return pixel_accuracy(model(adv).argmax(1), targets)


@pytest.mark.parametrize("steps", [1, 2])
def test_asma_takes_adv_libs_first_steps(tiny_model, batch, steps):
    images, targets = batch
    beta, tau = 1e-6, 1e-7  # adv_lib's defaults: steps too small to change a prediction
    # adv_lib returns its best iterate; with an unreachable threshold and a stable prediction the
    # best is the latest evaluated one, i.e. the iterate after `steps` updates when run one longer.
    for i in range(len(images)):
        x, t = images[i:i + 1], targets[i:i + 1]
        theirs = segmentation.asma(tiny_model, x, t, targeted=True, adv_threshold=1.01, num_steps=steps + 1,
                                   τ=tau, β=beta)
        ours = asma(tiny_model, x, t, beta=beta, tau=tau, steps=steps, **ADV_LIB_ASMA)
        with torch.no_grad():
            assert torch.equal(ours.pred, tiny_model(x).argmax(1))  # the premise: predictions unchanged
        step_ours, step_theirs = (ours.adv - x).flatten(), (theirs - x).flatten()
        assert step_ours.abs().max() > 1e-6  # the step is not a no-op
        assert torch.allclose(ours.adv, theirs, atol=2.5e-7, rtol=0)  # within float32 rounding of x + step
        assert torch.nn.functional.cosine_similarity(step_ours, step_theirs, dim=0) > 0.999


def test_asma_reaches_adv_libs_targeted_success(tiny_model, batch):
    images, targets = batch
    theirs = torch.cat([segmentation.asma(tiny_model, images[i:i + 1], targets[i:i + 1], targeted=True,
                                          adv_threshold=1.01, num_steps=31, τ=2e-3, β=2e-3)
                        for i in range(len(images))])
    ours = torch.cat([asma(tiny_model, images[i:i + 1], targets[i:i + 1], beta=2e-3, tau=2e-3, steps=30,
                           **ADV_LIB_ASMA).adv for i in range(len(images))])
    ours_success = success(tiny_model, ours, targets).mean().item()
    theirs_success = success(tiny_model, theirs, targets).mean().item()
    assert ours_success > success(tiny_model, images, targets).mean().item() + 0.05  # it did attack
    assert abs(ours_success - theirs_success) <= 0.02


def test_dag_matches_adv_lib(tiny_model, batch):
    images, targets = batch
    # every sample reaches the threshold (adv_lib returns the clean image for one that does not)
    theirs = segmentation.dag(tiny_model, images, targets, targeted=True, adv_threshold=0.85, max_iter=60, γ=0.05)
    ours = dag(tiny_model, images, targets, steps=60, gamma=0.05, adv_threshold=0.85)
    assert (ours.success >= 0.85).all()
    assert abs(ours.success.mean().item() - success(tiny_model, theirs, targets).mean().item()) <= 0.02
    assert torch.allclose(ours.adv, theirs, atol=1e-5)
