"""APGD for segmentation and SEA's losses: hand-computed values and first steps, the step-size rule,
the projection, and the SEA authors' ``apgd_train`` re-typed as a reference."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segattack.attacks import AttackResult, pgd
from segattack.attacks.apgd import apgd, checkpoints, stalled
from segattack.attacks.losses import (
    VOC_CLASS_WEIGHTS,
    balanced_masked_ce_loss,
    ce_loss,
    class_norm,
    class_softmax,
    get_loss,
    js_loss,
    masked_ce_loss,
    pixel_cross_entropy,
)
from segattack.attacks.sea import sea, stage_steps, worst_case
from segattack.metrics import pixel_accuracy
from segattack.models.wrapper import wrap_model

# A 1x2 image for the 1x1-conv model (class c in {0,1,2} scores channel c, the others -10).
X = torch.tensor([[0.7, 0.2], [0.2, 0.3], [0.1, 0.6]]).view(1, 3, 1, 2)  # predicted 0 and 2


def ce_by_hand(scores, label):
    """Cross-entropy of one pixel with 21 logits: channels 0..2 = scores, the rest -10."""
    z = list(scores) + [-10.0] * 18
    return math.log(sum(math.exp(v) for v in z)) - z[label]


def js_by_hand(scores, label):
    z = list(scores) + [-10.0] * 18
    total = sum(math.exp(v) for v in z)
    p = [math.exp(v) / total for v in z]
    q = [1.0 if c == label else 0.0 for c in range(21)]
    m = [(a + b) / 2 for a, b in zip(p, q)]

    def kl(a):
        return sum(ai * math.log(ai / mi) for ai, mi in zip(a, m) if ai > 0)

    return (kl(p) + kl(q)) / 2


def pixel_scores(x):
    return [x[0, :, 0, j].tolist() for j in range(x.shape[-1])]


def test_losses_by_hand(linear_model):
    logits = linear_model(X)
    s0, s1 = pixel_scores(X)
    labels = torch.tensor([[[0, 0]]])  # pixel 0 at its label, pixel 1 (predicted 2) not
    assert ce_loss(logits, labels).item() == pytest.approx((ce_by_hand(s0, 0) + ce_by_hand(s1, 0)) / 2, rel=1e-5)
    # mask-CE: only the pixel still at its label counts (untargeted), only the other one (targeted),
    # divided by the two labelled pixels either way
    assert masked_ce_loss(logits, labels).item() == pytest.approx(ce_by_hand(s0, 0) / 2, rel=1e-5)
    assert masked_ce_loss(logits, labels, targeted=True).item() == pytest.approx(ce_by_hand(s1, 0) / 2, rel=1e-5)
    bal = torch.tensor([[[1, 2]]])  # pixel 1 at its label 2, pixel 0 not at 1
    assert balanced_masked_ce_loss(logits, bal).item() == pytest.approx(
        VOC_CLASS_WEIGHTS[2] * ce_by_hand(s1, 2) / 2, rel=1e-5
    )
    assert balanced_masked_ce_loss(logits, bal, targeted=True).item() == pytest.approx(
        VOC_CLASS_WEIGHTS[1] * ce_by_hand(s0, 1) / 2, rel=1e-5
    )
    assert js_loss(logits, labels).item() == pytest.approx((js_by_hand(s0, 0) + js_by_hand(s1, 0)) / 2, rel=1e-5)
    # an ignored pixel adds nothing and leaves the denominator
    ignored = torch.tensor([[[0, 255]]])
    for fn, value in ((ce_loss, ce_by_hand(s0, 0)), (js_loss, js_by_hand(s0, 0)), (masked_ce_loss, ce_by_hand(s0, 0))):
        assert fn(logits, ignored).item() == pytest.approx(value, rel=1e-5)
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("dlr")


def test_js_is_exact_and_finite_where_the_softmax_underflows():
    # class 1 leads by 200 on both pixels: every other probability underflows to 0 in float32
    logits = torch.zeros(1, 21, 1, 2)
    logits[0, 1] = 200.0
    logits.requires_grad_(True)
    labels = torch.tensor([[[1, 0]]])  # pixel 0 at its label (p_y = 1: JS 0), pixel 1 not (p_y = 0: JS log 2)
    value = js_loss(logits, labels)
    assert value.item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert torch.isfinite(grad).all()
    # and on ordinary logits the closed form is the definition, class by class, in float64
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(2, 21, 3, 4, generator=g, dtype=torch.float64) * 3, torch.randint(0, 21, (2, 3, 4), generator=g)
    p, q = z.softmax(1), F.one_hot(y, 21).permute(0, 3, 1, 2).double()
    m = (p + q) / 2
    kl = (p * (p / m).log()).sum(1) + (q * (q / m).log()).nan_to_num().sum(1)
    torch.testing.assert_close(js_loss(z, y), (kl / 2).flatten(1).mean(1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("classes", [2, 21, 150])
def test_channels_last_logits_give_the_same_losses_and_gradients(classes):
    # pixel_cross_entropy and class_softmax read channels_last logits as (pixel, class) rows: the
    # values and the gradient must be those of F.cross_entropy / softmax on the NCHW tensor
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(2, classes, 5, 7, generator=g) * 4
    labels = torch.randint(0, classes, (2, 5, 7), generator=g)
    labels[0, 1, 2:5] = 255
    weight = torch.rand(classes, generator=g)
    nhwc = logits.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    nchw = logits.clone().requires_grad_(True)
    assert nhwc.stride(1) == 1 and not nhwc.is_contiguous()
    for w in (None, weight):
        expected = F.cross_entropy(nchw, labels, weight=w, ignore_index=255, reduction="none")
        got = pixel_cross_entropy(nhwc, labels, w)
        assert got.shape == labels.shape and torch.equal(got[0, 1, 2:5], torch.zeros(3))
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(pixel_cross_entropy(nchw, labels, w), expected, rtol=0, atol=0)
        (g_nhwc,) = torch.autograd.grad(got.sum(), nhwc)
        (g_nchw,) = torch.autograd.grad(expected.sum(), nchw)
        torch.testing.assert_close(g_nhwc, g_nchw, rtol=1e-6, atol=1e-6)
    for layout in (nhwc, nchw):
        got = class_softmax(layout.detach())
        assert got.shape == logits.shape
        torch.testing.assert_close(got, logits.softmax(1), rtol=1e-6, atol=1e-6)
    for layout in (nhwc, nchw):  # the L2 norm over the classes, by either kernel
        torch.testing.assert_close(class_norm(layout.detach()), logits.norm(dim=1), rtol=1e-6, atol=1e-6)
    # js on channels_last logits is the NCHW value
    torch.testing.assert_close(js_loss(nhwc.detach(), labels), js_loss(logits, labels), rtol=1e-6, atol=1e-7)


def test_first_step_by_hand(linear_model):
    # With x^(0) = x the first step (2 eps) lands on the ball's edge: x + eps * sign(grad), per channel.
    # CE's gradient on channel c of a pixel labelled y is softmax_c - [c = y]: down on y, up elsewhere.
    eps = 0.05
    labels = torch.tensor([[[0, 0]]])
    up = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, 1.0]]).view(1, 3, 1, 2)
    ce = apgd(linear_model, X, labels, targeted=False, steps=1, eps=eps)
    assert torch.allclose(ce.adv, X + eps * up, atol=1e-6)
    assert ce.loss[0].item() == pytest.approx(ce_loss(linear_model(X), labels).item())
    # mask-CE moves only the pixel still at its label; targeted, only the pixel not yet at the target
    # (descending: the target channel up, the others down)
    masked = apgd(linear_model, X, labels, targeted=False, steps=1, eps=eps, loss="mask-ce")
    assert torch.allclose(masked.adv[..., 0], (X + eps * up)[..., 0], atol=1e-6)
    assert torch.equal(masked.adv[..., 1], X[..., 1])
    toward = apgd(linear_model, X, labels, targeted=True, steps=1, eps=eps, loss="mask-ce")
    assert torch.equal(toward.adv[..., 0], X[..., 0])
    assert torch.allclose(toward.adv[..., 1], (X - eps * up)[..., 1], atol=1e-6)
    assert toward.params["iterations"] == [1] and toward.params["loss"] == "mask-ce"


def test_second_step_mixes_in_momentum(linear_model):
    # L2, one pixel, steps=2: x1 = P(x + 2 eps g/|g|), z = P(x1 + 2 eps g1/|g1|),
    # x2 = P(x1 + 0.75 (z - x1) + 0.25 (x1 - x)); P projects onto the L2 ball, then clips to [0,1].
    # A ball as large as the pixel range, so that the clip bends the path and the momentum shows.
    x = torch.tensor([0.5, 0.3, 0.5]).view(1, 3, 1, 1)
    labels = torch.tensor([[[0]]])
    eps = 1.0

    def grad(point):
        point = point.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ce_loss(linear_model(point), labels).sum(), point)
        return g / g.norm()

    def proj(point):
        d = point - x
        return (x + d * min(1.0, eps / d.norm().item())).clamp(0, 1)

    x1 = proj(x + 2 * eps * grad(x))
    z = proj(x1 + 2 * eps * grad(x1))
    x2 = proj(x1 + 0.75 * (z - x1) + 0.25 * (x1 - x))
    seen = []
    hook = linear_model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        apgd(linear_model, x, labels, targeted=False, steps=2, eps=eps, norm="l2")
    finally:
        hook.remove()
    assert torch.allclose(seen[1], x1, atol=1e-6) and torch.allclose(seen[2], x2, atol=1e-6)
    assert (x2 - z).abs().max() > 0.05  # the momentum term moved the iterate


def test_halving_rule():
    # spacing 4, rho 0.75: halve when the loss rose on <= 3 of the 4 iterations ...
    rises = torch.tensor([4, 3, 4, 4])
    halved_last = torch.tensor([True, True, False, False])
    best_at_last, best = torch.tensor([1.0, 1.0, 2.0, 2.0]), torch.tensor([1.5, 1.5, 2.0, 2.5])
    # ... or when it did not halve last time and the best loss has not improved since (image 2)
    assert stalled(rises, 4, 0.75, halved_last, best_at_last, best).tolist() == [False, True, True, False]
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]  # 22, then spacing -3 down to 6
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_flat_loss_halves_at_every_checkpoint():
    # a model whose output ignores its input: the loss never rises, every checkpoint halves the step
    flat = nn.Conv2d(3, 21, 1)
    with torch.no_grad():
        flat.weight.zero_()
    model = wrap_model(flat, normalize=False)
    steps, eps = 12, 0.1
    res = apgd(
        model,
        torch.full((2, 3, 4, 4), 0.5),
        torch.zeros(2, 4, 4, dtype=torch.long),
        targeted=False,
        steps=steps,
        eps=eps,
    )
    expected, size = [], 2 * eps
    marks = set(checkpoints(steps))
    for it in range(steps):
        size = size / 2 if it in marks else size
        expected.append(size)
    assert res.history["step_size"][:, 0].tolist() == pytest.approx(expected)
    assert expected[1] == 2 * eps and expected[-1] < 2 * eps / 2**5


@pytest.mark.parametrize("norm, eps", [("linf", 4 / 255), ("l2", 0.3)])
def test_every_iterate_stays_in_its_ball_and_in_range(tiny_model, scene_inputs, norm, eps):
    images, labels = scene_inputs
    seen = []
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    hook = tiny_model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        res = apgd(
            tiny_model,
            images,
            labels,
            targeted=False,
            steps=8,
            eps=eps,
            norm=norm,
            random_start=True,
            loss="js",
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        hook.remove()
    assert len(seen) == 8 + 2  # steps + 1 iterates, then the returned images
    for point in seen:
        d = (point - images).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert size.max() <= eps * (1 + 1e-5) and point.min() >= 0 and point.max() <= 1
    assert (seen[0] - images).abs().max() > 0  # the random start moved
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in before.items())
    assert res.loss.shape == (8, 4) and res.history["success"].shape == (8, 4)
    assert res.params["iterations"] == [8] * 4
    # the returned images are each image's most successful iterate
    assert (res.success.float() >= res.history["success"].max(0).values - 1e-6).all()


def test_untargeted_apgd_beats_the_clean_accuracy_and_stops_early(tiny_model, scene_inputs):
    images, labels = scene_inputs
    res = apgd(tiny_model, images, labels, targeted=False, steps=10, eps=16 / 255, loss="mask-ce")
    assert (res.success > res.history["success"][0]).all()
    stop = apgd(tiny_model, images, labels, targeted=False, steps=10, eps=16 / 255, loss="mask-ce", adv_threshold=0.4)
    stopped = stop.success >= 0.4
    assert stopped.any() and min(stop.params["iterations"]) < 10
    unstopped = torch.tensor(stop.params["iterations"]) == 10
    assert torch.equal(stop.adv[unstopped], res.adv[unstopped])  # the other images are untouched by the stop


def test_bad_arguments(tiny_model, scene_inputs):
    images, labels = scene_inputs
    for kwargs, message in (
        ({"norm": "l1"}, "norm must be"),
        ({"loss": "dlr"}, "loss must be one of"),
        ({"eps": 0.0}, "eps must be > 0"),
        ({"steps": 0}, "steps must be > 0"),
        ({"rho": 1.5}, "rho must be"),
        ({"track_loss": "x"}, "loss must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            apgd(tiny_model, images, labels, **kwargs)


# --- The SEA authors' apgd_train (nmndeep/Robust-Segmentation, semseg/attacker.py), re-typed. ---------
# Their labels use -1 for ignore, their losses divide by all H*W pixels, and ``loss_steps`` starts as
# zeros, so the first checkpoint compares the first loss with 0 (see segattack.attacks.apgd).


def their_masked_ce(logits, y, weights=None):
    mask = (logits.max(1)[1] == y) * (y != -1)
    return mask.float().detach() * F.cross_entropy(logits, y, reduction="none", ignore_index=-1, weight=weights)


def their_js(logits, y):
    p = F.softmax(logits, 1)
    keep = (y != -1).long()
    q = F.one_hot((keep * y).view(y.shape[0], -1), p.shape[1]).permute(0, 2, 1).view(p.shape).float()
    m = (p + q) / 2
    loss = (F.kl_div(m.log(), p, reduction="none") + F.kl_div(m.log(), q, reduction="none")) / 2
    return (keep.unsqueeze(1) * loss).sum(1)


THEIR_LOSSES = {
    "ce": lambda z, y: F.cross_entropy(z, y, reduction="none", ignore_index=-1),
    "mask-ce": their_masked_ce,
    "mask-ce-bal": lambda z, y: their_masked_ce(z, y, torch.tensor(VOC_CLASS_WEIGHTS)),
    "js": their_js,
}


def their_apgd_train(
    model,
    x,
    y,
    norm,
    eps,
    n_iter,
    loss,
    track_loss=None,
    x_init=None,
    shift=0.0,
    sign=1.0,
    paper_first_check=False,
    early_stop=False,
):
    """Returns (x_best_adv, acc). ``sign=-1, shift=C`` ascends C - loss (a targeted loss kept positive).
    ``paper_first_check`` puts the start's loss where their first checkpoint reads an unfilled zero
    (the row ``loss_steps[-1]``), segattack's default ``checkpoint_rule="paper"``; ``early_stop``
    stops the batch once every image's accuracy is 0."""
    y = torch.where(y == 255, -1, y)
    bs = x.shape[0]
    keep = (y != -1).float()

    def per_image(name, logits):
        return shift + sign * (THEIR_LOSSES[name](logits, y) * keep).view(bs, -1).mean(-1)

    def l2(t):
        return t.view(bs, -1).norm(dim=1).view(-1, 1, 1, 1)

    def project(point):
        if norm == "linf":
            return torch.clamp(torch.min(torch.max(point, x - eps), x + eps), 0.0, 1.0)
        d = point - x
        return torch.clamp(x + d / (l2(d) + 1e-12) * torch.min(eps * torch.ones_like(x), l2(d)), 0.0, 1.0)

    track_loss = track_loss or loss
    x_adv = (x if x_init is None else x_init).clone().clamp(0.0, 1.0)
    x_best, x_best_adv = x_adv.clone(), x_adv.clone()
    loss_steps = torch.zeros(n_iter, bs)
    n_iter_2, n_iter_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    k = n_iter_2
    step_size = 2.0 * eps * torch.ones(bs, 1, 1, 1)
    counter3 = 0
    x_adv.requires_grad_()
    logits = model(x_adv)
    grad = torch.autograd.grad(per_image(loss, logits).sum(), [x_adv])[0].detach()
    loss_indiv = per_image(track_loss, logits).detach()
    grad_best = grad.clone()
    x_adv = x_adv.detach()
    acc = (logits.detach().max(1)[1] == y).float().view(bs, -1).mean(-1)
    loss_best = loss_indiv.clone()
    if paper_first_check:
        loss_steps[-1] = loss_indiv
    loss_best_last_check, reduced_last_check = loss_best.clone(), torch.ones_like(loss_best)
    x_adv_old = x_adv.clone()
    for i in range(n_iter):
        grad2 = x_adv - x_adv_old
        x_adv_old = x_adv.clone()
        a = 0.75 if i > 0 else 1.0
        if norm == "linf":
            x_adv_1 = project(x_adv + step_size * torch.sign(grad))
        else:
            x_adv_1 = project(x_adv + step_size * grad / (l2(grad) + 1e-12))
        x_adv = project(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a)).requires_grad_()
        logits = model(x_adv)
        if i < n_iter - 1:
            grad = torch.autograd.grad(per_image(loss, logits).sum(), [x_adv])[0].detach()
        y1 = per_image(track_loss, logits).detach()
        x_adv = x_adv.detach()
        pred = logits.detach().max(1)[1] == y
        pred[y == -1] = True
        avg_acc = pred.float().view(bs, -1).mean(-1)
        ind_pred = avg_acc <= acc
        acc = torch.min(acc, avg_acc)
        x_best_adv[ind_pred] = x_adv[ind_pred] + 0.0
        loss_steps[i] = y1
        ind = y1 > loss_best
        x_best[ind], grad_best[ind], loss_best[ind] = x_adv[ind].clone(), grad[ind].clone(), y1[ind]
        counter3 += 1
        if counter3 == k:
            t = torch.zeros(bs)
            for c in range(k):
                t += (loss_steps[i - c] > loss_steps[i - c - 1]).float()
            fl_osc = (t <= k * 0.75).float()
            fl_no = (1.0 - reduced_last_check) * (loss_best_last_check >= loss_best).float()
            fl_osc = torch.max(fl_osc, fl_no)
            reduced_last_check, loss_best_last_check = fl_osc.clone(), loss_best.clone()
            ind = fl_osc > 0
            step_size[ind] /= 2.0
            x_adv[ind], grad[ind] = x_best[ind].clone(), grad_best[ind].clone()
            counter3 = 0
            k = max(k - size_decr, n_iter_min)
        if early_stop and acc.sum() == 0:
            break
    return x_best_adv, acc


