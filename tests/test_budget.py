"""The budget axis: the bisection brackets the known smallest radius of a 1x1-conv model, a
minimal-norm attack's budget is no larger than a searched one, ASMA is measured after the fact, the
curve and the median read as by hand, the studies' cells run in the tiny profile and the report's
table and sentence read the rows as by hand."""

import math

import numpy as np
import pytest
import torch

from segattack.attacks import pgd
from segattack.evaluation.budget import median_budget, robustness_curve, smallest_budget
from segattack.models.wrapper import WeightsInfo
from segattack.study.records import RESULTS_VERSION, BudgetRow, CellRecord, StudiesResults

# tests/test_minimal_norm.py's four pixels: untargeted, every pixel leaves its class at L-inf 0.25
X = torch.tensor([[0.7, 0.2, 0.5, 0.3], [0.2, 0.6, 0.3, 0.35], [0.1, 0.3, 0.45, 0.3]]).view(1, 3, 2, 2)
LABELS = torch.tensor([[[0, 1], [0, 1]]])


def test_the_bisection_brackets_the_known_smallest_radius(linear_model):
    found = smallest_budget(
        linear_model, X, LABELS, "pgd", targeted=False, steps=50, adv_threshold=1.0, eps_max=0.5,
        params={"mode": "linf"},
    )  # fmt: skip
    width, radius = 0.5 / 2**13, found.radius.item()
    assert found.how == "search" and 0.25 <= radius <= 0.25 + width + 1e-9
    at = lambda eps: pgd(linear_model, X, LABELS, targeted=False, steps=50, mode="linf", eps=eps).success.item()
    assert at(radius) == 1.0 and at(radius - width) < 1.0  # the bracket's two ends
    assert 0.25 - 1e-6 <= found.linf.item() <= radius + 1e-6  # the perturbation found there, within the radius
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


def test_a_minimal_norm_attack_that_fails_reads_inf(linear_model):
    impossible = torch.full_like(LABELS, 5)  # class 5 scores -10 wherever the pixels are: never reached
    found = smallest_budget(linear_model, X, impossible, "fmn", steps=5, adv_threshold=0.5)
    assert found.how == "minimal_norm" and found.linf.item() == found.l2.item() == float("inf")
    assert found.passes.item() == 5


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
    with pytest.raises(ValueError, match=r"labels \(B,H,W\) of the same B, H, W; got \(1, 3, 2, 2\) and \(1, 2, 3\)"):
        smallest_budget(linear_model, X, torch.zeros(1, 2, 3, dtype=torch.long), "pgd")
    with pytest.raises(ValueError, match="without NaN"):
        robustness_curve([0.1, np.nan], [0.1])


def test_a_budget_cell_gives_a_row_per_image_and_mode():
    from segattack.study.studies import StudyConfig, run_cell, study_cells

    study = StudyConfig(
        num_images=3,
        size=48,
        batch=2,
        budget_images=2,
        budget_steps=2,
        backbones=["mobilenet_v3_large"],
        budget_attacks=["pgd", "asma", "fmn"],
    )
    assert study.budget_indices == [0, 2]  # the paper's target image (1) is left out
    cells = [c for c in study_cells(study) if c.startswith("budget/")]
    assert cells == [
        "budget/mobilenet_v3_large/pgd/targeted/0",
        "budget/mobilenet_v3_large/pgd/untargeted/0",
        "budget/mobilenet_v3_large/asma/targeted/0",
        "budget/mobilenet_v3_large/fmn/targeted/0",
        "budget/mobilenet_v3_large/fmn/untargeted/0",
    ]
    rows = CellRecord.from_dict(run_cell(study, cells[3]).to_dict()).budget  # as stored and read back
    assert [(r.image, r.mode, r.how, r.passes) for r in rows] == [
        (0, "targeted", "minimal_norm", 28),
        (2, "targeted", "minimal_norm", 28),
    ]  # one run as long as a 13-step search of 2-step runs
    assert all(r.linf is None or 0 <= r.linf <= (r.l2 or 0) for r in rows)
    assert not [c for c in study_cells(StudyConfig(budget_images=0)) if c.startswith("budget/")]  # off


def test_a_targeted_image_with_nothing_to_change_has_no_row(linear_model):
    from segattack.study.studies import StudyConfig, _Inputs, budget_rows

    with torch.no_grad():
        clean = linear_model(X).argmax(1)
    images, cleans = X.repeat(2, 1, 1, 1), clean.repeat(2, 1, 1)
    targets = torch.stack([clean[0], (clean[0] + 1) % 3])  # image 0 is already at its target
    inputs = _Inputs(images, cleans, targets, None, linear_model)
    rows = budget_rows(StudyConfig(), linear_model, "linear", "fmn", True, inputs, [4, 7])
    assert [(r.image, r.mode) for r in rows] == [(7, "targeted")]
    untargeted = budget_rows(StudyConfig(), linear_model, "linear", "fmn", False, inputs, [4, 7])
    assert [r.image for r in untargeted] == [4, 7]


