"""``ensemble:A,B,...``: the per-image worst case over registered attacks, resolved by the registry,
at least as strong as each member on every image, and a run parameter like any attack."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segattack.attacks import ATTACKS, ensemble, pgd, segpgd
from segattack.study.config import RunConfig
from segattack.study.profiles import grid_configs
from segattack.util.params import ParameterError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def batch(scene_inputs):
    images, masks = scene_inputs
    return images, masks.roll(1, 0)  # another scene's mask as each image's target


def test_the_registry_resolves_ensemble_names_and_refuses_bad_ones():
    spec = ATTACKS["ensemble:pgd, segpgd"]
    assert spec.name == "ensemble:pgd,segpgd" and spec is ATTACKS["ensemble:pgd, segpgd"]
    assert spec.paper_params("mobilenet_v3_large") == {
        "member_params": {"pgd": ATTACKS["pgd"].paper_params("mobilenet_v3_large"), "segpgd": {}}
    }
    assert spec.paper_steps == max(ATTACKS["pgd"].paper_steps, ATTACKS["segpgd"].paper_steps)
    assert spec.budget_params(0.03, 5, "x") == {
        "member_params": {"pgd": {"mode": "linf", "eps": 0.03, "steps": 5}, "segpgd": {"eps": 0.03, "steps": 5}}
    }
    assert "ensemble:pgd,segpgd" not in list(ATTACKS)  # built, not listed
    assert "ensemble:pgd,cospgd" in ATTACKS
    for bad, why in [
        ("ensemble:", "names its members"),
        ("ensemble:pgd,,segpgd", "names its members"),
        ("ensemble:pgd,pgd", "twice"),
        ("ensemble:pgd,ensemble:pgd", "'ensemble:pgd' is not a registered attack; members are single attacks"),
        ("ensemble:ensemble:pgd,segpgd", "no ensemble inside an ensemble"),
        ("ensemble:pgd,fmn", "minimal-norm"),
        ("ensemble:pgd,nope", "unknown attack 'nope'"),
        ("nope:pgd", "unknown attack 'nope:pgd'"),
    ]:
        assert bad not in ATTACKS
        with pytest.raises(ValueError, match=why):
            ATTACKS.check(bad)


def test_the_worst_case_is_at_least_each_member_and_is_the_chosen_members_image(tiny_model, batch):
    images, targets = batch
    alone = [
        pgd(tiny_model, images, targets, steps=4, mode="linf", eps=4 / 255),
        segpgd(tiny_model, images, targets, steps=4, eps=4 / 255),
    ]
    both = ensemble(
        tiny_model,
        images,
        targets,
        members=["pgd", "segpgd"],
        member_params={"pgd": {"mode": "linf", "eps": 4 / 255}, "segpgd": {"eps": 4 / 255}},
        steps=4,
    )
    for member, result in enumerate(alone):
        assert torch.equal(torch.tensor(both.params["members"][member]["success"]), result.success)
        assert (both.success >= result.success).all()
    assert torch.equal(both.success, torch.stack([r.success for r in alone]).max(0).values)
    for i, chosen in enumerate(both.params["chosen"]):
        assert torch.equal(both.adv[i], alone[chosen].adv[i]) and torch.equal(both.pred[i], alone[chosen].pred[i])
    assert both.params["iterations"] == [8] * len(images)  # every member's passes, summed
    assert (both.adv - images).abs().max() <= 4 / 255 + 1e-6 and both.adv.min() >= 0 and both.adv.max() <= 1


def test_untargeted_the_worst_case_has_the_lowest_accuracy(tiny_model, scene_inputs):
    images, masks = scene_inputs
    both = ATTACKS["ensemble:pgd,cospgd"](tiny_model, images, masks, steps=3, targeted=False)
    members = torch.tensor([m["success"] for m in both.params["members"]])
    assert torch.equal(both.success, members.max(0).values) and not both.params["targeted"]


class Unrunnable(torch.nn.Module):
    """A model that fails if any member reaches it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a member ran")


def test_bad_members_and_keywords_fail_before_any_member_runs(batch):
    images, targets = batch
    tiny_model = Unrunnable()
    with pytest.raises(ValueError, match="no untargeted form"):
        ensemble(tiny_model, images, targets, members=["pgd", "asma"], targeted=False, steps=1)
    with pytest.raises(ValueError, match="not a member"):
        ensemble(tiny_model, images, targets, members=["pgd"], member_params={"segpgd": {}}, steps=1)
    with pytest.raises(ValueError, match="no parameter 'beta'"):
        ensemble(tiny_model, images, targets, members=["pgd", "segpgd"], member_params={"segpgd": {"beta": 1}})
    with pytest.raises(ValueError, match="steps must be > 0"):
        ensemble(tiny_model, images, targets, members=["pgd"], steps=0)


def test_an_ensemble_leaves_the_model_alone(tiny_model, batch):
    images, targets = batch
    net = tiny_model.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ensemble(net, images, targets, members=["pgd", "segpgd"], steps=2)
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.eval()


def test_an_ensemble_is_a_run_parameter_with_a_folder_safe_name():
    cfg = RunConfig(attack="ensemble:pgd, segpgd", num_images=1, steps=1)
    assert cfg.attack == "ensemble:pgd,segpgd" and cfg.name == "mobilenet_v3_large-ensemble-pgd-segpgd"
    assert next(c.name for c in grid_configs("tiny", attacks=("ensemble:pgd,cospgd",))).endswith("ensemble-pgd-cospgd")
    with pytest.raises(ParameterError, match="minimal-norm"):
        RunConfig(attack="ensemble:pgd,alma_prox")
    with pytest.raises(ParameterError, match="no parameter 'beta'"):
        RunConfig(attack="ensemble:pgd,segpgd", attack_params={"member_params": {"pgd": {"beta": 1}}})


def test_the_cli_runs_an_ensemble_and_refuses_a_bad_one(tmp_path):
    def cli(attack: str) -> subprocess.CompletedProcess[str]:
        command = ["attack", "--backbone", "mobilenet_v3_large", "--attack", attack, "--weights", "embedded"]
        command += ["--num-images", "2", "--size", "48", "--steps", "1", "--out", str(tmp_path / "run")]
        return subprocess.run(
            [sys.executable, "-m", "segattack", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
        )

    bad = cli("ensemble:pgd,fmn")
    assert bad.returncode == 2 and "minimal-norm" in bad.stderr and not (tmp_path / "run").exists()
    run = cli("ensemble:pgd,segpgd")
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["config"]["attack"] == doc["attack_params"]["attack"] == "ensemble:pgd,segpgd"
    assert [m["attack"] for m in doc["attack_params"]["members"]] == ["pgd", "segpgd"]


@pytest.mark.slow
def test_the_report_grid_runs_an_ensemble_with_its_notebook(local_cluster_report):
    """conftest's ``local_cluster_report``: segattack report --attacks ensemble:pgd,segpgd --cluster local."""
    out = local_cluster_report.out
    assert local_cluster_report.returncode == 0, local_cluster_report.stderr[-3000:]
    run_dir = out / "runs" / "mobilenet_v3_large-ensemble-pgd-segpgd"
    assert (run_dir / "attack.ipynb").is_file() and not (run_dir / "failed.json").exists()
    assert json.loads((run_dir / "results.json").read_text())["attack_params"]["chosen"]
    assert "worst of PGD Attack, SegPGD" in (out / "index.html").read_text()
