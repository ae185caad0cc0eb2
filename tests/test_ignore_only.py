"""Valid data always gives results: a set whose ground truth is all ignore (255) has undefined readings,
stored as null (never NaN, which strict JSON refuses) and shown as undefined in the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segattack.cli import main
from segattack.data.classes import IGNORE_INDEX
from segattack.study.report import load_runs, readings_table
from segattack.study.studies import StudyConfig, run_studies


def strict(path: Path) -> dict:
    """``path``'s JSON, refusing NaN and Infinity as Python's json module would otherwise accept them."""

    def refuse(name: str) -> None:
        raise ValueError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def ignore_only(tmp_path_factory) -> Path:
    """pairs:PATH of three images whose masks are all ignore (255)."""
    root = tmp_path_factory.mktemp("ignore")
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.full((40, 52), IGNORE_INDEX, np.uint8), mode="L").save(root / "masks" / f"{i}.png")
    return root


def test_a_run_on_ignore_only_truth_writes_null_readings(ignore_only, small_checkpoint, tmp_path, capsys):
    out = tmp_path / "runs" / "mobilenet_v3_large-pgd"
    assert (
        main(
            [
                "attack",
                "--backbone",
                "mobilenet_v3_large",
                "--attack",
                "pgd",
                "--weights",
                str(small_checkpoint),
                "--images",
                f"pairs:{ignore_only}",
                "--out",
                str(out),
                "--num-images",
                "0",
                "--steps",
                "1",
                "--batch",
                "2",
            ]
        )
        == 0
    ), capsys.readouterr().err
    doc = strict(out / "results.json")
    assert doc["clean_truth"]["miou"] is None and doc["clean_truth"]["class_iou"] == [None] * 21
    assert doc["clean_truth"]["pixel_accuracy"] == 0.0  # no labelled pixel: nothing right, a defined 0
    for scope in ("summary", "summary_all"):
        assert doc[scope]["iou_truth"] == {"mean": None, "ci95": None, "images": 0}
        assert doc[scope]["clean_iou_truth"] == {"mean": None, "ci95": None, "images": 0}
        assert doc[scope]["acc_truth"]["mean"] == 0.0
    assert doc["per_image"]["iou_truth"] == [None] * 3
    assert doc["pooled"]["all"]["truth"]["iou"] == {"value": None, "ci95": None}
    assert doc["summary"]["iou_original"]["mean"] is not None  # the readings that are defined stay numbers
    (run,), failed = load_runs(out.parent)
    assert failed == []
    row = readings_table([run]).loc[(run.label, "all images")]
    assert row["iou_truth"] == "–" and row["clean_iou_truth"] == "–" and row["[5] iou_truth"] == "–"


def test_studies_on_ignore_only_truth_write_null_clean_quality(ignore_only, small_checkpoint, tmp_path):
    study = StudyConfig(
        weights=str(small_checkpoint),
        images=f"pairs:{ignore_only}",
        num_images=2,
        size=32,
        batch=2,
        steps=1,
        eps_values=[8 / 255],
        curve_images=2,
        curve_steps=1,
        backbones=["mobilenet_v3_large"],
    )
    results = run_studies(study, tmp_path / "studies", progress=False)
    assert results.clean_iou_truth == {"mobilenet_v3_large": None}
    assert strict(tmp_path / "studies" / "studies.json")["clean_iou_truth"] == {"mobilenet_v3_large": None}
    assert results.comparison and all(r["success"] is not None for r in results.comparison)
