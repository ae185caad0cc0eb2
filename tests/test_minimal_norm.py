"""Minimal-norm attacks (ALMA prox, PDPGD, FMN): the known minimal perturbation of a 1x1-conv model,
no larger than a budget attack's that succeeds, the building blocks by hand, and the invariants."""

import pytest
import torch

from segattack.attacks._minimal import dlr_constraints, is_better, l1_ball_projection, l2_prox, linf_prox, lp_norm
from segattack.attacks.alma_prox import alma_prox, linf_prox_box, p2_derivative, p2_penalty
from segattack.attacks.apgd import apgd
from segattack.attacks.fmn import fmn
from segattack.attacks.pdpgd import pdpgd

# Four pixels for the 1x1-conv model (class c in {0,1,2} scores channel c): predicted 0, 1, 0, 1.
X = torch.tensor([[0.7, 0.2, 0.5, 0.3], [0.2, 0.6, 0.3, 0.35], [0.1, 0.3, 0.45, 0.3]]).view(1, 3, 2, 2)
LABELS = torch.tensor([[[0, 1], [0, 1]]])
# A pixel leaves its class once the runner-up channel passes it (untargeted), or reaches class 2 once channel 2
# passes the top one (targeted): moving both by d costs L-inf d, L2 d*sqrt(2), d = half the gap. Every pixel
# must move (adv_threshold=1), so the smallest L-inf perturbation is the largest d, the smallest L2 one the
# root of the sum of the 2 d^2.
HALF_GAPS = {False: torch.tensor([0.25, 0.15, 0.025, 0.025]), True: torch.tensor([0.3, 0.15, 0.025, 0.025])}

ATTACKS = {
    "alma_prox": lambda model, x, y, **kw: alma_prox(model, x, y, lr_init=0.01, **kw),
    "pdpgd_linf": lambda model, x, y, **kw: pdpgd(model, x, y, norm="linf", **kw),
    "pdpgd_l2": lambda model, x, y, **kw: pdpgd(model, x, y, norm="l2", **kw),
    # On this linear model FMN's first-order distance estimate is exact: with the masked loss the L-inf run
    # lands on the boundary, where the last pixel ties (a tie is not a win) and the estimate stops growing;
    # summing every pixel's margin keeps pushing past it.
    "fmn_linf": lambda model, x, y, **kw: fmn(model, x, y, norm="linf", loss="sum", **kw),
    "fmn_l2": lambda model, x, y, **kw: fmn(model, x, y, norm="l2", **kw),
}
NORMS = {"alma_prox": "linf", "pdpgd_linf": "linf", "pdpgd_l2": "l2", "fmn_linf": "linf", "fmn_l2": "l2"}
# (steps, how far above the minimum the returned norm may be) on the linear model: PDPGD's L2 run ends 17%
# above it with adv_lib's schedule.
KNOWN = {
    "alma_prox": (100, 1.02),
    "pdpgd_linf": (300, 1.02),
    "pdpgd_l2": (300, 1.2),
    "fmn_linf": (100, 1.02),
    "fmn_l2": (100, 1.02),
}


# ALMA prox's targeted DLR divides by z_1 - (z_3 + z_4) / 2, where this model's -10 logits make z_4: its
# constraints shrink fivefold and it does not win every pixel in 100 steps, so its targeted case is left out.
CASES = [(name, targeted) for name in ATTACKS for targeted in (False, True) if not (name == "alma_prox" and targeted)]


@pytest.mark.parametrize("name, targeted", CASES)
def test_finds_the_known_minimal_norm_and_beats_a_succeeding_budget_attack(linear_model, name, targeted):
    norm = NORMS[name]
    labels = torch.full_like(LABELS, 2) if targeted else LABELS
    half_gaps = HALF_GAPS[targeted]
    best = half_gaps.max().item() if norm == "linf" else (2 * half_gaps.pow(2).sum()).sqrt().item()
    steps, slack = KNOWN[name]
    res = ATTACKS[name](linear_model, X, labels, targeted=targeted, steps=steps, adv_threshold=1.0)
    assert res.params["adversarial"] == [True] and res.success.item() == 1.0
    assert best - 1e-6 <= res.params["perturbation_norm"][0] <= best * slack
    # a budget attack that succeeds (APGD wins every pixel 2% above the L-inf minimum, 20% above the L2 one):
    # the minimal-norm attack's perturbation is no larger than its budget
    budget = apgd(
        linear_model,
        X,
        labels,
        targeted=targeted,
        steps=50,
        loss="mask-ce",
        norm=norm,
        eps=best * (1.02 if norm == "linf" else 1.2),
    )
    assert budget.success.item() == 1.0 and res.params["perturbation_norm"][0] <= budget.params["eps"]
    assert res.params["perturbation_norm"][0] == pytest.approx(lp_norm(res.adv - X, norm).item())


