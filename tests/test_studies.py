import pytest
import torch

from segattack.attacks import ATTACKS, AttackSpec, targeted_pgd
from segattack.study.studies import class_difficulty, compare_attack, curve_rows, transfer_matrix

COMPARED = [spec.name for spec in ATTACKS.compared()]


def test_class_difficulty_counts_only_pixels_that_must_change():
    clean = torch.tensor([[[0, 0, 8, 8]]])
    target = torch.tensor([[[8, 8, 8, 15]]])  # the two 8s already present do not count
    pred = torch.tensor([[[8, 0, 8, 15]]])
    rows = {r["class"]: r for r in class_difficulty("pgd", "m", pred, target, clean)}
    assert all(r["image"] == 0 for r in rows.values())
    assert rows["cat"]["pixels"] == 2 and rows["cat"]["imposed"] == 0.5
    assert rows["person"]["pixels"] == 1 and rows["person"]["imposed"] == 1.0
    assert set(rows) == {"cat", "person"}


def test_budget_rules():
    assert ATTACKS["pgd"].budget_params(0.03, 10, "resnet50") == {"mode": "linf", "eps": 0.03, "steps": 10}
    assert ATTACKS["asma"].budget_params(0.03, 10, "resnet50") == {"beta": 1e-4, "tau": 1e-5, "eps": 0.03, "steps": 10}
    assert ATTACKS["dag"].budget_params(0.04, 10, "resnet50")["gamma"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="no budget rule"):
        AttackSpec("fgsm", targeted_pgd, "FGSM").budget_params(0.03, 10, "resnet50")
    with pytest.raises(KeyError, match="unknown attack 'fgsm'"):
        ATTACKS["fgsm"]


def test_compare_curves_and_transfer_on_a_tiny_model(tiny_model, scene_inputs):
    images, _ = scene_inputs
    with torch.no_grad():
        clean = tiny_model(images).argmax(1)
    targets = clean.roll(1, 0)
    eps = 8 / 255
    rows, results = [], {}
    for attack in COMPARED:
        attack_rows, results[attack] = compare_attack(tiny_model, "tiny", attack, images, targets, clean, eps, 3)
        rows += attack_rows
    assert {r["attack"] for r in rows} == set(COMPARED) and len(rows) == 4 * len(COMPARED)
    assert all(r["linf"] <= eps + 1e-6 for r in rows if r["attack"] != "dag")
    curve = [
        r
        for e in (2 / 255, 16 / 255)
        for r in curve_rows(tiny_model, "tiny", "pgd", images[:2], targets[:2], clean[:2], e, 3, [5, 6])
    ]
    assert [r["eps"] for r in curve] == [2 / 255] * 2 + [16 / 255] * 2 and [r["image"] for r in curve] == [5, 6] * 2
    transfer = transfer_matrix("tiny", {"pgd": results["pgd"].adv}, images, tiny_model, "tiny", targets)
    baseline = [r["success_changed"] for r in transfer if r["attack"] == "none (clean)"]
    assert baseline and all(v in (0.0, None) for v in baseline)  # the clean images change nothing: 0 by construction
    same = [r["success"] for r in transfer if r["attack"] == "pgd"]
    assert same == pytest.approx([r["success"] for r in rows if r["attack"] == "pgd"])  # same model: same success
