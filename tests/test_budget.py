"""The budget axis: the bisection brackets the known smallest radius of a 1x1-conv model, a
minimal-norm attack's budget is no larger than a searched one, ASMA is measured after the fact, and
the curve and the median read as by hand."""

import numpy as np
import pytest
import torch

from segattack.attacks import pgd
from segattack.budget import median_budget, robustness_curve, smallest_budget

# tests/test_minimal_norm.py's four pixels: untargeted, every pixel leaves its class at L-inf 0.25
X = torch.tensor([[0.7, 0.2, 0.5, 0.3], [0.2, 0.6, 0.3, 0.35], [0.1, 0.3, 0.45, 0.3]]).view(1, 3, 2, 2)
LABELS = torch.tensor([[[0, 1], [0, 1]]])


def test_the_bisection_brackets_the_known_smallest_radius(linear_model):
    found = smallest_budget(
        linear_model, X, LABELS, "pgd", targeted=False, steps=50, adv_threshold=1.0, eps_max=0.5,
        params={"mode": "linf"},
    )  # fmt: skip
    width = 0.5 / 2**13
    assert found.how == "search" and 0.25 <= found.linf.item() <= 0.25 + width + 1e-9
    at = lambda eps: pgd(linear_model, X, LABELS, targeted=False, steps=50, mode="linf", eps=eps).success.item()
    assert at(found.linf.item()) == 1.0 and at(found.linf.item() - width) < 1.0  # the bracket's two ends
    assert 0 < found.passes.item() < 14 * 50  # images stop once broken
    assert found.linf.item() <= found.l2.item() <= 12**0.5 * found.linf.item() + 1e-6  # 12 values


def test_a_minimal_norm_budget_is_no_larger_than_a_searched_one(linear_model):
    searched = smallest_budget(
        linear_model, X, LABELS, "apgd", targeted=False, steps=50, adv_threshold=1.0, eps_max=0.5
    )
    minimal = smallest_budget(
        linear_model, X, LABELS, "fmn", targeted=False, steps=100, adv_threshold=1.0, params={"loss": "sum"}
    )
    assert minimal.how == "minimal_norm" and minimal.linf.item() <= searched.linf.item() + 1e-6
    assert minimal.linf.item() == pytest.approx(0.25, abs=1e-3)


def test_an_image_never_broken_reads_inf_after_one_run(linear_model):
    found = smallest_budget(
        linear_model, X, LABELS, "pgd", targeted=False, steps=5, adv_threshold=1.0, eps_max=0.1,
        params={"mode": "linf"},
    )  # fmt: skip
    assert found.linf.item() == float("inf") and found.l2.item() == float("inf") and found.passes.item() == 5


def test_asma_is_measured_after_the_fact(tiny_model, scene_inputs):
    images, masks = scene_inputs
    targets = masks.roll(1, 0)
    found = smallest_budget(tiny_model, images, targets, "asma", steps=20, adv_threshold=0.5, params={"beta": 1e-3})
    assert found.how == "measured" and found.linf.shape == (4,)
    broken = torch.isfinite(found.linf)
    assert (found.linf[broken] > 0).all() and (found.l2[broken] >= found.linf[broken]).all()
    with pytest.raises(ValueError, match="asma has no untargeted form"):
        smallest_budget(tiny_model, images, masks, "asma", targeted=False)


def test_the_curve_and_the_median_by_hand():
    budgets = np.array([0.1, 0.3, np.inf, 0.2])
    assert robustness_curve(budgets, [0.0, 0.1, 0.25, 1.0]).tolist() == [0.0, 0.25, 0.5, 0.75]
    curve = robustness_curve(np.random.default_rng(0).exponential(size=50), np.linspace(0, 3, 31))
    assert (np.diff(curve) >= 0).all()  # never decreasing
    median, low, high = median_budget(budgets)
    assert median == pytest.approx(0.25) and low <= median <= high
    assert median_budget([np.inf, np.inf, 0.1])[0] == np.inf  # fewer than half broken


def test_bad_input_gets_one_clear_error(linear_model):
    with pytest.raises(ValueError, match="non-empty 1-D"):
        robustness_curve(np.zeros((2, 2)), [0.1])
    with pytest.raises(ValueError, match=">= 0"):
        robustness_curve([0.1], [-1.0])
    with pytest.raises(ValueError, match="without NaN"):
        median_budget([np.nan])
    with pytest.raises(ValueError, match="adv_threshold"):
        smallest_budget(linear_model, X, LABELS, "pgd", adv_threshold=0)
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        smallest_budget(linear_model, X, LABELS, "nope")


def test_a_budget_cell_gives_a_row_per_image_and_mode():
    from segattack.studies import StudyConfig, run_cell, study_cells

    study = StudyConfig(
        num_images=2,
        size=48,
        batch=2,
        budget_images=2,
        budget_steps=2,
        backbones=["mobilenet_v3_large"],
        budget_attacks=["pgd", "asma", "fmn"],
    )
    cells = [c for c in study_cells(study) if c.startswith("budget/")]
    assert cells == [
        "budget/mobilenet_v3_large/pgd/targeted/0",
        "budget/mobilenet_v3_large/pgd/untargeted/0",
        "budget/mobilenet_v3_large/asma/targeted/0",
        "budget/mobilenet_v3_large/fmn/targeted/0",
        "budget/mobilenet_v3_large/fmn/untargeted/0",
    ]
    rows = run_cell(study, cells[3]).budget
    assert [(r["image"], r["mode"], r["how"], r["passes"]) for r in rows] == [
        (0, "targeted", "minimal_norm", 28),
        (1, "targeted", "minimal_norm", 28),
    ]  # one run as long as a 13-step search of 2-step runs
    assert all(r["linf"] is None or 0 <= r["linf"] <= (r["l2"] or 0) for r in rows)
    assert not [c for c in study_cells(StudyConfig()) if c.startswith("budget/")]  # off by default
