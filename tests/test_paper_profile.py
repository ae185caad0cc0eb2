"""The ``paper`` profile end to end on torchvision-format weights placed in a temporary TORCH_HOME.

The weights are random, so their SHA-256 cannot match the prefix in torchvision's file name: the
run goes through, and every record says the weights are unverified and drops the published mIoU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import segmentation as tvseg

from segattack.models.backbones import UNVERIFIED_SOURCE, torchvision_weights_path
from segattack.study.profiles import PROFILES, grid_configs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_paper_profile_keeps_ref5s_pgd_and_runs_asma_to_convergence():
    steps = {cfg.attack: cfg.steps for cfg in grid_configs("paper")}
    assert steps == {"asma": 1000, "pgd": 15}
    assert {cfg.size for cfg in grid_configs("paper")} == {520} and PROFILES["paper"]["weights"] == "torchvision"
    assert {cfg.batch for cfg in grid_configs("paper")} == {4}  # [5] attacks a batch of 4
    assert {cfg.steps for cfg in grid_configs("paper", {"steps": 2})} == {2}  # an override applies to every attack


def test_paper_profile_runs_on_torchvision_weights(tmp_path, monkeypatch):
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    torch.manual_seed(0)
    for backbone, build in (
        ("mobilenet_v3_large", tvseg.deeplabv3_mobilenet_v3_large),
        ("resnet50", tvseg.deeplabv3_resnet50),
    ):
        path = torchvision_weights_path(backbone)  # the exact file name torchvision's weights API uses
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(build(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).state_dict(), path)
    out = tmp_path / "report"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "segattack",
            "report",
            "--profile",
            "paper",
            "--out",
            str(out),
            "-p",
            "num_images=2",
            "-p",
            "steps=2",
            "--studies",
            "none",
            "--cluster",
            "inprocess",
        ],
        cwd=ROOT,
        env={**os.environ, "TORCH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("mobilenet_v3_large-pgd", "mobilenet_v3_large-asma", "resnet50-pgd", "resnet50-asma"):
        doc = json.loads((out / "runs" / name / "results.json").read_text())
        assert doc["weights"]["source"] == UNVERIFIED_SOURCE and doc["weights"]["clean_miou"] is None
        assert doc["weights"]["description"].startswith("UNVERIFIED weights: ") and doc["image_size"] == 520
        assert doc["attacked"] == [0] and doc["attack_params"]["steps"] == 2  # image 1 is the target
    pgd = json.loads((out / "runs" / "resnet50-pgd" / "results.json").read_text())["attack_params"]
    assert pgd["mode"] == "paper" and pgd["reduction"] == "batch" and pgd["alpha"] == 100
    html = (out / "index.html").read_text()
    assert "resnet50 / torchvision (unverified) weights" in html
    assert "mobilenet_v3_large / torchvision (unverified) weights" in html
    assert "COCO val2017 mIoU" not in html  # no published figure for these weights
    assert "NOT the paper" not in html and "[5] pooled" in html