def test_the_tiny_profile_runs_its_budget_cells():
    from segattack.study.profiles import study_config
    from segattack.study.studies import assemble_studies, run_cell, study_cells

    study = study_config("tiny")
    cells = [c for c in study_cells(study) if c.startswith("budget/")]
    assert study.budget_indices == [0] and len(cells) == 2 * (2 * 7 + 1)  # ASMA targeted only
    records = [run_cell(study, c) for c in cells if "/mobilenet_v3_large/" in c and "/dag/" not in c]
    rows = assemble_studies(study, records).budget
    assert {r.attack for r in rows} == {"pgd", "segpgd", "cospgd", "asma", "alma_prox", "pdpgd", "fmn"}
    assert {r.how for r in rows} == {"search", "measured", "minimal_norm"}
    assert all(r.passes >= 1 and r.seconds > 0 and (r.linf is None) == (r.l2 is None) for r in rows)


def _studies(rows: list[BudgetRow]) -> StudiesResults:
    weights = WeightsInfo("embedded", "resnet50", "test weights")
    return StudiesResults("h", RESULTS_VERSION, {}, {"resnet50": weights}, {}, [], [], [], [], {}, 0.0, rows)


def test_the_report_reads_the_budget_rows_as_by_hand():
    from segattack.study.report import budget_answer, budget_curves, budget_table

    def row(attack, mode, image, linf, l2, how="search"):
        return BudgetRow("resnet50", attack, mode, image, linf, l2, 30, 1.5, how)

    def twice(v):
        return None if v is None else 2 * v

    def tenfold(v):
        return None if v is None else 10 * v

    rows = [
        *(row("pgd", "targeted", i, v, tenfold(v)) for i, v in enumerate([0.02, 0.04, 0.06])),
        *(row("asma", "targeted", i, twice(v), v, "measured") for i, v in enumerate([0.1, 0.2, None])),
        *(row("pgd", "untargeted", i, v, tenfold(v)) for i, v in enumerate([0.01, None, None])),
    ]
    studies = _studies(rows)
    table = budget_table(studies)
    key = ("resnet50 / embedded weights", "targeted", "ASMA")
    assert table.loc[key, "broken"] == "2 of 3" and table.loc[key, "found by"] == "measured"
    assert table.loc[key, "passes per image"] == "30" and table.loc[key, "seconds per image"] == "1.50"
    assert table.loc[key, "median L2 ([0,1]) [95%]"].startswith("0.200 [")  # median of 0.1, 0.2, inf
    assert table.loc[
        ("resnet50 / embedded weights", "untargeted", "PGD Attack"), "median L-inf (/255) [95%]"
    ].startswith("not reached")
    curves = budget_curves(studies)
    assert set(curves["norm"]) == {"L-inf (/255)", "L2 ([0,1] pixels)"}
    for _, curve in curves.groupby(["norm", "mode", "attack"]):
        assert (np.diff(curve["broken"]) >= 0).all() and curve["broken"].iloc[0] == 0
    pgd_l2 = curves[
        (curves["norm"] == "L2 ([0,1] pixels)") & (curves["attack"] == "PGD Attack") & (curves["mode"] == "targeted")
    ]
    assert pgd_l2["broken"].iloc[-1] == 1.0 and curves["weights"].eq("resnet50 / embedded weights").all()
    answer = budget_answer(studies).splitlines()
    assert len(answer) == 2 and answer[0].startswith(
        "- **ResNet, targeted:** ASMA needs the smaller perturbation in L2"
    )
    assert "but PGD Attack does in L-inf" in answer[0] and "intervals overlapping" in answer[0]
    assert "ASMA has no untargeted form" in answer[1]
    assert math.isinf(median_budget([np.inf, 0.1, np.inf])[0])


def test_the_reported_radius_is_the_smallest_broken_one_tried(linear_model):
    # eps_max puts the known radius 0.25 at (0.5 + 1.5 / 2**13) eps_max: the first midpoint misses it,
    # and the 13th bisection step's midpoint lies half a step below it and fails, so the last radius
    # tried is not the smallest broken one (the one to report)
    eps_max = 0.25 / (0.5 + 1.5 / 2**13)
    found = smallest_budget(
        linear_model, X, LABELS, "pgd", targeted=False, steps=50, adv_threshold=1.0, eps_max=eps_max,
        params={"mode": "linf"},
    )  # fmt: skip
    radius = found.radius.item()
    assert 0.25 <= radius <= 0.25 + 0.01
    assert pgd(linear_model, X, LABELS, targeted=False, steps=50, mode="linf", eps=radius).success.item() == 1.0
