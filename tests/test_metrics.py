import math

import pytest
import torch

from segattack.metrics import (
    attack_metrics,
    class_iou,
    confusion_matrix,
    dataset_scores,
    mean_iou,
    perturbation_norm,
    pixel_accuracy,
    predict_classes,
)


def masks(*rows):
    return torch.tensor([rows])


def test_identical_masks_score_one():
    m = torch.randint(0, 21, (3, 8, 8))
    assert torch.allclose(mean_iou(m, m), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(mean_iou(m, m, "all"), torch.ones(3, dtype=torch.float64))
    assert torch.equal(pixel_accuracy(m, m), torch.ones(3, dtype=torch.float64))


def test_disjoint_masks_score_zero():
    a, b = torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 7)
    assert mean_iou(a, b).item() == 0.0
    assert pixel_accuracy(a, b).item() == 0.0
    # over all 21 classes the 19 classes absent from both masks agree
    assert mean_iou(a, b, "all").item() == pytest.approx(19 / 21)


def test_hand_computed_three_class_case():
    pred = masks([0, 0, 1, 1], [2, 2, 2, 1])
    ref = masks([0, 1, 1, 1], [2, 2, 0, 0])
    # class 0: inter 1, union |{p0,p1,p6,p7}| = 4 -> 1/4
    # class 1: pred {2,3,7} ref {1,2,3}: inter 2, union 4 -> 1/2
    # class 2: pred {4,5,6} ref {4,5}: inter 2, union 3 -> 2/3
    iou = class_iou(pred, ref)[0]
    assert iou[:3].tolist() == pytest.approx([0.25, 0.5, 2 / 3])
    assert math.isnan(iou[3].item())
    assert mean_iou(pred, ref).item() == pytest.approx((0.25 + 0.5 + 2 / 3) / 3)
    assert pixel_accuracy(pred, ref).item() == pytest.approx(5 / 8)


def test_ignore_index_is_left_out():
    pred = masks([1, 1, 1, 1])
    ref = masks([1, 255, 255, 2])
    assert pixel_accuracy(pred, ref).item() == pytest.approx(0.5)
    assert confusion_matrix(pred, ref).sum().item() == 2


def test_dataset_scores_over_summed_counts():
    pred, ref = masks([0, 1], [1, 1]), masks([0, 1], [0, 1])
    s = dataset_scores(confusion_matrix(pred, ref))
    assert s["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert s["pixel_accuracy"] == pytest.approx(0.75)


def test_l2_in_three_spaces():
    clean = torch.zeros(1, 3, 2, 2)
    adv = clean.clone()
    adv[0, 0, 0, 0] = 0.229  # one red pixel up by one ImageNet std
    assert perturbation_norm(adv, clean).item() == pytest.approx(0.229)
    assert perturbation_norm(adv, clean, space="255").item() == pytest.approx(0.229 * 255)
    assert perturbation_norm(adv, clean, space="normalized").item() == pytest.approx(1.0)
    assert perturbation_norm(adv, clean, p=float("inf")).item() == pytest.approx(0.229)
    assert perturbation_norm(clean, clean).item() == 0.0


def test_attack_metrics_readings():
    clean = torch.rand(2, 3, 4, 4)
    pred = torch.randint(0, 3, (2, 4, 4))
    out = attack_metrics(pred, pred, pred.roll(1, 0), clean, clean)
    assert torch.allclose(out["iou_original"], torch.ones(2, dtype=torch.float64))
    assert set(out) >= {"iou_target", "acc_original", "acc_target", "l2_unit", "l2_255", "l2_normalized", "linf_unit"}


def test_bad_masks():
    with pytest.raises(ValueError, match="masks must both be"):
        mean_iou(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="average must be"):
        mean_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), "macro")
    with pytest.raises(ValueError, match="space must be"):
        perturbation_norm(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), space="lab")


def test_predict_classes_is_argmax_with_first_index_on_ties():
    torch.manual_seed(0)
    logits = torch.randn(2, 21, 9, 7)
    logits[:, 5] = logits[:, 3] = logits.amax(1) + 1  # a tie between classes 3 and 5 everywhere...
    logits[1, :, 0, 0] = 0.0  # ...and an all-zero pixel
    pred = predict_classes(logits)
    assert torch.equal(pred, logits.argmax(1))
    assert (pred[0] == 3).all() and pred[1, 0, 0] == 0
    nhwc = logits.contiguous(memory_format=torch.channels_last)
    assert torch.equal(predict_classes(nhwc), pred)


def test_success_over_changed_pixels_counts_only_the_work_the_attack_had():
    from segattack.metrics import changed_share, changed_success

    clean = torch.tensor([[[0, 0, 1, 1]], [[2, 2, 2, 2]]])
    target = torch.tensor([[[0, 1, 1, 255]], [[2, 2, 2, 2]]])  # image 1's target is its own prediction
    pred = torch.tensor([[[5, 1, 0, 3]], [[2, 2, 2, 2]]])
    # image 0: one pixel to change (the second), reached; the first and third were at the target already
    assert changed_share(target, clean).tolist() == pytest.approx([1 / 3, 0.0])
    success = changed_success(pred, target, clean)
    assert success[0].item() == 1.0 and success[1].isnan()  # nothing to change: undefined, not 0 or 1
    assert changed_success(clean, target, clean)[0].item() == 0.0  # the clean image scores 0 by construction
    assert pixel_accuracy(pred, target).tolist() == pytest.approx([1 / 3, 1.0])  # the all-pixel reading


def test_summaries_leave_undefined_images_out_and_count_the_rest():
    from segattack.study.results import summarize

    stat = summarize({"x": torch.tensor([0.2, float("nan"), 0.4])})["x"]
    assert stat.mean == pytest.approx(0.3) and stat.images == 2
    assert summarize({"x": torch.tensor([float("nan")])})["x"].mean is None