def inputs_seen(model, run):
    seen = []
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        out = run()
    finally:
        hook.remove()
    return seen, out


@pytest.mark.parametrize(
    "norm, eps, loss, track",
    [
        ("linf", 8 / 255, "mask-ce-bal", "ce"),
        ("linf", 8 / 255, "js", None),
        ("l2", 0.5, "mask-ce", "ce"),
        ("linf", 4 / 255, "ce", None),
    ],
)
def test_iterates_equal_the_sea_authors_apgd_train(tiny_model, scene_inputs, norm, eps, loss, track):
    images, labels = scene_inputs
    labels = labels.clone()
    labels[0, :2] = 255  # ignored pixels: the iterates do not depend on how accuracy counts them
    steps = 10  # checkpoints after iterations 2, 3, ..., 10
    theirs, _ = inputs_seen(
        tiny_model, lambda: their_apgd_train(tiny_model, images, labels, norm, eps, steps, loss, track)
    )
    ours, res = inputs_seen(
        tiny_model,
        lambda: apgd(
            tiny_model, images, labels, targeted=False, steps=steps, eps=eps, norm=norm, loss=loss, track_loss=track
        ),
    )
    tracked = res.history["track"]
    assert (tracked[1] > tracked[0]).all()  # the premise under which the first checkpoints agree
    sizes = res.history["step_size"]
    assert (sizes[-1] < sizes[0]).any()  # some image halved its step: the checkpoints were exercised
    assert len(theirs) == steps + 1 and len(ours) == steps + 2
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert torch.allclose(a, b, atol=1e-5), f"iterate {i}"


