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

from segattack.config import RunConfig
from segattack.numerics import Numerics, numerics
from segattack.params import ParameterError
from segattack.profiles import grid_configs, run_profile
from segattack.render import execute
from segattack.runner import run

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
    results, _ = run(RunConfig(weights="embedded", num_images=1, target_index=0, size=48, steps=1), tmp_path / "a",
                     progress=False)
    assert results.environment["threads"] == "1" and results.environment["deterministic"] == "True"
    assert results.environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.slow
def test_grid_cli_notebook_and_api_give_identical_tensors(tmp_path):
    overrides = {"num_images": 3, "batch": 2}
    (cfg,) = grid_configs("tiny", overrides, backbones=("mobilenet_v3_large",), attacks=("pgd",))
    status = run_profile("tiny", tmp_path / "grid", overrides, backbones=("mobilenet_v3_large",), attacks=("pgd",),
                         studies="none", cluster="local", progress=False)
    assert status == {"mobilenet_v3_large-pgd": "done"}
    cli = subprocess.run([sys.executable, "-m", "segattack", "attack", "--backbone", cfg.backbone, "--attack", cfg.attack,
                          "--weights", cfg.weights, "--num-images", "3", "--batch", "2", "--size", str(cfg.size),
                          "--steps", str(cfg.steps), "--out", str(tmp_path / "cli")],
                         cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=600)
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
