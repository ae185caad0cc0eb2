"""The budget axis: the bisection brackets the known smallest radius of a 1x1-conv model, a
minimal-norm attack's budget is no larger than a searched one, ASMA is measured after the fact, the
curve and the median read as by hand, the studies' cells run in the tiny profile and the report's
table and sentence read the rows as by hand."""

import math

import numpy as np
import pytest
import torch

from segattack.attacks import pgd
from segattack.evaluation.budget import (
    RTOL,
    at_radius,
    median_budget,
    project,
    robustness_curve,
    smallest_budget,
    stopped_moving,
)
from segattack.models.wrapper import WeightsInfo
from segattack.study.records import RESULTS_VERSION, BudgetRow, CellRecord, StudiesResults

# tests/test_minimal_norm.py's four pixels: untargeted, every pixel leaves its class at L-inf 0.25
X = torch.tensor([[0.7, 0.2, 0.5, 0.3], [0.2, 0.6, 0.3, 0.35], [0.1, 0.3, 0.45, 0.3]]).view(1, 3, 2, 2)
LABELS = torch.tensor([[[0, 1], [0, 1]]])


def test_the_cold_bisection_brackets_the_known_smallest_radius(linear_model):
    found = smallest_budget(
        linear_model, X, LABELS, "pgd", targeted=False, steps=50, adv_threshold=1.0, eps_max=0.5,
        params={"mode": "linf"}, warm=False,
    )  # fmt: skip
    width, radius = 0.5 / 2**13, found.radius.item()
    assert found.how == "search" and 0.25 <= radius <= 0.25 + width + 1e-9
    at = lambda eps: pgd(linear_model, X, LABELS, targeted=False, steps=50, mode="linf", eps=eps).success.item()
    assert at(radius) == 1.0 and at(radius - width) < 1.0  # the bracket's two ends
    assert 0.25 - 1e-6 <= found.linf.item() <= radius + 1e-6  # the perturbation found there, within the radius
    assert 0 < found.passes.item() < 14 * 50  # images stop once broken
    assert found.linf.item() <= found.l2.item() <= 12**0.5 * found.linf.item() + 1e-6  # 12 values
    assert found.success.item() == 1.0 and found.converged.item()


def test_the_warm_search_finds_the_cold_radius_with_fewer_passes(linear_model):
    """Same smallest radius as the cold bisection (within the warm search's 1/16), fewer passes,
    and every perturbation it tried within the radius it was tried at (the warm start projected)."""
    kwargs = dict(targeted=False, steps=10, adv_threshold=1.0, eps_max=0.5, params={"mode": "linf"})
    cold = smallest_budget(linear_model, X, LABELS, "pgd", warm=False, **kwargs)
    warm = smallest_budget(linear_model, X, LABELS, "pgd", **kwargs)
    assert cold.radius.item() == pytest.approx(0.25, abs=1e-3)
    assert cold.radius.item() - 1e-6 <= warm.radius.item() <= cold.radius.item() * (1 + RTOL) + 1e-6
    assert warm.linf.item() == pytest.approx(warm.radius.item()) and warm.converged.item()
    assert warm.passes.item() < cold.passes.item() / 2  # 27 vs 73 passes when written
    # the budget found breaks the image; 1/16 below it, PGD run to convergence does not
    assert pgd(linear_model, X, LABELS, targeted=False, steps=80, mode="linf", eps=warm.radius.item()).success == 1
    below = warm.radius.item() * (1 - RTOL) - 1e-3
    assert pgd(linear_model, X, LABELS, targeted=False, steps=80, mode="linf", eps=below).success < 1


def test_a_warm_start_outside_the_new_radius_is_refused(linear_model):
    big = torch.full_like(X, 0.2)
    with pytest.raises(ValueError, match="init must lie in the linf ball of radius 0.1"):
        pgd(linear_model, X, LABELS, mode="linf", eps=0.1, init=big)
    with pytest.raises(ValueError, match="init and random_start exclude each other"):
        pgd(linear_model, X, LABELS, mode="linf", eps=0.1, init=project(big, 0.1, X), random_start=True)
    start = project(big, 0.1, X)
    assert start.abs().max() <= 0.1 + 1e-7 and ((X + start) <= 1).all()
    run = pgd(linear_model, X, LABELS, mode="linf", eps=0.1, steps=1, alpha=1e-9, init=start, targeted=False)
    assert torch.allclose(run.adv - X, start, atol=1e-6)  # the run starts where it was told


