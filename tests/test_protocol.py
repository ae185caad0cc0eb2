"""The paper's protocol pinned step by step: reference [5]'s PGD, ASMA's L2 term, restarts, SegPGD's
pixel groups, the transfer matrix, [5]'s Table 1 reading and the attacked-image means."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segattack.attacks import AttackResult, asma, cospgd, dag, targeted_pgd
from segattack.attacks.cospgd import cospgd_loss
from segattack.attacks.dag import PAPER_GAMMA
from segattack.attacks.pgd import best_of
from segattack.attacks.segpgd import segpgd_loss
from segattack.data.targets import attacked_images
from segattack.metrics import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    confusion_matrix,
    pooled_from_counts,
    pooled_scores,
    reference_present_iou,
    void_prediction_counts,
)
from segattack.models.wrapper import wrap_model
from segattack.study.results import summarize

STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def normalising(tiny_model):
    """The tiny net behind the ImageNet-normalising wrapper, as the study's models are."""
    return wrap_model(tiny_model.net, normalize=True)


def ref5_steps(net, x, y, eps, alpha, steps):
    """Reference [5]'s ``pgd_targ``, re-typed: delta in normalised space, one CE mean over the batch."""
    x_norm = (x - MEAN) / STD
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = nn.CrossEntropyLoss(ignore_index=255)(net(x_norm + delta)["out"], y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta - alpha * grad).clamp(-eps, eps).detach().requires_grad_(True)
    return delta.detach()


def targets_with_ignore(model, images):
    with torch.no_grad():
        targets = model(images).argmax(1).roll(1, 0)
    targets[0, :3] = 255  # an ignored border: [5]'s masks have them
    return targets


def test_paper_pgd_is_ref5s_batch_mean_step(normalising, scene_inputs):
    images, _ = scene_inputs
    targets = targets_with_ignore(normalising, images)
    eps, alpha = 0.1, 100.0
    expected = ref5_steps(normalising.net, images, targets, eps, alpha, steps=3)
    res = targeted_pgd(normalising, images, targets, steps=3)
    assert res.params["reduction"] == "batch" and res.params["steps"] == 3
    assert torch.allclose((res.adv - images) / STD, expected, atol=1e-5)


def test_per_image_reduction_steps_batch_size_times_further(normalising, scene_inputs):
    images, _ = scene_inputs
    targets = targets_with_ignore(normalising, images)
    one_step = ref5_steps(normalising.net, images, targets, eps=10.0, alpha=1.0, steps=1)
    alpha = 0.02 / one_step.abs().max().item()  # small enough that no step reaches the ball's edge
    batch = targeted_pgd(normalising, images, targets, steps=1, alpha=alpha)
    image = targeted_pgd(normalising, images, targets, steps=1, alpha=alpha, reduction="image")
    assert torch.allclose((batch.adv - images) / STD, alpha * one_step, atol=1e-6)
    # per-image means: image i's step is (total labelled pixels / its own) times the batch mean's
    valid = (targets != 255).flatten(1).sum(1).float()
    ratio = (valid.sum() / valid).view(-1, 1, 1, 1)
    assert torch.allclose(image.adv - images, (batch.adv - images) * ratio, atol=1e-6)
    assert torch.equal(batch.loss, image.loss)  # the recorded loss is each image's mean CE under both


def test_paper_pgd_keeps_the_batch_denominator_when_a_sample_stops(normalising, scene_inputs):
    """[5]'s mean is over the whole batch's labelled pixels: a sample that stops early leaves the
    batch, but the others keep their weights (their steps do not grow by the batch's share it had)."""
    images, _ = scene_inputs
    with torch.no_grad():
        clean = normalising(images).argmax(1)
    targets = clean.roll(1, 0)
    targets[0] = clean[0]  # image 0 is at its target from the start: it stops after its first pass
    one_step = ref5_steps(normalising.net, images, targets, eps=10.0, alpha=1.0, steps=1)
    alpha = 0.01 / one_step.abs().max().item()  # small enough that no step reaches the ball's edge
    stopping = targeted_pgd(normalising, images, targets, steps=3, alpha=alpha, adv_threshold=0.99)
    every = targeted_pgd(normalising, images, targets, steps=3, alpha=alpha)
    assert stopping.params["iterations"] == [1, 3, 3, 3] and torch.equal(stopping.adv[0], images[0])
    # images 1-3 never see image 0's gradient; their weights are the same with or without it
    assert torch.allclose(stopping.adv[1:], every.adv[1:], atol=1e-7)
    assert (every.adv[1:] - images[1:]).abs().amax() > 100 * 1e-7  # the steps are far above the tolerance