def test_returned_images_equal_the_authors_lowest_accuracy_iterate(tiny_model, scene_inputs):
    images, labels = scene_inputs  # no ignored pixels: the authors' accuracy is the labelled-pixel one
    theirs, acc = their_apgd_train(tiny_model, images, labels, "linf", 8 / 255, 10, "mask-ce", "ce")
    ours = apgd(tiny_model, images, labels, targeted=False, steps=10, eps=8 / 255, loss="mask-ce", track_loss="ce")
    assert torch.allclose(ours.adv, theirs, atol=1e-5)
    assert torch.allclose(1 - ours.success.float(), acc, atol=1e-6)


def test_targeted_iterates_equal_the_authors_update_on_the_negated_loss(tiny_model, scene_inputs):
    images, _ = scene_inputs
    with torch.no_grad():
        targets = tiny_model(images).argmax(1).roll(1, 0)
    steps = 10
    # targeted APGD descends CE to the target: their update ascending 10 - CE (kept positive for their
    # first checkpoint's comparison with zero, small enough to keep float32's resolution)
    theirs, _ = inputs_seen(
        tiny_model,
        lambda: their_apgd_train(tiny_model, images, targets, "linf", 8 / 255, steps, "ce", shift=10.0, sign=-1.0),
    )
    ours, res = inputs_seen(
        tiny_model, lambda: apgd(tiny_model, images, targets, targeted=True, steps=steps, eps=8 / 255)
    )
    tracked = res.history["track"]
    assert (tracked[1] < tracked[0]).all() and tracked.max() < 10  # CE to the target fell, 10 - CE > 0: the premises
    for i, (a, b) in enumerate(zip(theirs, ours)):
        assert torch.allclose(a, b, atol=1e-5), f"iterate {i}"
    assert (res.success > res.history["success"][0]).all()


