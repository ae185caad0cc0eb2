"""Time per attack iteration against one bare forward+backward of the same model on the same batch.

    .venv/bin/python benchmarks/iteration_cost.py [--repeats 5] [--sizes default 520] [--out FILE]

For each backbone, size and batch: the median (over --repeats, after one warm-up) of
(a) one forward + backward of the pixel-wise cross-entropy w.r.t. the input, and
(b) one iteration of targeted_pgd (paper mode) and of asma (paper hyperparameters),
measured in the same process, so the ratio (b)/(a) is the attack's overhead. Writes JSON and
prints a Markdown table. Weights: the embedded checkpoints (timing does not depend on them).
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

from segattack.attacks import PAPER_BETA, asma, targeted_pgd
from segattack.models import load_model

ITERATIONS = 3  # attack iterations per timed call (time is divided by this)


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
    loss = F.cross_entropy(model(x), t)
    torch.autograd.grad(loss, x)


def measure(backbone: str, size: int, batch: int, repeats: int) -> dict:
    model = load_model(backbone, "embedded")
    size = size or int(model.info.extra["image_size"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    t = torch.randint(0, 21, (batch, size, size), generator=g)
    bare = median_seconds(lambda: bare_forward_backward(model, x, t), repeats)
    pgd = median_seconds(lambda: targeted_pgd(model, x, t, steps=ITERATIONS), repeats) / ITERATIONS
    asm = median_seconds(lambda: asma(model, x, t, beta=PAPER_BETA[backbone], steps=ITERATIONS), repeats) / ITERATIONS
    return {"backbone": backbone, "size": size, "batch": batch, "bare_fwd_bwd_s": bare,
            "pgd_iter_s": pgd, "asma_iter_s": asm, "pgd_ratio": pgd / bare, "asma_ratio": asm / bare}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=["default", "520"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v3_large", "resnet50"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "iteration_cost.json"))
    args = parser.parse_args()
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            for batch in args.batches if size == "default" else [1]:
                rows.append(measure(backbone, 0 if size == "default" else int(size), batch, args.repeats))
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                                          "torch": str(torch.__version__), "repeats": args.repeats,
                                          "rows": rows}, indent=1))
    print("\n| backbone | size | batch | fwd+bwd (s) | PGD iter (s) | ratio | ASMA iter (s) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['size']} | {r['batch']} | {r['bare_fwd_bwd_s']:.3f} | {r['pgd_iter_s']:.3f} | "
              f"{r['pgd_ratio']:.2f} | {r['asma_iter_s']:.3f} | {r['asma_ratio']:.2f} |")


if __name__ == "__main__":
    main()