def test_paper_pgd_runs_ref5s_fifteen_iterations(normalising, scene_inputs):
    images, _ = scene_inputs
    res = targeted_pgd(normalising, images, targets_with_ignore(normalising, images))
    assert res.params["steps"] == 15 and res.loss.shape == (15, 4)
    assert (
        targeted_pgd(normalising, images, targets_with_ignore(normalising, images), mode="linf").params["steps"] == 50
    )


def result(success, fill):
    n = len(success)
    return AttackResult(
        torch.full((n, 3, 2, 2), fill),
        {"loss": torch.full((1, n), fill)},
        {"iterations": [1] * n},
        torch.full((n, 2, 2), int(fill)),
        torch.tensor(success),
    )


def test_best_of_keeps_each_images_best_restart():
    best = best_of([result([0.2, 0.9, 0.5], 0.0), result([0.6, 0.1, 0.5], 1.0), result([0.4, 0.3, 0.7], 2.0)])
    assert best.success.tolist() == pytest.approx([0.6, 0.9, 0.7])
    assert best.adv[:, 0, 0, 0].tolist() == [1.0, 0.0, 2.0] and best.pred[:, 0, 0].tolist() == [1, 0, 2]
    assert best.loss[0].tolist() == [1.0, 0.0, 2.0] and best.params["iterations"] == [3, 3, 3]


