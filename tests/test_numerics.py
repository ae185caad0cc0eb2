"""One run, one answer: the same config gives bit-identical tensors through the grid on a Dask cluster,
``segattack attack``, the notebook and the API, because every path computes under the config's
numerics (intra-op threads, deterministic algorithms), which are hashed and recorded."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from segattack.engine.render import execute
from segattack.study.config import RunConfig
from segattack.study.numerics import Numerics, numerics
from segattack.study.profiles import grid_configs, run_profile
from segattack.study.runner import run
from segattack.util.params import ParameterError

ROOT = Path(__file__).resolve().parent.parent


def test_numerics_are_set_for_the_block_and_restored():
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with numerics(Numerics(threads=1, deterministic=True)):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_numerics_are_part_of_the_config_and_its_hash():
    cfg = RunConfig()
    assert (cfg.threads, cfg.deterministic) == (1, True)
    assert cfg.digest() != RunConfig(threads=2).digest() != RunConfig(deterministic=False).digest()
    with pytest.raises(ParameterError, match="threads must be between 1 and"):
        RunConfig(threads=0)
    assert grid_configs("tiny", {"threads": 2})[0].threads == 2


def test_a_run_records_its_numerics(tmp_path):
    results, _ = run(
        RunConfig(weights="embedded", num_images=1, target_index=0, size=48, steps=1), tmp_path / "a", progress=False
    )
    assert results.environment["threads"] == "1" and results.environment["deterministic"] == "True"
    assert results.environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.slow
def test_grid_cli_notebook_and_api_give_identical_tensors(tmp_path):
    overrides = {"num_images": 3, "batch": 2}
    (cfg,) = grid_configs("tiny", overrides, backbones=("mobilenet_v3_large",), attacks=("pgd",))
    status = run_profile(
        "tiny",
        tmp_path / "grid",
        overrides,
        backbones=("mobilenet_v3_large",),
        attacks=("pgd",),
        studies="none",
        cluster="local",
        progress=False,
    )
    assert status == {"mobilenet_v3_large-pgd": "done"}
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "segattack",
            "attack",
            "--backbone",
            cfg.backbone,
            "--attack",
            cfg.attack,
            "--weights",
            cfg.weights,
            "--num-images",
            "3",
            "--batch",
            "2",
            "--size",
            str(cfg.size),
            "--steps",
            str(cfg.steps),
            "--out",
            str(tmp_path / "cli"),
        ],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    execute("attack.ipynb", tmp_path / "notebook.ipynb", {**asdict(cfg), "out_dir": str(tmp_path / "notebook")})
    run(cfg, tmp_path / "api", progress=False)
    folders = {path: tmp_path / path for path in ("grid/runs/mobilenet_v3_large-pgd", "cli", "notebook", "api")}
    docs = {path: json.loads((folder / "results.json").read_text()) for path, folder in folders.items()}
    assert {doc["config_hash"] for doc in docs.values()} == {cfg.digest()}  # the CLI's defaults are the config's
    tensors = {path: torch.load(folder / "tensors.pt", weights_only=True) for path, folder in folders.items()}
    reference = tensors["api"]
    for path, saved in tensors.items():
        assert all(torch.equal(a, b) for a, b in zip(saved["adv"], reference["adv"])), path
        assert all(torch.equal(a, b) for a, b in zip(saved["adv_pred"], reference["adv_pred"])), path
        assert docs[path]["per_image"] == docs["api"]["per_image"], path


def test_jitter_moves_every_value_by_at_most_one_ulp_the_same_way_in_every_shard():
    from segattack.study.numerics import jittered

    x = torch.rand(3, 8, 8)
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    assert jittered(x, 0, 5) is x
    y = jittered(x, 1, 5)
    up, down = torch.nextafter(x, torch.ones_like(x)), torch.nextafter(x, torch.zeros_like(x))
    assert ((y == up) | (y == down)).all()  # each value one float up or one down
    assert (y != x).float().mean() > 0.4 and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, jittered(x, 1, 5)) and not torch.equal(y, jittered(x, 1, 6))  # seeded by image index


def test_stability_repeats_keep_the_first_batches_and_change_only_the_numerics():
    from segattack.study.profiles import repeats, stability_repeats

    (cfg,) = grid_configs("default", {"num_images": 8}, backbones=("resnet50",), attacks=("pgd",))
    variants = repeats(cfg, 2)
    assert {name: (v.num_images, v.threads, v.input_jitter, v.save_images) for name, v in variants.items()} == {
        "threads": (4, 2, 0, 0),
        "jitter": (4, 1, 1, 0),
    }  # 2 images rounded up to the batch of 4
    assert all(v.steps == cfg.steps and v.attack_kwargs() == cfg.attack_kwargs() for v in variants.values())
    (both,) = repeats(cfg, 4, "combined").values()
    assert (both.threads, both.input_jitter) == (2, 1) and repeats(cfg, 4, "off") == {}
    assert stability_repeats("default") == ("combined", 4) and stability_repeats("paper") == ("each", 4)
    assert stability_repeats("tiny")[0] == "off"
    assert stability_repeats("tiny", {"stability": "each", "stability_images": 2}) == ("each", 2)
    with pytest.raises(ParameterError, match="stability must be one of 'off', 'combined', 'each'"):
        stability_repeats("tiny", {"stability": "maybe"})


def test_spreads_by_hand(tmp_path):
    from dataclasses import replace

    from segattack.study.report import Run, spreads

    results, _ = run(
        RunConfig(weights="embedded", num_images=3, target_index=0, size=48, steps=1), tmp_path / "r", progress=False
    )
    main = Run("m-pgd", tmp_path / "r", results)
    values = results.per_image["iou_original"]
    moved = [values[0], values[1] + 0.05, values[2] - 0.01]  # image 0 is the target image: left out
    repeat = Run(
        "m-pgd-threads", tmp_path / "r", replace(results, per_image={**results.per_image, "iou_original": moved})
    )
    spread = spreads(main, [repeat, main])["iou_original"]
    assert spread.mean == pytest.approx(0.02) and spread.image == pytest.approx(0.05)
    assert spread.interval == results.summary["iou_original"].ci95
    assert spread.flagged == (spread.interval < 0.02)
    assert spreads(main, [main])["l2_255"].mean == 0.0 and not spreads(main, [main])["l2_255"].flagged


@pytest.mark.slow
def test_a_report_with_stability_repeats_states_the_spread(tmp_path):
    status = run_profile(
        "tiny",
        tmp_path,
        {"stability": "each", "stability_images": 2},
        backbones=("mobilenet_v3_large",),
        attacks=("pgd",),
        studies="none",
        cluster="inprocess",
        progress=False,
    )
    assert status == {
        "mobilenet_v3_large-pgd": "done",
        "mobilenet_v3_large-pgd-threads": "done",
        "mobilenet_v3_large-pgd-jitter": "done",
    }
    repeat = tmp_path / "stability" / "mobilenet_v3_large-pgd-threads"
    assert json.loads((repeat / "results.json").read_text())["config"]["threads"] == 2
    assert not list(repeat.glob("*.ipynb")) and not list(repeat.glob("*.png"))  # no notebook, no images
    from segattack.engine.render import build_report

    html = build_report(tmp_path, "tiny").read_text()
    assert "Numerical stability" in html and "largest image change" in html and "Numerical stability first" in html
