"""Time per attack iteration against one bare forward+backward of the same model on the same batch.

    .venv/bin/python benchmarks/iteration_cost.py [--repeats 5] [--sizes default 520] [--out FILE]

For each backbone, size and batch, in one process: the median (over --repeats, after a warm-up)
of one bare forward + backward of the pixel-wise cross-entropy w.r.t. the input (contiguous
NCHW, fp32: the reference), of the same in channels_last, and of one iteration of each attack
(paper-mode PGD, ASMA, DAG, SegPGD, CosPGD) in both layouts; with --peer, adv_lib's asma and
dag on the same model, inputs and iterations. Ratios are attack time / reference time. Writes
JSON and prints a Markdown table. Weights: the embedded checkpoints (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from segattack.attacks import ATTACKS, PAPER_BETA
from segattack.models import load_model

ITERATIONS = 4  # attack iterations per timed call (time is divided by this)
ATTACK_KWARGS = {"pgd": {}, "segpgd": {}, "cospgd": {}, "dag": {"gamma": 1e-3, "adv_threshold": 1.0}}


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_forward_backward(model, x, t):
    x = x.clone().requires_grad_(True)
    torch.autograd.grad(F.cross_entropy(model(x), t), x)


def measure(backbone: str, size: int, batch: int, repeats: int, peer: bool) -> dict:
    row: dict = {"backbone": backbone, "batch": batch}
    for layout in ("contiguous", "channels_last"):
        model = load_model(backbone, "embedded", channels_last=layout == "channels_last")
        size = size or int(model.info.extra["image_size"])
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, size, size, generator=g)
        t = torch.randint(0, 21, (batch, size, size), generator=g)
        row[f"bare_{layout}_s"] = median_seconds(lambda: bare_forward_backward(model, x, t), repeats)
        kwargs = dict(ATTACK_KWARGS, asma={"beta": PAPER_BETA[backbone]})
        for name, extra in kwargs.items():
            seconds = median_seconds(lambda: ATTACKS[name](model, x, t, steps=ITERATIONS, **extra), repeats)
            row[f"{name}_{layout}_s"] = seconds / ITERATIONS
        if peer and layout == "contiguous":
            from adv_lib.attacks.segmentation import asma as ref_asma, dag as ref_dag
            row["adv_lib_asma_s"] = median_seconds(lambda: ref_asma(model, x, t, targeted=True, num_steps=ITERATIONS,
                                                                    adv_threshold=1.01), repeats) / ITERATIONS
            row["adv_lib_dag_s"] = median_seconds(lambda: ref_dag(model, x, t, targeted=True, max_iter=ITERATIONS,
                                                                  γ=1e-3, adv_threshold=1.01), repeats) / ITERATIONS
    row["size"] = size
    reference = row["bare_contiguous_s"]
    row["ratios"] = {k[:-2]: v / reference for k, v in row.items() if k.endswith("_s") and k != "bare_contiguous_s"}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=["default", "520"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v3_large", "resnet50"])
    parser.add_argument("--peer", action="store_true", help="also time adv_lib's asma and dag")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "iteration_cost.json"))
    args = parser.parse_args()
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            for batch in args.batches:
                rows.append(measure(backbone, 0 if size == "default" else int(size), batch, args.repeats, args.peer))
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                                          "torch": str(torch.__version__), "repeats": args.repeats,
                                          "iterations_per_call": ITERATIONS, "rows": rows}, indent=1))
    names = ["pgd", "asma", "dag", "segpgd", "cospgd"]
    print("\n| backbone | px | batch | fwd+bwd (s) | " + " | ".join(names) + " | same, channels_last |")
    print("|---|---|---|---|" + "---|" * (len(names) + 1))
    for r in rows:
        ratios = r["ratios"]
        print(f"| {r['backbone']} | {r['size']} | {r['batch']} | {r['bare_contiguous_s']:.3f} | "
              + " | ".join(f"{ratios[f'{n}_contiguous']:.2f}" for n in names) + " | "
              + " / ".join(f"{ratios[f'{n}_channels_last']:.2f}" for n in names) + " |")


if __name__ == "__main__":
    main()