# --- SEA -------------------------------------------------------------------------------------------


def their_apgd_largereps(model, x, y, eps, n_iter, loss, t, paper_first_check=True, early_stop=False):
    """The authors' ``apgd_largereps`` (L-inf, track_loss ce), re-typed; ``t`` the uniform [0,1) draw of
    the first stage's random start."""
    n_iters = [int(c * n_iter) for c in [0.3, 0.3]]
    n_iters.append(n_iter - sum(n_iters))
    x_init, acc = None, None
    for inner_it, inner_eps in zip(n_iters, [c * eps for c in [2, 1.5, 1]]):
        if x_init is None:
            start = (x + inner_eps * (2 * t - 1)).clamp(0.0, 1.0)
        else:
            start = (x + (x_init - x).clamp(-inner_eps, inner_eps)).clamp(0.0, 1.0)
        x_init, acc = their_apgd_train(
            model,
            x,
            y,
            "linf",
            inner_eps,
            inner_it,
            loss,
            "ce",
            x_init=start,
            paper_first_check=paper_first_check,
            early_stop=early_stop,
        )
    return x_init, acc


def test_sea_runs_the_authors_schedule_and_keeps_each_images_worst_case(tiny_model, scene_inputs):
    images, labels = scene_inputs  # no ignored pixels: the authors' accuracy is the labelled-pixel one
    eps, steps = 8 / 255, 10  # stages of 3, 3 and 4 iterations at 2, 1.5 and 1 eps
    draws = torch.Generator().manual_seed(3)
    reference = [
        their_apgd_largereps(tiny_model, images, labels, eps, steps, loss, torch.rand(images.shape, generator=draws))
        for loss in ("mask-ce-bal", "mask-ce", "js")
    ]
    res = sea(
        tiny_model,
        images,
        labels,
        targeted=False,
        steps=steps,
        eps=eps,
        adv_threshold=None,
        generator=torch.Generator().manual_seed(3),
    )
    assert res.params["stage_steps"] == [3, 3, 4] and res.params["losses"] == ["mask-ce-bal", "mask-ce", "js"]
    accs = torch.stack([acc for _, acc in reference])
    for member, acc in zip(res.params["members"], accs):
        assert member["success"] == pytest.approx((1 - acc).tolist(), abs=1e-6)
        assert [s["eps"] for s in member["stages"]] == pytest.approx([2 * eps, 1.5 * eps, eps])
    assert len(set(res.params["chosen"])) > 1  # the members win on different images
    for i, member in enumerate(res.params["chosen"]):
        assert member == int(accs[:, i].argmin())
        assert torch.allclose(res.adv[i], reference[member][0][i], atol=1e-5)
    assert res.loss.shape == (3 * steps, 4) and res.params["iterations"] == [3 * steps] * 4
    assert (res.adv - images).abs().max() <= eps + 1e-6