def test_untargeted_segpgd_weighs_correct_pixels_first():
    # two pixels, label 0: the first is predicted 0 (correct), the second 1 (already fooled)
    logits = torch.tensor([[3.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)
    logits = torch.cat([logits, torch.full((1, 19, 1, 2), -5.0)], 1)
    labels = torch.zeros(1, 1, 2, dtype=torch.long)
    ce = F.cross_entropy(logits, labels, reduction="none")[0, 0]
    lam = 1 / 8  # t = 1 of T = 4
    expected = ((1 - lam) * ce[0] + lam * ce[1]) / 2
    assert segpgd_loss(logits, labels, 1, 4, targeted=False).item() == pytest.approx(expected.item())
    # targeted: the pixel at its target (the first) weighs lambda, the other 1 - lambda
    expected = (lam * ce[0] + (1 - lam) * ce[1]) / 2
    assert segpgd_loss(logits, labels, 1, 4, targeted=True).item() == pytest.approx(expected.item())


def test_asma_l2_penalty_step_by_hand(linear_model):
    x = torch.tensor([[0.9, 0.2, 0.1, 0.6], [0.1, 0.8, 0.2, 0.3], [0.1, 0.1, 0.7, 0.2]]).view(1, 3, 2, 2)
    target = torch.tensor([[[1, 1], [2, 0]]])
    # Only pixel (0,0) is off target (predicted 0, wants 1); alpha = 0.3 * IoU 2/3 + 0.1 = 0.3 at both steps.
    # Step 1: the L2 term has zero gradient at X_0 = X: green(0,0) 0.1 -> 0.1 + 0.3 * 1 = 0.4 (still class 0).
    # Step 2: gradient 1 - 2 * (0.4 - 0.1) = 0.4: green(0,0) -> 0.4 + 0.3 * 0.4 = 0.52.
    res = asma(linear_model, x, target, beta=0.3, tau=0.1, steps=2, l2_penalty=True)
    expected = x.clone()
    expected[0, 1, 0, 0] = 0.52
    assert torch.allclose(res.adv, expected, atol=1e-6)
    assert res.history["l2"][:, 0].tolist() == pytest.approx([0.0, 0.3])
    assert res.loss[1].item() == pytest.approx(0.4 - 0.09)  # logit_1 at (0,0) minus ||X_1 - X||^2
    plain = asma(linear_model, x, target, beta=0.3, tau=0.1, steps=2)
    assert plain.adv[0, 1, 0, 0].item() == pytest.approx(0.7)  # without the penalty: 0.1 + 0.3 + 0.3


def test_asma_steps_each_image_by_its_own_iou(tiny_model, scene_inputs):
    """Eq. (2)'s alpha_n is each image's own: a batch takes the steps its images take alone."""
    images, _ = scene_inputs
    with torch.no_grad():
        targets = tiny_model(images).argmax(1).roll(1, 0)
    kwargs = {"beta": 5e-2, "tau": 1e-3, "steps": 3}
    batch = asma(tiny_model, images, targets, **kwargs)
    alone = torch.cat([asma(tiny_model, images[i : i + 1], targets[i : i + 1], **kwargs).adv for i in range(4)])
    step_sizes = batch.history["step_size"][0]
    assert step_sizes.max() > 1.2 * step_sizes.min()  # the images' IoUs, hence their steps, differ
    assert torch.allclose(batch.adv, alone, atol=1e-5)
    assert (batch.adv - images).abs().amax() > 1e-2


def test_transfer_evaluates_the_other_backbone(tiny_model, monkeypatch):
    """A studies cell crafts on its backbone and measures transfer on the other one (here a model that
    predicts background everywhere, so transferred success is the share of target pixels that are 0)."""
    import segattack.study.studies as studies

    background = nn.Conv2d(3, 21, 1)
    with torch.no_grad():
        background.weight.zero_()
        background.bias.fill_(-1.0)
        background.bias[0] = 1.0  # predicts class 0 everywhere
    models = {"mobilenet_v3_large": tiny_model, "resnet50": wrap_model(background, normalize=False)}
    import segattack.study.cache as cache

    for module in (studies, cache):
        monkeypatch.setattr(module, "cached_model", lambda key: models[key.backbone])
    cache.clean_prediction.cache_clear()  # cached per process: made by the real models elsewhere
    study = studies.StudyConfig(num_images=3, size=32, batch=3, steps=5, eps=16 / 255)
    try:
        cell = studies.run_cell(study, "compare/mobilenet_v3_large/pgd/0")
    finally:
        cache.clean_prediction.cache_clear()
    images = torch.stack(studies.image_set("scenes", 32).load(range(3)).images)
    with torch.no_grad():
        targets = tiny_model(images).argmax(1).roll(-1, 0)  # roll: image i takes image i+1's prediction
    transferred = [r["success"] for r in cell.transfer if r["attack"] == "pgd"]
    assert {(r["source"], r["evaluated_on"]) for r in cell.transfer} == {("mobilenet_v3_large", "resnet50")}
    assert transferred == pytest.approx((targets == 0).flatten(1).double().mean(1).tolist())
    crafted = [r["success"] for r in cell.comparison]
    assert crafted != pytest.approx(transferred)  # on the crafting model the attack did more


def test_dag_default_step_is_xie_et_als_scale(tiny_model, scene_inputs):
    images, _ = scene_inputs
    with torch.no_grad():
        targets = tiny_model(images).argmax(1).roll(1, 0)
    res = dag(tiny_model, images, targets, steps=1, adv_threshold=None)
    assert res.params["gamma"] == PAPER_GAMMA == pytest.approx(0.5 / 255)
    assert (res.adv - images).abs().amax((1, 2, 3)).max() <= PAPER_GAMMA + 1e-6  # one L-inf step of gamma


def test_dag_unsuccessful_samples_return_clean_or_last(tiny_model, scene_inputs):
    images, _ = scene_inputs
    with torch.no_grad():
        targets = tiny_model(images).argmax(1).roll(1, 0)
    last = dag(tiny_model, images, targets, steps=3, gamma=0.01, adv_threshold=0.99)
    clean = dag(tiny_model, images, targets, steps=3, gamma=0.01, adv_threshold=0.99, unsuccessful="clean")
    missed = last.success < 0.99
    assert missed.any()
    assert torch.equal(clean.adv[missed], images[missed]) and not torch.equal(last.adv[missed], images[missed])
    assert torch.equal(clean.adv[~missed], last.adv[~missed])


def test_cospgd_sigmoid_reading_weighs_by_the_sigmoid_cosine(linear_model):
    torch.manual_seed(0)
    logits = torch.randn(1, 21, 3, 3)
    labels = torch.randint(0, 21, (1, 3, 3))
    one_hot = F.one_hot(labels, 21).permute(0, 3, 1, 2).float()
    cos = F.cosine_similarity(logits.sigmoid(), one_hot, dim=1)
    ce = F.cross_entropy(logits, labels, reduction="none")
    assert cospgd_loss(logits, labels, True, "sigmoid").item() == pytest.approx(((1 - cos) * ce).mean().item())
    assert cospgd_loss(logits, labels, False, "sigmoid").item() == pytest.approx((cos * ce).mean().item())
    with pytest.raises(ValueError, match="cosine must be"):
        cospgd(linear_model, torch.rand(1, 3, 2, 2), labels[:, :2, :2], cosine="tanh")


def test_ref5_pooled_iou_by_hand():
    # The adversarial prediction keeps class 1 on half its pixels and adds class 2 where 1 was.
    ref = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 2]]])
    # reference-present classes {0, 1}: IoU 1 and 1/2 -> 0.75; per image over either mask adds class 2 (IoU 0)
    scores = pooled_scores(pred, ref)
    assert scores["iou"]["value"] == pytest.approx(0.75) and scores["iou"]["ci95"] is None
    assert scores["acc"]["value"] == pytest.approx(0.75)
    # pooled over the batch, not averaged per image: image 2 has only class 0 and is right
    ref2, pred2 = torch.tensor([[[0, 0, 1, 1]], [[0, 0, 0, 0]]]), torch.tensor([[[0, 1, 2, 2]], [[0, 0, 0, 0]]])
    # pooled: class 0 inter 5 union 6, class 1 inter 0 union 3 -> (5/6 + 0) / 2
    assert pooled_scores(pred2, ref2)["iou"]["value"] == pytest.approx(5 / 12)
    assert reference_present_iou(torch.zeros(21, 21)).isnan()