@pytest.mark.parametrize("name", list(ATTACKS))
def test_invariants(tiny_model, scene_inputs, name):
    images, labels = scene_inputs
    with torch.no_grad():
        targets = tiny_model(images).argmax(1).roll(1, 0)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    res = ATTACKS[name](tiny_model, images, targets, targeted=True, steps=12, adv_threshold=0.6)
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in before.items())
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    for key in ("loss", "success", "norm"):
        assert res.history[key].shape == (12, 4)
    assert res.params["iterations"] == [12] * 4 and res.params["adv_threshold"] == 0.6
    # the returned image is an iterate: a successful one where any succeeded, none larger among those
    succeeded = res.history["success"] >= 0.6
    smallest = torch.where(succeeded, res.history["norm"], torch.inf).min(0).values
    hit = succeeded.any(0)
    assert torch.allclose(torch.tensor(res.params["perturbation_norm"])[hit], smallest[hit], atol=1e-6)
    assert torch.equal(torch.tensor(res.params["adversarial"]), res.success >= 0.6)


def test_best_iterate_rule():
    dist, best = torch.tensor([0.2, 0.3, 0.1, 0.5]), torch.tensor([0.25, 0.25, 0.4, 0.4])
    share, best_share = torch.tensor([0.99, 0.99, 0.5, 0.6]), torch.tensor([0.99, 0.99, 0.6, 0.5])
    found = torch.tensor([True, True, False, False])
    # smaller and successful: yes; larger: no; before any success, the higher share wins whatever the norm
    assert is_better(dist, best, share, best_share, found, 0.99).tolist() == [True, False, False, True]


def test_dlr_constraints_by_hand(linear_model):
    logits = linear_model(X)
    z = X[0, :, 0, 0].tolist()  # 0.7, 0.2, 0.1 at pixel (0,0), label 0
    c = dlr_constraints(logits, LABELS, targeted=False, tolerance=0.0)
    assert c[0, 0, 0].item() == pytest.approx((z[0] - z[1]) / (z[0] - z[2]), rel=1e-5)
    # targeted toward class 2: -(z_2 - max_other) / (z_1 - (z_3 + z_4) / 2), z_4 the first -10 logit
    t = dlr_constraints(logits, torch.full_like(LABELS, 2), targeted=True, tolerance=0.0)
    assert t[0, 0, 0].item() == pytest.approx(-(z[2] - z[0]) / (z[0] - (z[2] - 10) / 2), rel=1e-5)


def test_proximal_operators_by_brute_force():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 2, 3)
    lam = torch.tensor([0.1, 0.5, 2.0]).view(-1, 1, 1, 1)
    # prox of lam*||.||: the minimiser of 1/2 ||u - x||^2 + lam ||u||, checked against perturbed points
    for prox, p in ((linf_prox, float("inf")), (l2_prox, 2)):
        u = prox(x, lam)

        def objective(v):
            return 0.5 * (v - x).flatten(1).pow(2).sum(1) + lam.flatten() * v.flatten(1).norm(p=p, dim=1)

        for _ in range(200):
            other = u + 0.01 * torch.randn_like(u)
            assert (objective(u) <= objective(other) + 1e-6).all()
    radius = torch.tensor([1.0, 0.5])
    v = torch.tensor([[0.8, -0.6, 0.1], [0.2, 0.1, -0.1]])
    projected = l1_ball_projection(v, radius)
    assert projected[0].tolist() == pytest.approx([0.6, -0.4, 0.0])  # threshold 0.2 on the first row
    assert projected[1].tolist() == pytest.approx([0.2, 0.1, -0.1])  # already inside: unchanged


def test_box_constrained_linf_prox_by_grid_search():
    torch.manual_seed(1)
    delta = torch.randn(2, 5) * 0.3
    lower, upper = -torch.rand(2, 5) * 0.2, torch.rand(2, 5) * 0.2
    metric, lam = torch.rand(2, 5) + 0.5, torch.tensor([0.05, 0.2])
    u = linf_prox_box(delta, lam, lower, upper, metric)
    assert ((u >= lower - 1e-7) & (u <= upper + 1e-7)).all()
    grid = torch.linspace(0, 0.3, 30001)
    for b in range(2):
        clipped = delta[b].clamp(lower[b], upper[b])
        t = grid.unsqueeze(1)
        costs = ((clipped.clamp(-t, t) - delta[b]) ** 2 * metric[b]).sum(1) + 2 * lam[b] * grid
        t_best = grid[int(costs.argmin())]
        assert u[b].abs().max().item() == pytest.approx(t_best.item(), abs=2e-5)