def test_sea_stage_split_and_its_short_runs(linear_model):
    assert stage_steps(300) == [90, 90, 120] and stage_steps(3) == [0, 0, 3] and stage_steps(10) == [3, 3, 4]
    # with 3 iterations the first two stages only project: the random start at 2 eps is pulled to eps
    res = sea(
        linear_model,
        X,
        torch.tensor([[[0, 0]]]),
        targeted=False,
        steps=3,
        eps=0.02,
        generator=torch.Generator().manual_seed(0),
        adv_threshold=None,
    )
    assert [m["stages"] for m in res.params["members"]] == [[{"steps": 3, "eps": 0.02}]] * 3
    assert res.loss.shape == (9, 1) and (res.adv - X).abs().max() <= 0.02 + 1e-6
    with pytest.raises(ValueError, match="loss must be one of"):
        sea(linear_model, X, torch.tensor([[[0, 0]]]), losses=["mask-ce", "dlr"])


def fake(success, fill, targeted=False, steps=1):
    n = len(success)
    return AttackResult(
        torch.full((n, 3, 2, 2), fill),
        {"loss": torch.full((steps, n), fill), "success": torch.zeros(steps, n)},
        {"targeted": targeted, "iterations": [steps] * n},
        torch.full((n, 2, 2), int(fill)),
        torch.tensor(success),
    )