def test_ref5_accuracy_counts_ignore_pixels_as_misses_and_interval_brackets():
    ref = torch.tensor([[[0, 255, 1, 1]], [[0, 0, 1, 1]], [[2, 2, 2, 0]]])
    pred = torch.tensor([[[0, 0, 1, 1]], [[0, 0, 0, 1]], [[2, 2, 0, 0]]])
    scores = pooled_scores(pred, ref)
    assert scores["acc"]["value"] == pytest.approx(9 / 12)  # the 255 pixel is a miss, as sklearn counts it
    lo, hi = scores["acc"]["ci95"]
    assert lo <= scores["acc"]["value"] <= hi and lo >= 0.5 and hi <= 1.0


def test_ref5_iou_counts_a_prediction_at_a_void_pixel_in_the_union():
    ref = torch.tensor([[[0, 255, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 2]]])  # class 0 predicted at the void pixel
    assert void_prediction_counts(pred, ref)[0, :3].tolist() == [1, 0, 0]
    # [5]: class 0 inter 1, union {p0, p1} = 2 -> 1/2; class 1 inter 1, union {p2, p3} = 2 -> 1/2
    scores = pooled_scores(pred, ref)
    assert scores["iou"]["value"] == pytest.approx(0.5) and scores["acc"]["value"] == pytest.approx(0.5)
    # torchvision's convention drops the void pixel first: class 0 reads 1/1, so the mean reads 3/4
    conf, pixels = confusion_matrix(pred, ref), torch.tensor([4.0])
    assert pooled_from_counts(conf, pixels)["iou"]["value"] == pytest.approx(0.75)
    assert pooled_from_counts(conf, pixels, void_prediction_counts(pred, ref))["iou"]["value"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="void_pred must count each image's unlabelled pixels once"):
        pooled_from_counts(conf, pixels, torch.zeros(1, 21))


