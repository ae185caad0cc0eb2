"""Time per attack iteration against one bare forward+backward of the same model on the same batch.

    .venv/bin/python benchmarks/iteration_cost.py [--repeats 5] [--sizes default 520] [--out FILE]

For each backbone, size and batch, in one process: the median (over --repeats, after a warm-up)
of one bare forward + backward of the pixel-wise cross-entropy w.r.t. the input (contiguous
NCHW, fp32: the reference), of the same in channels_last, and of one iteration of each attack
(paper-mode PGD, ASMA, DAG, SegPGD, CosPGD) in both layouts, as the marginal cost of one more
iteration; with --peer, adv_lib's asma and dag measured the same way on the same model and
inputs. Ratios are attack time / reference time. Writes
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

ITERATIONS = 4  # N in the marginal measure (T(2N) - T(N)) / N; --iterations changes it
ATTACK_KWARGS = {"pgd": {}, "segpgd": {}, "cospgd": {}, "dag": {"gamma": 1e-3, "adv_threshold": 1.0}}


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_iteration(call, repeats: int) -> float:
    """Marginal seconds of one more iteration: (T(2N) - T(N)) / N, so one-off costs (set-up, the
    final prediction pass) are left out, as they are for a long attack."""
    short = median_seconds(lambda: call(ITERATIONS), repeats)
    return (median_seconds(lambda: call(2 * ITERATIONS), repeats) - short) / ITERATIONS


def bare_forward_backward(model, x, t):
    x = x.clone().requires_grad_(True)
    torch.autograd.grad(F.cross_entropy(model(x), t), x)


def measure(backbone: str, size: int, batch: int, repeats: int, peer: bool, attacks: list[str],
            layouts: list[str]) -> dict:
    row: dict = {"backbone": backbone, "batch": batch}
    for layout in layouts:
        model = load_model(backbone, "embedded", channels_last=layout == "channels_last")
        size = size or int(model.info.extra["image_size"])
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, size, size, generator=g)
        t = torch.randint(0, 21, (batch, size, size), generator=g)
        row[f"bare_{layout}_s"] = median_seconds(lambda: bare_forward_backward(model, x, t), repeats)
        kwargs = dict(ATTACK_KWARGS, asma={"beta": PAPER_BETA[backbone]})
        for name in attacks:
            extra = kwargs[name]
            row[f"{name}_{layout}_s"] = per_iteration(lambda n: ATTACKS[name](model, x, t, steps=n, **extra), repeats)
        if peer and layout == "contiguous":
            from adv_lib.attacks.segmentation import asma as ref_asma, dag as ref_dag
            row["adv_lib_asma_s"] = per_iteration(
                lambda n: ref_asma(model, x, t, targeted=True, num_steps=n, adv_threshold=1.01), repeats)
            row["adv_lib_dag_s"] = per_iteration(
                lambda n: ref_dag(model, x, t, targeted=True, max_iter=n, γ=1e-3, adv_threshold=1.01), repeats)
    row["size"] = size
    reference = row["bare_contiguous_s"]
    row["ratios"] = {k[:-2]: v / reference for k, v in row.items() if k.endswith("_s") and k != "bare_contiguous_s"}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=ITERATIONS, help="N of the marginal measure")
    parser.add_argument("--sizes", nargs="+", default=["default", "520"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v3_large", "resnet50"])
    parser.add_argument("--peer", action="store_true", help="also time adv_lib's asma and dag")
    parser.add_argument("--attacks", nargs="+", default=["pgd", "asma", "dag", "segpgd", "cospgd"])
    parser.add_argument("--layouts", nargs="+", default=["contiguous", "channels_last"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "iteration_cost.json"))
    args = parser.parse_args()
    globals()["ITERATIONS"] = args.iterations
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            for batch in args.batches:
                rows.append(measure(backbone, 0 if size == "default" else int(size), batch, args.repeats, args.peer,
                                    args.attacks, args.layouts))
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                                          "torch": str(torch.__version__), "repeats": args.repeats,
                                          "iterations_per_call": ITERATIONS, "rows": rows}, indent=1))
    print("\n| backbone | px | batch | fwd+bwd (s) | time / fwd+bwd |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratios = ", ".join(f"{k.replace('_contiguous', '')} {v:.2f}" for k, v in r["ratios"].items())
        print(f"| {r['backbone']} | {r['size']} | {r['batch']} | {r['bare_contiguous_s']:.3f} | {ratios} |")


if __name__ == "__main__":
    main()