def test_worst_case_by_hand():
    worst = worst_case(
        [fake([0.2, 0.9, 0.5], 0.0), fake([0.6, 0.1, 0.5], 1.0, steps=2), fake([0.4, 0.3, 0.7], 2.0)], targeted=False
    )
    assert worst.success.tolist() == pytest.approx([0.6, 0.9, 0.7])
    assert worst.params["chosen"] == [1, 0, 2]  # image 2: members 0 and 1 tie below member 2
    assert worst.adv[:, 0, 0, 0].tolist() == [1.0, 0.0, 2.0] and worst.pred[:, 0, 0].tolist() == [1, 0, 2]
    assert worst.loss.shape == (4, 3) and worst.loss[:, 0].tolist() == [0.0, 1.0, 1.0, 2.0]  # one after another
    assert worst.params["iterations"] == [4, 4, 4]
    assert worst_case([fake([0.5], 0.0), fake([0.5], 1.0)], targeted=False).params["chosen"] == [0]  # first on ties
    with pytest.raises(ValueError, match="untargeted"):
        worst_case([fake([0.5], 0.0), fake([0.5], 1.0, targeted=True)], targeted=False)
    with pytest.raises(ValueError, match="at least one"):
        worst_case([], targeted=True)


@pytest.mark.parametrize("targeted", [False, True])
def test_worst_case_is_at_least_as_strong_as_each_member_on_every_image(tiny_model, scene_inputs, targeted):
    images, labels = scene_inputs
    if targeted:
        with torch.no_grad():
            labels = tiny_model(images).argmax(1).roll(1, 0)
    eps = 12 / 255
    members = [
        apgd(tiny_model, images, labels, targeted=targeted, steps=6, eps=eps, loss=loss)
        for loss in ("ce", "mask-ce", "js")
    ]
    members.append(pgd(tiny_model, images, labels, mode="linf", targeted=targeted, steps=6, eps=eps))
    worst = worst_case(members, targeted)
    for member in members:
        assert (worst.success >= member.success).all()
    with torch.no_grad():  # the returned images deliver the success they claim
        achieved = pixel_accuracy(tiny_model(worst.adv).argmax(1), labels).float()
    assert torch.allclose(worst.success, achieved if targeted else 1 - achieved)
    assert (worst.adv - images).abs().max() <= eps + 1e-6
    assert set(worst.history) == {"loss", "success"} and worst.loss.shape == (24, 4)