def test_a_radius_runs_until_success_stops_moving(linear_model):
    """At a radius too small to break the image, rounds continue while success still rises and stop
    once it has not moved over a round's second half; a round cap leaves the image flagged."""
    calls = []

    def run(radius, start):
        calls.append(start is None)
        return pgd(linear_model, X, LABELS, targeted=False, mode="linf", eps=radius, steps=4, alpha=0.01,
                   init=start)  # fmt: skip

    probe = at_radius(run, 0.2, None, X, 1.0, rounds=50, warm=True)
    assert not probe.broken and probe.converged and calls[0] and not any(calls[1:])  # later rounds warm
    assert probe.passes == 4 * len(calls) and len(calls) >= 2  # success rose in the first round: a second ran
    capped = at_radius(run, 0.2, None, X, 1.0, rounds=1, warm=True)
    assert not capped.broken and not capped.converged
    history = torch.tensor([[0.1], [0.2], [0.3], [0.3]])
    assert not stopped_moving(history, torch.tensor([0.3])).item()  # 0.3 late vs 0.2 early
    assert stopped_moving(torch.tensor([[0.3], [0.3], [0.3], [0.303]]), torch.tensor([0.3])).item()
    # a later round: its whole best against the best of the rounds before it
    flat = torch.tensor([[0.30], [0.30], [0.30], [0.304]])
    assert stopped_moving(flat, torch.tensor([0.3]), before=torch.tensor([0.3])).item()
    assert not stopped_moving(flat + 0.006, torch.tensor([0.3]), before=torch.tensor([0.3])).item()


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
    assert broken.any() and (found.l2[broken] >= found.linf[broken]).all()
    # it stops each image at its first break: the budget is the norm there, 0 where the clean image
    # already had half its pixels at the target, and an image that breaks costs fewer than 20 passes
    with torch.no_grad():
        already = (tiny_model(images).argmax(1) == targets).flatten(1).float().mean(1) >= 0.5
    assert ((found.linf[broken] == 0) == already[broken]).all() and (found.linf[~already & broken] > 0).all()
    assert (found.passes[broken] < 20).all() and (found.passes[~broken] == 20).all()
    assert found.converged[broken].all() and (found.success[broken] >= 0.5).all()
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
    from segattack.study.studies import PAPER_TARGET, StudyConfig, run_cell, study_cells
    from segattack.util.params import ParameterError

    study = StudyConfig(
        num_images=3,
        size=48,
        batch=2,
        budget_images=2,
        budget_steps=2,
        backbones=["mobilenet_v3_large"],
        budget_attacks=["pgd", "asma", "fmn"],
        budget_modes=["targeted", "untargeted"],
        budget_run_steps=28,
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
    ]  # one run of budget_run_steps
    assert all(r.linf is None or 0 <= r.linf <= (r.l2 or 0) for r in rows)
    assert not [c for c in study_cells(StudyConfig(budget_images=0)) if c.startswith("budget/")]  # off
    default = StudyConfig()  # the default studies decide the paper's question: ASMA and PGD, targeted, 8 images
    assert [c for c in study_cells(default) if c.startswith("budget/")] == [
        f"budget/{b}/{a}/targeted/{k}" for b in default.backbones for a in ("asma", "pgd") for k in (0, 1)
    ]
    assert len(default.budget_indices) == 8 and PAPER_TARGET not in default.budget_indices
    with pytest.raises(ParameterError, match="budget_modes"):
        StudyConfig(budget_modes=["sideways"])


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
    assert study.budget_indices == [0] and len(cells) == 2 * 2  # ASMA and PGD, targeted
    assert study_config("default").budget_plan == "default" and study_config("paper").budget_plan == "paper"
    records = [run_cell(study, c) for c in cells if "/mobilenet_v3_large/" in c]
    rows = assemble_studies(study, records).budget
    assert {r.attack for r in rows} == {"pgd", "asma"} and {r.how for r in rows} == {"search", "measured"}
    assert all(r.passes >= 1 and r.seconds > 0 and (r.linf is None) == (r.l2 is None) for r in rows)
    asma_row = next(r for r in rows if r.attack == "asma")
    assert asma_row.passes <= 2 and 0 <= asma_row.success <= 1  # the tiny profile's 2 iterations


def _studies(rows: list[BudgetRow]) -> StudiesResults:
    weights = WeightsInfo("embedded", "resnet50", "test weights")
    return StudiesResults("h", RESULTS_VERSION, {}, {"resnet50": weights}, {}, [], [], [], [], {}, 0.0, rows)


