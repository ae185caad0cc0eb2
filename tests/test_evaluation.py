"""The evaluation's readings: scores pooled over the dataset (by hand), the worst case at most every
member per image and pooled, a 1x1 linear model's smallest breaking eps in closed form, the
convergence flag, targeted success over the pixels that had to change; float32 and float64 and
2-, 19- and 150-class confusions."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segattack.attacks import pgd
from segattack.evaluation.robustness import (
    converged,
    image_accuracy,
    objective_change,
    pooled_scores,
    robust_share,
    smallest_breaking,
    targeted_scores,
    untargeted_success,
    worst_case,
)
from segattack.metrics import confusion_matrix

# Two images, 2 classes. Image 0: 8 pixels of class 0, all right. Image 1: 2 pixels of class 0 and
# 2 of class 1, every one wrong. Pooled: inter (8, 0), union (8+2+2=12, 2+2=4) -> IoU (2/3, 0).
TWO = torch.tensor([[[8, 0], [0, 0]], [[0, 2], [2, 0]]])


def test_scores_are_pooled_over_the_dataset_by_hand():
    s = pooled_scores(TWO)
    assert s.miou == pytest.approx((8 / 12 + 0) / 2)
    assert s.aacc == pytest.approx(8 / 12)
    assert s.macc == pytest.approx((8 / 10 + 0 / 2) / 2)
    assert s.class_iou == pytest.approx([8 / 12, 0.0])
    per_image = (1.0 + 0.0) / 2  # the per-image mean a wrong reading gives
    assert abs(s.miou - per_image) > 0.1


def test_absent_classes_are_none_and_ignore_is_dropped():
    pred = torch.tensor([[[0, 0], [2, 2]]])
    ref = torch.tensor([[[0, 255], [2, 255]]])  # two ignored pixels: dropped, not counted wrong
    s = pooled_scores(confusion_matrix(pred, ref, 3))
    assert s.class_iou == [1.0, None, 1.0] and s.miou == 1.0 and s.aacc == 1.0
    assert pooled_scores(torch.zeros(1, 2, 2, dtype=torch.long)).miou is None


@pytest.mark.parametrize("classes", [2, 19, 150])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pooled_equals_one_matrix_of_all_pixels(classes, dtype):
    g = torch.Generator().manual_seed(classes)
    pred = torch.randint(0, classes, (5, 9, 9), generator=g)
    ref = torch.randint(0, classes, (5, 9, 9), generator=g)
    ref[:, 0] = 255
    per_image = confusion_matrix(pred, ref, classes).to(dtype)
    whole = confusion_matrix(pred.reshape(1, 45, 9), ref.reshape(1, 45, 9), classes)
    assert pooled_scores(per_image) == pooled_scores(whole)
    valid = ref != 255
    assert pooled_scores(per_image).aacc == pytest.approx(float((pred == ref)[valid].double().mean()))


def _confs(draw_rows, draw_attacks):
    """Per attack and image confusion counts over the same truth (rows fixed per image)."""
    g = torch.Generator().manual_seed(len(draw_rows) * 31 + draw_attacks)
    rows = torch.tensor(draw_rows).view(-1, 3)  # (N, C): labelled pixels of each class per image
    out = torch.zeros(draw_attacks, len(rows), 3, 3, dtype=torch.long)
    for a in range(draw_attacks):
        for i, r in enumerate(rows):
            for c in range(3):
                cut = torch.sort(torch.randint(0, int(r[c]) + 1, (2,), generator=g)).values
                out[a, i, c] = torch.tensor([cut[0], cut[1] - cut[0], r[c] - cut[1]])
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=3, max_size=15).map(lambda v: v[: len(v) // 3 * 3]), st.integers(1, 4))
def test_the_worst_case_is_at_most_every_member_per_image_and_pooled(rows, attacks):
    conf = _confs(rows, attacks)
    choice, chosen = worst_case(conf)
    acc, worst = image_accuracy(conf).nan_to_num(2), image_accuracy(chosen).nan_to_num(2)
    assert (worst <= acc + 1e-12).all()
    pooled = pooled_scores(chosen).aacc
    for a in range(attacks):
        member = pooled_scores(conf[a]).aacc
        assert pooled is None or member is None or pooled <= member + 1e-12


def test_the_worst_case_picks_the_lowest_accuracy_not_the_highest():
    right, wrong = torch.tensor([[4, 0], [0, 4]]), torch.tensor([[0, 4], [4, 0]])
    conf = torch.stack([torch.stack([right, wrong]), torch.stack([wrong, right])])
    choice, chosen = worst_case(conf)
    assert choice.tolist() == [1, 0] and pooled_scores(chosen).aacc == 0.0


# tests/test_budget.py's four pixels: the linear model scores class c by channel c
X = torch.tensor([[0.7, 0.2, 0.5, 0.3], [0.2, 0.6, 0.3, 0.35], [0.1, 0.3, 0.45, 0.3]]).view(1, 3, 2, 2)
LABELS = torch.tensor([[[0, 1], [0, 1]]])


def closed_form_radius() -> float:
    """Untargeted L-inf: a pixel of class c flips once x_c - eps < max_j x_j + eps, so the image
    (every pixel) breaks at max over pixels of (x_c - max_{j != c} x_j) / 2."""
    x = X[0, :, :, :].permute(1, 2, 0).reshape(-1, 3)
    labels = LABELS.flatten()
    margins = [(x[p, c] - torch.cat([x[p, :c], x[p, c + 1 :]]).max()) / 2 for p, c in enumerate(labels.tolist())]
    return float(max(margins))


def test_a_linear_models_smallest_breaking_eps_is_its_closed_form(linear_model):
    radius = closed_form_radius()
    grid = [radius * f for f in (0.5, 0.9, 0.98, 1.02, 1.1, 1.5)]
    success = []
    for eps in grid:
        result = pgd(linear_model, X, LABELS, targeted=False, steps=50, mode="linf", eps=eps)
        success.append(untargeted_success(confusion_matrix(result.pred, LABELS, 21)))
    found = smallest_breaking(torch.stack(success), grid, break_share=1.0)
    assert found.item() == pytest.approx(radius * 1.02)  # the first radius of the grid past the closed form
    assert robust_share(found, grid) == [1, 1, 1, 0, 0, 0]


def test_smallest_breaking_reads_inf_where_nothing_broke_and_refuses_bad_grids():
    success = torch.tensor([[0.2, 1.0], [0.995, 1.0]])
    found = smallest_breaking(success, [1 / 255, 2 / 255])
    assert found[0] == 2 / 255 and found[1] == 1 / 255
    assert math.isinf(smallest_breaking(torch.zeros(2, 1), [1 / 255, 2 / 255]).item())
    with pytest.raises(ValueError, match="increasing"):
        smallest_breaking(success, [2 / 255, 1 / 255])
    with pytest.raises(ValueError, match="len"):
        smallest_breaking(success, [1 / 255])


def test_convergence_flags_an_objective_still_moving():
    flat = torch.cat([torch.linspace(0, 5, 50), torch.full((50,), 5.0)])[:, None].repeat(1, 3)
    rising = torch.linspace(0, 5, 100)[:, None].repeat(1, 3)
    assert converged(flat) and not converged(rising)
    assert objective_change(rising) == pytest.approx((5 - 5 * 89 / 99) / (5 * 89 / 99), rel=1e-3)


def test_targeted_success_is_over_the_pixels_that_had_to_change():
    hits, todo = torch.tensor([3, 0, 1]), torch.tensor([4, 0, 4])  # the middle image had nothing to change
    reading = targeted_scores(hits, todo, TWO)
    assert reading.success_changed == pytest.approx(4 / 8)
    assert reading.target_miou == pytest.approx(pooled_scores(TWO).miou)
    assert targeted_scores(torch.zeros(1), torch.zeros(1), TWO).success_changed is None