def test_the_authors_checkpoint_rule_takes_their_iterates_where_the_papers_does_not(tiny_model, scene_inputs):
    # SEA's second and third stages start from a high-loss point, so their first step often lowers the
    # tracked loss: there the authors' first checkpoint (a rise over an unfilled zero) and the paper's part
    images, labels = scene_inputs
    eps, steps = 8 / 255, 10
    start = sea(
        tiny_model, images, labels, targeted=False, steps=steps, eps=eps, losses=["mask-ce"], adv_threshold=None
    )
    point = (images + (start.adv - images).clamp(-1.5 * eps, 1.5 * eps)).clamp(0, 1)
    theirs, _ = inputs_seen(
        tiny_model,
        lambda: their_apgd_train(tiny_model, images, labels, "linf", eps, steps, "mask-ce", "ce", x_init=point),
    )

    def ours(rule):
        return inputs_seen(
            tiny_model,
            lambda: run_apgd_from(tiny_model, images, labels, point, steps, eps, rule),
        )[0]

    authors, paper = ours("authors"), ours("paper")
    for i, (a, b) in enumerate(zip(theirs, authors)):
        assert torch.allclose(a, b, atol=1e-5), f"iterate {i}"
    assert max((a - b).abs().max().item() for a, b in zip(theirs, paper)) > 1e-3  # the readings differ here


