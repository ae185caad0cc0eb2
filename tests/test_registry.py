"""The attack registry: every part of the study reads an attack's spec, and a third-party attack joins
through the ``segattack.attacks`` entry point and runs through the CLI, the grid with its notebook,
and the studies (tests/plugin holds it, installed as a distribution on PYTHONPATH)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segattack import attacks
from segattack.attacks import ATTACKS, AttackSpec, register, targeted_pgd
from segattack.attacks.registry import Registry
from segattack.study.config import RunConfig
from segattack.study.profiles import PROFILES, grid_configs
from segattack.util.params import ParameterError

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = Path(__file__).resolve().parent / "plugin"


def test_the_shipped_attacks_and_their_study_settings():
    assert list(ATTACKS)[:5] == ["pgd", "segpgd", "cospgd", "dag", "asma"]
    assert ATTACKS.in_paper() == ("asma", "pgd")
    assert [s.name for s in ATTACKS.compared()][:5] == ["pgd", "segpgd", "cospgd", "dag", "asma"]
    assert {c.attack: c.steps for c in grid_configs("paper")} == {"asma": 1000, "pgd": 15}
    assert {c.attack: c.steps for c in grid_configs("default")} == {"asma": 300, "pgd": 15}
    assert ATTACKS["asma"].paper_params("mobilenet_v3_large") == {"beta": 3e-6, "tau": 1e-5}
    assert ATTACKS["asma"].paper_params("my_model") == {"beta": 1e-4, "tau": 1e-5}  # ResNet50's, for other models
    assert not ATTACKS["dag"].security_curve and ATTACKS["pgd"].security_curve
    assert (
        ATTACKS["pgd"].label == "PGD Attack"
        and ATTACKS["pgd"].describe({"mode": "paper"}) == "mode paper, image-mean CE"
    )
    assert PROFILES["paper"]["steps"] == "paper"


def test_a_spec_calls_its_attack(tiny_model, scene_inputs):
    images, _ = scene_inputs
    targets = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long)
    via_spec = ATTACKS["pgd"](tiny_model, images, targets, steps=2, mode="linf")
    direct = targeted_pgd(tiny_model, images, targets, steps=2, mode="linf")
    assert torch.equal(via_spec.adv, direct.adv)


def test_registration_is_checked():
    registry = Registry()
    spec = AttackSpec("mine", targeted_pgd, "Mine")
    assert registry.register(spec) is spec and registry["mine"] is spec
    with pytest.raises(ValueError, match="already registered"):
        registry.register(AttackSpec("mine", targeted_pgd, "Other"))
    registry.register(AttackSpec("mine", targeted_pgd, "Other"), replace=True)
    assert registry["mine"].label == "Other"
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        registry.register(AttackSpec("../evil", targeted_pgd, "Evil"))
    with pytest.raises(ValueError, match="no budget rule"):
        registry.register(AttackSpec("nobudget", targeted_pgd, "No budget", compared=True))
    with pytest.raises(TypeError, match="AttackSpec"):
        registry.register(targeted_pgd)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown attack 'nope'"):
        registry["nope"]


def test_a_registered_attack_is_a_run_parameter_like_a_shipped_one(monkeypatch):
    monkeypatch.setattr(attacks.registry.ATTACKS, "_specs", dict(ATTACKS._specs))  # undone after the test
    register(AttackSpec("pgd_linf", attacks.pgd, "PGD L-inf", paper_params=lambda b: {"mode": "linf"}, paper_steps=7))
    cfg = RunConfig(attack="pgd_linf", attack_params={"eps": "4/255"})
    assert cfg.attack_kwargs() == {"mode": "linf", "eps": 4 / 255}
    assert {c.attack: c.steps for c in grid_configs("paper", attacks=("pgd_linf",))} == {"pgd_linf": 7}
    with pytest.raises(ParameterError, match="eps must be > 0"):  # the attack's own check, before any work
        RunConfig(attack="pgd_linf", attack_params={"eps": 0})


def test_only_the_registry_and_the_attack_modules_name_an_attack():
    """The study half (config, profiles, grid, jobs, runner, studies, report, cli and the notebooks' code)
    reads specs; the package's exports (__init__.py) and the notebooks' literal parameter defaults may name one."""
    names = "|".join(["pgd", "asma", "dag", "segpgd", "cospgd"])
    pattern = re.compile(rf"""["']({names})["']""")
    texts = {p.name: p.read_text() for p in (ROOT / "segattack").glob("*.py") if p.name != "__init__.py"}
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        texts[notebook.name] = "".join(
            "".join(c["source"]) for c in cells if "parameters" not in c.get("metadata", {}).get("tags", [])
        )
    found = {name: pattern.findall(text) for name, text in texts.items()}
    assert {name: hits for name, hits in found.items() if hits} == {}
    assert pattern.search((ROOT / "segattack" / "attacks" / "pgd.py").read_text())  # the check can see a name


@pytest.mark.slow
def test_a_plugin_attack_runs_through_the_cli_the_grid_its_notebook_and_the_studies(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "segattack",
            "attack",
            "--backbone",
            "mobilenet_v3_large",
            "--attack",
            "toy",
            "--weights",
            "embedded",
            "--num-images",
            "2",
            "--size",
            "48",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "cli"),
            "-a",
            "eps=4/255",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert doc["attack_params"]["attack"] == "toy" and doc["attack_params"]["eps"] == pytest.approx(4 / 255)
    assert max(doc["per_image"]["linf_unit"]) <= 4 / 255 + 1e-6

    out = tmp_path / "report"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "segattack",
            "report",
            "--profile",
            "tiny",
            "--out",
            str(out),
            "--backbones",
            "mobilenet_v3_large",
            "--attacks",
            "toy",
            "--cluster",
            "local",
            "-p",
            "studies_backbones=['mobilenet_v3_large']",
            "-p",
            "studies_eps_values=[0.03]",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "mobilenet_v3_large-toy done" in run.stdout and "studies done" in run.stdout
    run_dir = out / "runs" / "mobilenet_v3_large-toy"
    assert json.loads((run_dir / "results.json").read_text())["attack_params"]["steps"] == 2
    assert (run_dir / "attack.ipynb").is_file() and not (run_dir / "failed.json").exists()
    studies = json.loads((out / "studies" / "studies.json").read_text())
    toy_rows = [r for r in studies["comparison"] if r["attack"] == "toy"]
    assert len(toy_rows) == 2 and all(r["linf"] <= 8 / 255 + 1e-6 for r in toy_rows)  # the studies' budget
    assert {r["attack"] for r in studies["security"]} >= {"toy"}
    html = (out / "index.html").read_text()
    assert "MobileNet Toy FGSM" in html and "Toy FGSM eps=0.03137" in html  # its label and budget rule


def test_a_users_module_runs_through_the_cli_by_model_spec(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "segattack",
            "attack",
            "--model",
            "module:toy_model:make",
            "--attack",
            "pgd",
            "--num-images",
            "2",
            "--size",
            "32",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["config"]["backbone"] == "module:toy_model:make" and doc["image_size"] == 32
    assert doc["weights"]["extra"]["num_classes"] == 21
    assert RunConfig(backbone="module:toy_model:make").name == "module_toy_model_make-pgd"  # a safe folder name
    with pytest.raises(ParameterError, match="unknown backbone 'nope': use a study backbone"):
        RunConfig(backbone="nope")
