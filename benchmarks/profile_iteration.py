"""Where an attack iteration's time goes beyond the bare forward+backward: the attack's own cost
measured on a stand-in model, and its operators.

    .venv/bin/python benchmarks/profile_iteration.py --attacks pdpgd alma_prox --batch 1

The network's own operators dominate a real iteration and move by more than an attack adds, so the
attack's own cost is measured on a stand-in with the same input and logits shapes and layout
(channels_last, as ``load_model``'s networks give them) and almost no compute: a wrapped 1x1
convolution from 3 to 21 channels (real, non-zero gradients, so every
projection and search runs as it would). For each attack: the median seconds per iteration on the
stand-in (forward starts with a backward between them, as ``new_attacks_cost.py``) minus the
stand-in's bare forward + cross-entropy backward is what the attack adds per iteration (its loss
beyond cross-entropy, prediction, bookkeeping, update, projection). ``--ops`` also profiles one run
on the stand-in and prints the operators with the largest self CPU time per iteration.
One thread and CPU time by default (see ``new_attacks_cost.py``). Prints only; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from segattack.attacks import ATTACKS
from segattack.attacks.losses import pixel_cross_entropy
from segattack.models import SegmentationModel, load_model

KWARGS: dict[str, dict] = {
    "sea": {"adv_threshold": None},
    "dag": {"gamma": 1e-3, "adv_threshold": None},
    "asma": {"beta": 3e-6},
}


def stub_seconds(name: str, model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, steps: int) -> float:
    """Median seconds per iteration of ``name`` on ``model`` over 3 runs (after one warm-up run)."""
    import new_attacks_cost
    from new_attacks_cost import iteration_seconds

    new_attacks_cost.clock = time.process_time

    def run() -> None:
        ATTACKS[name](model, x, t, steps=steps, **KWARGS.get(name, {}))

    iteration_seconds(model, run)
    return statistics.median(s for _ in range(3) for s in iteration_seconds(model, run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument(
        "--attacks", nargs="+", default=["apgd", "sea", "alma_prox", "pdpgd", "fmn", "pgd", "segpgd", "cospgd"]
    )
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ops", action="store_true", help="also print each attack's top operators on the stand-in")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.backbone, "embedded")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    t = torch.randint(0, 21, (args.batch, args.size, args.size), generator=g)

    torch.manual_seed(0)
    stub = SegmentationModel(torch.nn.Conv2d(3, 21, 1), mean=(0.0,) * 3, std=(1.0,) * 3, channels_last=True)
    assert model(x[:1]).stride(1) == 1 and stub(x[:1]).stride(1) == 1, (
        "the stand-in's logits must be laid out as the model's"
    )
    models = {"model": model, "stub": stub}

    def bare(m: torch.nn.Module, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.process_time()
            xx = x.clone().requires_grad_(True)
            torch.autograd.grad(pixel_cross_entropy(m(xx), t).mean(), xx)
            out.append(time.process_time() - start)
        return out

    ref = {k: statistics.median(bare(m, 12)[2:]) for k, m in models.items()}
    print(
        f"{args.backbone} {args.batch}x{args.size} px, {torch.get_num_threads()} threads: bare fwd+bwd "
        f"{ref['model'] * 1e3:.2f} ms; stand-in bare fwd+bwd {ref['stub'] * 1e3:.2f} ms\n"
    )
    print("| attack | stand-in iteration (ms) | added by the attack (ms) | added / model's bare fwd+bwd |")
    print("|---|---|---|---|")
    for name in args.attacks:
        steps = max(args.steps // 3, 4) if name == "sea" else args.steps
        sec = stub_seconds(name, stub, x, t, steps)
        added = sec - ref["stub"]
        print(f"| {name} | {sec * 1e3:.2f} | {added * 1e3:.2f} | {added / ref['model']:.3f} |", flush=True)
    if not args.ops:
        return
    for name in args.attacks:
        steps = max(args.steps // 3, 4) if name == "sea" else args.steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            ATTACKS[name](stub, x, t, steps=steps, **KWARGS.get(name, {}))
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
        print(f"\n{name} on the stand-in, self CPU per iteration ({steps} steps):")
        for e in rows:
            print(f"  {e.key:<36} {e.self_cpu_time_total / 1e3 / steps:7.2f} ms  ({e.count / steps:.1f} calls)")


if __name__ == "__main__":
    main()
