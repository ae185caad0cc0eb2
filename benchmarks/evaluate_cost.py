"""Wall time of ``segattack evaluate`` against the sum of its attacks' own compute (target <= 1.1x).

    .venv/bin/python benchmarks/evaluate_cost.py                                  # the default: embedded backbones
    .venv/bin/python benchmarks/evaluate_cost.py --label hf -- --model hf:DIR --images pairs:DIR -p num_images=8

Runs the command (anything after ``--`` is passed to it) into a fresh temporary folder, timing it
from start to exit (model loading, Dask start-up, clean predictions, assembly, the notebook and its
HTML included), then sums every cell's attack seconds from the ``evaluation.json`` records (each
attack call timed inside its task: ``seconds_per_image`` x images). The ratio wall / compute is the
engine's and the report's overhead. Appends to ``results/evaluate_cost.json`` under ``--label``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "evaluate_cost.json"


def attack_seconds(out: Path) -> tuple[float, int]:
    """The sum of every cell's attack seconds over every model's record, and the number of cells."""
    total, cells = 0.0, 0
    for path in sorted(out.glob("*/evaluation.json")):
        record = json.loads(path.read_text())
        images = len(record["images"])
        for cell in record["cells"]:
            total += cell["seconds_per_image"] * images
            cells += 1
    return total, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="default", help="the entry's name in results/evaluate_cost.json")
    parser.add_argument("args", nargs="*", help="segattack evaluate's own arguments (after --)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "evaluation"
        command = [sys.executable, "-m", "segattack", "evaluate", "--out", str(out), *opts.args]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        compute, cells = attack_seconds(out)
    entry = {
        "command": " ".join(["segattack evaluate", *opts.args]),
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(wall, 1),
        "attack_compute_s": round(compute, 1),
        "cells": cells,
        "wall_over_compute": round(wall / compute, 3) if compute else None,
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[opts.label] = entry
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"| {opts.label} | {entry['wall_s']} s | {entry['attack_compute_s']} s | {entry['wall_over_compute']} |")


if __name__ == "__main__":
    main()