def test_the_report_reads_the_budget_rows_as_by_hand():
    from segattack.study.report import budget_answer, budget_curves, budget_table

    def row(attack, mode, image, linf, l2, how="search"):
        return BudgetRow("resnet50", attack, mode, image, linf, l2, 30, 1.5, how, 0.4 if linf is None else 0.6, True)

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
        linear_model, X, LABELS, "pgd", targeted=False, steps=50, adv_threshold=1.0, eps_max=eps_max, warm=False,
        params={"mode": "linf"},
    )  # fmt: skip
    radius = found.radius.item()
    assert 0.25 <= radius <= 0.25 + 0.01
    assert pgd(linear_model, X, LABELS, targeted=False, steps=50, mode="linf", eps=radius).success.item() == 1.0


def test_both_views_and_the_verdict_read_the_numbers():
    """Smallest budget at convergence beside success after equal passes; the verdict names the
    flagged run, the unbroken image with its success, and whether the intervals are apart."""
    from segattack.study.report import budget_answer, budget_table, budget_views

    pgd_rows = [BudgetRow("resnet50", "pgd", "targeted", i, v, 10 * v, 40, 2.0, "search", 0.6, i != 2)
                for i, v in enumerate([0.02, 0.03, 0.04])]  # fmt: skip
    asma_rows = [
        BudgetRow("resnet50", "asma", "targeted", i, v, l2, 120, 6.0, "measured", s, True)
        for i, v, l2, s in [(0, 0.2, 1.0, 0.7), (1, 0.3, 2.0, 0.8), (2, None, None, 0.4)]
    ]
    studies = _studies(pgd_rows + asma_rows)
    studies.params = {"eps": 8 / 255}
    studies.iteration_curves = {  # (iterations, images): PGD ahead after 20 passes, ASMA after 5
        "resnet50": {
            "pgd": [[0.0, 0.0]] * 5 + [[0.9, 0.7]] * 15,
            "asma": [[0.5, 0.5]] * 20,
        }
    }
    table = budget_table(studies)
    key = ("resnet50 / embedded weights", "targeted")
    assert table.loc[(*key, "PGD Attack"), "converged"] == "2 of 3 (flagged: still moving)"
    assert table.loc[(*key, "ASMA"), "success where not broken"] == "0.40"
    assert table.loc[(*key, "PGD Attack"), "success where not broken"] == "—"
    views = budget_views(studies)
    row = views.loc[("resnet50 / embedded weights", "PGD Attack")]
    assert row[("smallest budget at convergence", "median L2 [95%]")].startswith("0.300 [")
    assert row[("smallest budget at convergence", "passes / image")] == "40"
    assert row[("success at L-inf 8/255 (equal compute)", "after 5 passes")] == "0.0%"
    assert row[("success at L-inf 8/255 (equal compute)", "after 20 passes")] == "80.0%"
    assert views.loc[("resnet50 / embedded weights", "ASMA"), ("smallest budget at convergence", "s / image")] == "6.00"
    answer = budget_answer(studies)
    assert answer.startswith("- **ResNet, targeted:** PGD Attack needs the smaller perturbation in L2")
    assert (
        "At equal compute (20 forward+backward passes at L-inf 8/255, the comparison's images) PGD Attack is ahead: ASMA 50.0% vs PGD Attack 80.0%"
        in answer
    )
    assert (
        "1 PGD Attack image(s) were still moving" in answer and "ASMA left 1 image(s) unbroken (success 0.40" in answer
    )
    assert "What would change it: its intervals are apart" in answer  # PGD's 0.2-0.4 against ASMA's 1.0-inf


def test_without_a_verdict_the_answer_gives_the_evidence():
    """Neither attack breaks half the images: no verdict, and the success the unbroken images reached."""
    from segattack.study.report import budget_answer

    rows = [
        BudgetRow("resnet50", a, "targeted", i, v, v, 50, 1.0, "search", s, True)
        for a in ("pgd", "asma")
        for i, v, s in [(0, 0.1, 0.6), (1, None, 0.31), (2, None, 0.45)]
    ]
    answer = budget_answer(_studies(rows))
    assert "neither needs a smaller perturbation" in answer and "What would change it: no verdict" in answer
    assert "PGD Attack left 2 image(s) unbroken (success 0.31, 0.45" in answer
