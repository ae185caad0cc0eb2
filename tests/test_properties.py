"""Property-based tests (hypothesis) for the metrics and the attacks' budgets."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segattack.attacks import asma, targeted_pgd
from segattack.metrics import IMAGENET_STD, mean_iou, perturbation_norm, pixel_accuracy
from segattack.models.wrapper import wrap_model

seeds = st.integers(0, 2**31 - 1)


def random_masks(seed, classes, shape=(2, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, shape, generator=g), torch.randint(
        0, classes, shape, generator=g.manual_seed(seed + 1)
    )


@given(seeds, st.integers(1, 21))
def test_agreement_metrics_are_bounded_symmetric_and_one_on_identity(seed, classes):
    a, b = random_masks(seed, classes)
    for average in ("present", "all"):
        iou = mean_iou(a, b, average)
        assert ((iou >= 0) & (iou <= 1)).all()
        assert torch.allclose(iou, mean_iou(b, a, average))
        assert torch.allclose(mean_iou(a, a, average), torch.ones(2, dtype=torch.float64))
    acc = pixel_accuracy(a, b)
    assert ((acc >= 0) & (acc <= 1)).all() and torch.equal(acc, pixel_accuracy(b, a))
    assert torch.equal(pixel_accuracy(a, a), torch.ones(2, dtype=torch.float64))


@given(seeds, st.sampled_from(["unit", "255", "normalized"]), st.sampled_from([2.0, float("inf")]))
def test_norms_are_nonnegative_and_zero_only_for_equal_images(seed, space, p):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 4, 4, generator=g)
    y = x.clone()
    y[1, torch.randint(0, 3, (1,), generator=g).item(), 1, 2] += 1e-3
    norms = perturbation_norm(y, x, p, space)
    assert norms[0] == 0 and norms[1] > 0
    assert perturbation_norm(x, y, p, space)[1] == norms[1]


@settings(max_examples=25, deadline=None)
@given(seeds, st.floats(1e-3, 0.5), st.integers(1, 3), st.booleans())
def test_pgd_linf_ends_inside_its_budget(seed, eps, steps, random_start):
    torch.manual_seed(seed)
    model = wrap_model(torch.nn.Conv2d(3, 21, 1), normalize=False)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 6, 6, generator=g)
    t = torch.randint(0, 21, (2, 6, 6), generator=g)
    adv = targeted_pgd(
        model, x, t, steps=steps, mode="linf", eps=eps, alpha=eps, random_start=random_start, generator=g
    ).adv
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1


@settings(max_examples=25, deadline=None)
@given(seeds, st.floats(1e-3, 1.0), st.floats(1.0, 1e4))
def test_pgd_paper_mode_ends_inside_its_normalised_budget(seed, eps, alpha):
    torch.manual_seed(seed)
    model = wrap_model(torch.nn.Conv2d(3, 21, 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, 6, 6, generator=g)
    adv = targeted_pgd(model, x, torch.randint(0, 21, (1, 6, 6), generator=g), steps=2, eps=eps, alpha=alpha).adv
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert ((adv - x) / std).abs().max() <= eps + 1e-6  # float32 rounding of x + delta


@settings(max_examples=15, deadline=None)
@given(seeds, st.floats(1e-4, 10.0))
def test_asma_keeps_images_in_range(seed, beta):
    torch.manual_seed(seed)
    model = wrap_model(torch.nn.Conv2d(3, 21, 1), normalize=False)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 6, 6, generator=g)
    adv = asma(model, x, torch.randint(0, 21, (2, 6, 6), generator=g), beta=beta, tau=beta, steps=2).adv
    assert adv.min() >= 0 and adv.max() <= 1
