import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segattack.cli import main


@pytest.mark.parametrize("attack", ["pgd", "asma"])
def test_cli_attack_writes_results(tmp_path, small_checkpoint, attack, capsys):
    out = tmp_path / attack
    code = main(
        [
            "attack",
            "--backbone",
            "mobilenet_v3_large",
            "--attack",
            attack,
            "--weights",
            str(small_checkpoint),
            "--out",
            str(out),
            "--num-images",
            "2",
            "--steps",
            "2",
        ]
    )
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["image_size"] == 48 and doc["weights"]["source"] == "checkpoint"
    assert len(doc["history"]["loss"]["mean"]) == 2 and len(doc["per_image"]["iou_original"]) == 2
    assert {"iou_original", "acc_target", "l2_255", "l2_normalized"} <= set(doc["summary"])
    assert (out / "01_adv.png").is_file() and (out / "tensors.pt").is_file()
    assert "IoU to original" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eps", "0"], "eps must be > 0"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--images", "/nonexistent"], "image set must be"),
        (["--target-index", "9"], "outside the set"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, small_checkpoint, argv, message, capsys):
    code = main(
        [
            "attack",
            "--backbone",
            "mobilenet_v3_large",
            "--attack",
            "pgd",
            "--weights",
            str(small_checkpoint),
            "--out",
            str(tmp_path / "o"),
            "--num-images",
            "2",
            *argv,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("segattack attack: error:") and len(err.splitlines()) == 1


def test_cli_unknown_backbone_and_help(capsys):
    assert main(["attack", "--backbone", "vgg", "--attack", "pgd", "--out", "x"]) == 2  # before any folder
    assert "unknown backbone 'vgg': use a study backbone" in capsys.readouterr().err and not Path("x").exists()
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    assert "--iou-average" in capsys.readouterr().out


def test_cli_output_dir_is_a_file(tmp_path, small_checkpoint, capsys):
    (tmp_path / "f").write_text("x")
    code = main(
        [
            "attack",
            "--backbone",
            "mobilenet_v3_large",
            "--attack",
            "pgd",
            "--weights",
            str(small_checkpoint),
            "--out",
            str(tmp_path / "f"),
            "--num-images",
            "2",
            "--steps",
            "1",
        ]
    )
    assert code == 2 and "is a file" in capsys.readouterr().err


def test_voc_run_reports_clean_miou_against_ground_truth_as_computed_by_hand(tmp_path, small_checkpoint, voc_folder):
    out = tmp_path / "voc"
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
                f"voc:{voc_folder}",
                "--num-images",
                "0",
                "--batch",
                "2",
                "--steps",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads((out / "results.json").read_text())
    saved = torch.load(out / "tensors.pt", weights_only=True)
    assert doc["shards"] == 3 and saved["index"] == [0, 1, 2, 3, 4]
    pred = np.concatenate([p.numpy().ravel() for p in saved["clean_pred"]])
    truth = np.concatenate([t.numpy().ravel() for t in saved["truth"]])
    keep = truth != 255
    ious = [
        ((pred == c) & (truth == c) & keep).sum() / (((pred == c) | (truth == c)) & keep).sum()
        for c in range(21)
        if (((pred == c) | (truth == c)) & keep).any()
    ]
    assert doc["clean_truth"]["miou"] == pytest.approx(float(np.mean(ious)))
    assert doc["clean_truth"]["pixel_accuracy"] == pytest.approx(float((pred == truth)[keep].mean()))
