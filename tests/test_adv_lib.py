"""Cross-checks against adv_lib (the field's reference implementation) on the same trained model:
under adv_lib's readings our attacks return adv_lib's images."""

import pytest
import torch
from torch import nn

from segattack.attacks import asma, dag
from segattack.metrics import pixel_accuracy

segmentation = pytest.importorskip("adv_lib.attacks.segmentation")

# adv_lib-compatible ASMA: its L2 penalty, its batch-level IoU over all classes, alpha_0 = tau.
# adv_lib sums the logit term over the batch *before* subtracting each sample's L2 and summing
# again, which multiplies the logit gradient by the batch size; one image at a time, the two
# implementations mean the same step, so the comparisons run per image, and at batch 4 ours equals
# adv_lib's only with its logit term divided by 4 (test_asma_at_batch_4_is_adv_libs_with_its_logit_term_over_4).
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
        x, t = images[i : i + 1], targets[i : i + 1]
        theirs = segmentation.asma(
            tiny_model, x, t, targeted=True, adv_threshold=1.01, num_steps=steps + 1, τ=tau, β=beta
        )
        ours = asma(tiny_model, x, t, beta=beta, tau=tau, steps=steps, **ADV_LIB_ASMA)
        with torch.no_grad():
            assert torch.equal(ours.pred, tiny_model(x).argmax(1))  # the premise: predictions unchanged
        step_ours, step_theirs = (ours.adv - x).flatten(), (theirs - x).flatten()
        assert step_ours.abs().max() > 1e-6  # the step is not a no-op
        assert torch.allclose(ours.adv, theirs, atol=2.5e-7, rtol=0)  # within float32 rounding of x + step
        assert torch.nn.functional.cosine_similarity(step_ours, step_theirs, dim=0) > 0.999


def adv_lib_iterate(model, run, index):
    """The input of adv_lib's ``index``-th forward pass (0-based): its iterate after ``index`` updates,
    whatever iterate it would return as its best."""
    seen = []
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        run()
    finally:
        hook.remove()
    return seen[index]


def test_asma_matches_adv_libs_images_where_the_l2_term_matters(tiny_model, batch):
    images, targets = batch
    beta = tau = 2e-2  # steps large enough that ||X_n - X||^2 pulls the iterate back visibly
    steps = 8
    for i in range(len(images)):
        x, t = images[i : i + 1], targets[i : i + 1]
        theirs = adv_lib_iterate(
            tiny_model,
            lambda: segmentation.asma(
                tiny_model, x, t, targeted=True, adv_threshold=1.01, num_steps=steps + 1, τ=tau, β=beta
            ),
            steps,
        )
        ours = asma(tiny_model, x, t, beta=beta, tau=tau, steps=steps, **ADV_LIB_ASMA).adv
        without = asma(tiny_model, x, t, beta=beta, tau=tau, steps=steps, **{**ADV_LIB_ASMA, "l2_penalty": False}).adv
        assert (theirs - x).norm() > 1.0  # far from the clean image: the readings do differ here
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
        assert (without - theirs).abs().max() > 1e-2


class Scaled(nn.Module):
    """The model's logits times ``factor``: the same predictions, every logit term scaled."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


def test_asma_at_batch_4_is_adv_libs_with_its_logit_term_over_4(tiny_model, batch):
    """adv_lib's ``(logit_loss - l2_squared).sum()`` takes the batch-summed logit term once per
    sample: at batch B its logit gradient is B times ours. On logits scaled by 1/B (a power of two,
    so exactly; the argmax, hence its masks, IoU and step size, unchanged) its steps are ours."""
    images, targets = batch
    beta = tau = 2e-2
    steps = 8
    ours = asma(tiny_model, images, targets, beta=beta, tau=tau, steps=steps, **ADV_LIB_ASMA).adv

    def theirs(model):
        return adv_lib_iterate(
            model,
            lambda: segmentation.asma(
                model, images, targets, targeted=True, adv_threshold=1.01, num_steps=steps + 1, τ=tau, β=beta
            ),
            steps,
        )

    assert len(images) == 4
    assert torch.allclose(ours, theirs(Scaled(tiny_model, 1 / 4)), atol=1e-6, rtol=0)  # measured 1.8e-7
    as_is = theirs(tiny_model)
    assert (ours - as_is).abs().max() > 0.1  # adv_lib as it is (measured 0.8): its logit term weighs 4x ours
    # what adv_lib as it is computes: ours on logits scaled by 4
    assert torch.allclose(
        asma(Scaled(tiny_model, 4), images, targets, beta=beta, tau=tau, steps=steps, **ADV_LIB_ASMA).adv,
        as_is,
        atol=1e-5,
        rtol=0,
    )


def test_dag_returns_adv_libs_images(tiny_model, batch):
    images, targets = batch
    # adv_lib's reading: gamma in [0,1] units and the clean image for a sample that misses the threshold
    theirs = segmentation.dag(tiny_model, images, targets, targeted=True, adv_threshold=0.9, max_iter=20, γ=0.05)
    ours = dag(tiny_model, images, targets, steps=20, gamma=0.05, adv_threshold=0.9, unsuccessful="clean")
    missed = ours.success < 0.9
    assert missed.any() and not missed.all()  # both kinds of sample are compared
    assert torch.equal(theirs[missed], images[missed])
    assert torch.allclose(ours.adv, theirs, atol=1e-5)