def run_apgd_from(model, images, labels, point, steps, eps, rule):
    from segattack.attacks.apgd import run_apgd

    return run_apgd(
        model,
        images,
        labels,
        point,
        targeted=False,
        steps=steps,
        eps=eps,
        norm="linf",
        loss="mask-ce",
        track_loss="ce",
        rho=0.75,
        adv_threshold=None,
        progress=False,
        params={},
        checkpoint_rule=rule,
    )


@pytest.mark.parametrize("rule", ["authors", "paper"])
def test_sea_under_the_authors_readings_is_their_apgd_largereps(linear_model, rule):
    # their whole-batch early stop and (rule="authors") their first checkpoint: the members' images and
    # successes equal the re-typed apgd_largereps with early_stop, on images the first stage wins whole
    images = 0.5 + 0.08 * torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = linear_model(images).argmax(1)
    eps, steps = 0.08, 10
    draws = torch.Generator().manual_seed(3)
    reference = [
        their_apgd_largereps(
            linear_model,
            images,
            labels,
            eps,
            steps,
            loss,
            torch.rand(images.shape, generator=draws),
            paper_first_check=rule == "paper",
            early_stop=True,
        )
        for loss in ("mask-ce-bal", "mask-ce", "js")
    ]
    kwargs = {"targeted": False, "steps": steps, "eps": eps, "checkpoint_rule": rule}
    batch = sea(linear_model, images, labels, early_stop="batch", generator=torch.Generator().manual_seed(3), **kwargs)
    per_image = sea(linear_model, images, labels, generator=torch.Generator().manual_seed(3), **kwargs)
    accs = torch.stack([acc for _, acc in reference])
    assert (accs == 0).any() and min(batch.params["iterations"]) < 3 * steps  # the batch stop is exercised
    for member, acc in zip(batch.params["members"], accs):
        assert member["success"] == pytest.approx((1 - acc).tolist(), abs=1e-6)
    for i, member in enumerate(batch.params["chosen"]):
        assert torch.allclose(batch.adv[i], reference[member][0][i], atol=1e-5)
    assert batch.params["early_stop"] == "batch" and per_image.params["early_stop"] == "image"
    assert per_image.params["iterations"] != batch.params["iterations"]  # the stops differ in cost