def test_p2_penalty_and_its_two_derivative_readings():
    y = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5], dtype=torch.float64, requires_grad=True)
    rho, mu = torch.full_like(y, 3.0), torch.full_like(y, 0.4)
    (auto,) = torch.autograd.grad(p2_penalty(y, rho, mu).sum(), y)
    assert torch.allclose(p2_derivative(y.detach(), rho, mu), auto)
    assert p2_penalty(y, rho, mu)[3].item() == pytest.approx(0.4 * 0.3 + 0.4 * 3 * 0.09 + 9 * 0.027 / 6)
    assert p2_penalty(y, rho, mu)[0].item() == pytest.approx(0.4 * -2 / (1 + 3 * 2))
    # adv_lib's backward: mu * y where the derivative has mu, so no slope at y = 0 from above
    adv_lib = p2_derivative(y.detach(), rho, mu, "adv_lib")
    assert adv_lib[2].item() == 0.0 and auto[2].item() == pytest.approx(0.4)
    assert torch.allclose(adv_lib[:2], auto[:2])  # the y < 0 branch is the same


def test_bad_arguments(tiny_model, scene_inputs):
    images, labels = scene_inputs
    for name in ATTACKS:
        with pytest.raises(ValueError, match="adv_threshold must be in"):
            ATTACKS[name](tiny_model, images, labels, adv_threshold=0.0)
    for attack in (pdpgd, fmn):
        with pytest.raises(ValueError, match="norm must be"):
            attack(tiny_model, images, labels, norm="l1")
    with pytest.raises(ValueError, match="loss must be"):
        fmn(tiny_model, images, labels, loss="ce")
    with pytest.raises(ValueError, match="projection must be"):
        fmn(tiny_model, images, labels, projection="cube")
    with pytest.raises(ValueError, match="penalty_grad must be"):
        alma_prox(tiny_model, images, labels, penalty_grad="autograd")
    with pytest.raises(ValueError, match="steps must be >= 2"):
        alma_prox(tiny_model, images, labels, steps=1)


def test_fmn_radius_rule_on_its_first_steps(linear_model):
    # Untargeted, L-inf, masked loss over the four pixels: L = sum of margins = 0.5 + 0.3 + 0.05 + 0.05 = 0.9,
    # its gradient +-1 on each pixel's label and runner-up channels: ||grad||_1 = 8, so eps_0 = 0 + 0.9 / 8.
    res = fmn(linear_model, X, LABELS, targeted=False, norm="linf", steps=3, adv_threshold=1.0)
    assert res.loss[0].item() == pytest.approx(0.9, rel=1e-5)
    assert res.history["epsilon"][0].item() == pytest.approx(0.9 / 8, rel=1e-5)
    # the step (alpha = 1 along the L2-normalised gradient, 1/sqrt(8) a coordinate) is clipped to eps_0,
    # which moves each margin down by 2 eps_0 = 0.225: the two pixels with margin 0.05 flip, two remain
    assert res.history["norm"][1].item() == pytest.approx(0.9 / 8, rel=1e-5)
    assert res.history["success"][1].item() == 0.5
    # never successful yet: eps_1 = ||delta_1|| + L_1 / ||grad L_1||_1, over the two unwon pixels only
    remaining = (0.5 - 0.225) + (0.3 - 0.225)
    assert res.loss[1].item() == pytest.approx(remaining, rel=1e-4)
    assert res.history["epsilon"][1].item() == pytest.approx(0.9 / 8 + remaining / 4, rel=1e-4)


@pytest.mark.parametrize("name", ["pdpgd", "alma_prox"])
def test_attacks_that_need_two_steps_run_from_the_cli(tmp_path, capsys, name):
    """The parameter check ran every attack with steps=1, which pdpgd and alma_prox refuse: neither could run
    from the CLI, the report or the notebooks."""
    import json

    from segattack.cli import main

    args = ["attack", "--backbone", "mobilenet_v3_large", "--attack", name, "--weights", "embedded", "--size", "48"]
    assert main([*args, "--out", str(tmp_path / "run"), "--steps", "2", "--num-images", "2"]) == 0
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["config"]["attack"] == name and doc["iterations"] == [2, 2]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "one"), "--steps", "1", "--num-images", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["segattack attack: error: steps must be >= 2, got 1"]
    assert not (tmp_path / "one").exists()