def ref5_iou_acc(truth, pred):
    """Reference [5]'s ``IoUAcc``, re-typed: per class over the flattened batch, intersection at
    labelled pixels, union = every pixel predicted c plus every pixel labelled c minus the
    intersection; mean over classes in the reference; sklearn accuracy over every pixel."""
    truth, pred = truth.flatten(), pred.flatten()
    ious = []
    for c in range(21):
        labelled, predicted = truth == c, pred == c
        if labelled.sum() == 0:
            continue
        inter = predicted[labelled].sum().item()
        ious.append(inter / (predicted.sum().item() + labelled.sum().item() - inter))
    return sum(ious) / len(ious), (truth == pred).double().mean().item()


@pytest.mark.parametrize("seed", range(4))
def test_pooled_scores_equal_ref5s_iou_acc_on_masks_with_void(seed):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 6, (4, 12, 12), generator=g)
    truth[torch.rand(truth.shape, generator=g) < 0.15] = 255  # void scattered over the image
    truth[:, 0] = 255  # and a void border, as VOC draws around objects
    pred = torch.where(
        torch.rand(truth.shape, generator=g) < 0.6, truth.clamp(max=5), torch.randint(0, 8, truth.shape, generator=g)
    )
    iou, acc = ref5_iou_acc(truth, pred)
    scores = pooled_scores(pred, truth)
    assert scores["iou"]["value"] == pytest.approx(iou, abs=1e-12)
    assert scores["acc"]["value"] == pytest.approx(acc, abs=1e-12)
    # from counts a shard record can store: the confusion matrix plus the void predictions per image
    halves = [slice(0, 2), slice(2, 4)]
    conf = torch.cat([confusion_matrix(pred[h], truth[h]) for h in halves])
    void = torch.cat([void_prediction_counts(pred[h], truth[h]) for h in halves])
    pooled = pooled_from_counts(conf, torch.full((4,), 144.0), void)
    assert pooled["iou"]["value"] == pytest.approx(iou, abs=1e-12)
    # dropping the void pixels (torchvision's convention) reads high
    assert pooled_from_counts(conf, torch.full((4,), 144.0))["iou"]["value"] > iou + 0.01


def test_table1_means_leave_the_target_image_out():
    assert attacked_images(4, "single", 1) == [0, 2, 3]
    assert attacked_images(4, "roll", 1) == [0, 1, 2, 3]
    metrics = {"l2_255": torch.tensor([10.0, 0.0, 20.0, 30.0])}  # the target image (1) untouched
    assert summarize(metrics, attacked_images(4, "single", 1))["l2_255"].mean == pytest.approx(20.0)
    assert summarize(metrics)["l2_255"].mean == pytest.approx(15.0)
    assert summarize({"x": torch.tensor([1.0])})["x"].ci95 is None  # undefined, not NaN


def test_ground_truth_targets_are_the_target_images_mask(small_checkpoint, voc_folder, tmp_path):
    """[5] attacks toward image 1's ground truth: with target_source='truth' every image's target is that
    mask (void borders kept as ignore), also for images in other shards; a set without masks is refused."""
    from segattack.data.sets import ImageError, image_set
    from segattack.study.config import RunConfig
    from segattack.study.runner import count_images, run

    cfg = RunConfig(
        backbone="mobilenet_v3_large",
        attack="pgd",
        weights=str(small_checkpoint),
        images=f"voc:{voc_folder}",
        num_images=4,
        batch=2,
        steps=1,
        size=48,
        resize="squash",
        target_source="truth",
    )
    results, saved = run(cfg, tmp_path / "run", progress=False)
    truth = image_set(cfg.images, 48, "squash").load([1]).truth[0]
    assert (truth == 255).any()  # the fixture's masks have void borders
    assert all(torch.equal(t, truth) for t in saved.targets)  # shard 2 (images 2, 3) too
    assert results.attacked == [0, 2, 3]
    with pytest.raises(ImageError, match="needs ground truth"):
        count_images(RunConfig(images="photos", num_images=4, target_source="truth", weights="embedded"))
