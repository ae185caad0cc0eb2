"""Time per attack iteration against one bare forward+backward of the same model on the same batch.

    .venv/bin/python benchmarks/iteration_cost.py --peer     # default and 520 px, batch 1 and 4

For each backbone, size and batch, in one process and on the same random batch:

- ``bare``: one forward of the model plus the backward of the pixel-wise cross-entropy w.r.t. the
  input (after a warm-up pass);
- each attack (paper-mode PGD, ASMA, DAG, SegPGD, CosPGD; no early stopping): the time of one
  iteration, read as the interval between the starts of consecutive forward passes (a forward
  pre-hook on the model), the first interval left out as warm-up. An iteration is everything the
  attack does between two forwards: the backward, its bookkeeping and its update;
- with ``--peer`` (at ``--peer-sizes``): adv_lib's ``asma`` and ``dag`` measured the same way, on
  the plain model (what a user gives adv_lib) and on ours.

Every item is timed ``--repeats`` times in each of ``--rounds`` interleaved rounds, so a slow spell
of a noisy machine touches all items alike, and reported as the median of its samples.

Model configurations (``--configs``): ``plain`` is torchvision's network as built (NCHW, batch
norms separate, fp32), the reference of every "vs plain" ratio; ``fast`` is ``load_model``'s
default (channels_last, batch norms folded, fp32); ``bf16`` is ``fast`` under bf16 autocast.
Writes JSON (``--out``) and prints the Markdown tables of ``benchmarks/README.md``. Weights: the
embedded checkpoints (the time does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe

from segattack.attacks import ATTACKS
from segattack.attacks.losses import pixel_cross_entropy
from segattack.models import SegmentationModel, load_model

ATTACK_KWARGS = {"pgd": {}, "asma": {}, "dag": {"gamma": 1e-3, "adv_threshold": None}, "segpgd": {}, "cospgd": {}}
CONFIGS = {"plain": {"channels_last": False, "fold_bn": False}, "fast": {}, "bf16": {}}
NAMES = {"mobilenet_v3_large": "MobileNetV3", "resnet50": "ResNet50"}
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock: Callable[[], float] = time.perf_counter
LABELS = {"pgd": "PGD", "asma": "ASMA", "dag": "DAG", "segpgd": "SegPGD", "cospgd": "CosPGD"}


def autocast(config: str) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=config == "bf16")


def bare_seconds(model: SegmentationModel, x: torch.Tensor, t: torch.Tensor, config: str, repeats: int) -> list[float]:
    """Seconds of ``repeats`` forward + cross-entropy backward passes w.r.t. the input (after a warm-up)."""
    times = []
    for _ in range(repeats + 1):
        start = clock()
        xx = x.clone().requires_grad_(True)
        with autocast(config):
            logits = model(xx)
        torch.autograd.grad(pixel_cross_entropy(logits.float(), t).mean(), xx)
        times.append(clock() - start)
    return times[1:]


def iteration_seconds(model: SegmentationModel, attack: Callable[[int], object], repeats: int) -> list[float]:
    """The intervals between consecutive forward passes of an attack run for ``repeats + 1`` steps."""
    starts: list[float] = []
    handle = model.register_forward_pre_hook(lambda *_: starts.append(clock()))
    try:
        attack(repeats + 1)  # repeats + 1 iterations, then the final prediction pass
    finally:
        handle.remove()
    return [b - a for a, b in zip(starts[1:], starts[2:])]


def measure(
    backbone: str, size: int, batch: int, rounds: int, repeats: int, attacks: list[str], configs: list[str], peer: bool
) -> dict:
    """Every timing of one (backbone, size, batch), interleaved: each of ``rounds`` rounds times
    every item once (``repeats`` passes or iterations), so a slow spell of a noisy machine touches
    all items alike; an item's seconds are the median of all its rounds x repeats samples."""
    from adv_lib.attacks.segmentation import asma as ref_asma
    from adv_lib.attacks.segmentation import dag as ref_dag

    models = {c: load_model(backbone, "embedded", **CONFIGS[c]) for c in {*configs, *(["plain", "fast"] * peer)}}
    size = size or int(models["fast" if "fast" in models else configs[0]].info.extra["image_size"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    t = torch.randint(0, 21, (batch, size, size), generator=g)
    beta = ATTACKS["asma"].paper_params(backbone)["beta"]
    kwargs = dict(ATTACK_KWARGS, asma={"beta": beta})

    def ours(name: str, config: str) -> Callable[[], list[float]]:
        def run(n: int) -> None:
            with autocast(config):
                ATTACKS[name](models[config], x, t, steps=n, **kwargs[name])

        return lambda: iteration_seconds(models[config], run, repeats)

    items: dict[str, Callable[[], list[float]]] = {}
    for config in configs:
        items[f"bare/{config}"] = lambda c=config: bare_seconds(models[c], x, t, c, repeats)
        items.update({f"{name}/{config}": ours(name, config) for name in attacks})
    for config in ("plain", "fast") if peer else ():
        model = models[config]
        items[f"adv_lib_asma/{config}"] = lambda m=model: iteration_seconds(
            m, lambda n: ref_asma(m, x, t, targeted=True, num_steps=n, β=beta, τ=1e-5, adv_threshold=1.01), repeats
        )
        items[f"adv_lib_dag/{config}"] = lambda m=model: iteration_seconds(
            m, lambda n: ref_dag(m, x, t, targeted=True, max_iter=n, γ=1e-3, adv_threshold=1.01), repeats
        )
    samples: dict[str, list[list[float]]] = {k: [] for k in items}
    for _ in range(rounds):
        for key, timed in items.items():
            samples[key].append(timed())
    sec = {k: statistics.median(t for one_round in v for t in one_round) for k, v in samples.items()}
    row = {"backbone": backbone, "size": size, "batch": batch, "seconds": sec, "round_seconds": samples}
    plain = sec.get("bare/plain")
    row["overhead"] = {
        k: v / sec[f"bare/{k.split('/')[1]}"]
        for k, v in sec.items()
        if not k.startswith("bare") and f"bare/{k.split('/')[1]}" in sec
    }
    row["vs_plain"] = {k: v / plain for k, v in sec.items()} if plain else {}
    if peer and "fast" in configs:
        row["speedup_over_adv_lib"] = {
            a: sec[f"adv_lib_{a}/plain"] / sec[f"{a}/fast"] for a in ("asma", "dag") if f"{a}/fast" in sec
        }
    return row


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def summary(rows: list[dict], attacks: list[str]) -> str:
    """One line per backbone, size and batch: the ranges over the attacks of every target ratio."""
    out = [
        "| backbone | px | batch | plain fwd+bwd (s) | overhead, `fast` (<= 1.05) | `fast` / plain (<= 0.85) | "
        "`bf16` / plain | adv_lib / ours: ASMA, DAG (>= 1.2) |",
        "|---" * 8 + "|",
    ]
    for r in rows:
        fast = _span([r["overhead"][f"{a}/fast"] for a in attacks])
        vs = _span([r["vs_plain"][f"{a}/fast"] for a in attacks]) if r["vs_plain"] else "-"
        bf16 = _span([r["vs_plain"][f"{a}/bf16"] for a in attacks]) if "bare/bf16" in r["seconds"] else "-"
        up = r.get("speedup_over_adv_lib")
        peer = f"{up['asma']:.2f}, {up['dag']:.2f}" if up else "-"
        plain = r["seconds"].get("bare/plain", float("nan"))
        out.append(
            f"| {NAMES[r['backbone']]} | {r['size']} | {r['batch']} | {plain:.3f} | {fast} | {vs} | {bf16} | {peer} |"
        )
    return "\n".join(out)


def tables(rows: list[dict], attacks: list[str]) -> str:
    """The README's Markdown: overhead (same configuration) and cost against the plain fwd+bwd."""
    head = " | ".join(LABELS[a] for a in attacks)
    out = []
    for config in ("plain", "fast", "bf16"):
        if not any(f"bare/{config}" in r["seconds"] for r in rows):
            continue
        out += [
            f"\nOverhead, `{config}` model: attack iteration / bare fwd+bwd of the same model (target <= 1.05)\n",
            f"| backbone | px | batch | fwd+bwd (s) | {head} |",
            "|---|---|---|---|" + "---|" * len(attacks),
        ]
        for r in rows:
            if f"bare/{config}" in r["seconds"]:
                cells = " | ".join(f"{r['overhead'][f'{a}/{config}']:.2f}" for a in attacks)
                out.append(
                    f"| {NAMES[r['backbone']]} | {r['size']} | {r['batch']} | "
                    f"{r['seconds'][f'bare/{config}']:.3f} | {cells} |"
                )
    configs = [c for c in ("fast", "bf16") if any(f"bare/{c}" in r["seconds"] for r in rows)]
    out += [
        "\nCost against the plain fp32 NCHW fwd+bwd (target <= 0.85)\n",
        "| backbone | px | batch | config | bare | " + head + " |",
        "|---|---|---|---|---|" + "---|" * len(attacks),
    ]
    for r in rows:
        for c in configs:
            if f"bare/{c}" in r["seconds"] and r["vs_plain"]:
                cells = " | ".join(f"{r['vs_plain'][f'{a}/{c}']:.2f}" for a in attacks)
                out.append(
                    f"| {NAMES[r['backbone']]} | {r['size']} | {r['batch']} | {c} | "
                    f"{r['vs_plain'][f'bare/{c}']:.2f} | {cells} |"
                )
    peers = [r for r in rows if "speedup_over_adv_lib" in r]
    if peers:
        out += [
            "\nPeer: seconds per iteration, adv_lib against ours on the same model and batch; speed-up = adv_lib "
            "on the plain model / ours on `fast` (target >= 1.2)\n",
            "| backbone | px | batch | attack | adv_lib, plain | ours, plain | adv_lib, fast | ours, fast | speed-up |",
            "|---" * 9 + "|",
        ]
        for r in peers:
            s = r["seconds"]
            for a in ("asma", "dag"):
                out.append(
                    f"| {NAMES[r['backbone']]} | {r['size']} | {r['batch']} | {LABELS[a]} | "
                    f"{s[f'adv_lib_{a}/plain']:.4f} | {s.get(f'{a}/plain', float('nan')):.4f} | "
                    f"{s[f'adv_lib_{a}/fast']:.4f} | {s[f'{a}/fast']:.4f} | "
                    f"{r['speedup_over_adv_lib'][a]:.2f} |"
                )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over every timed item")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes or iterations per item and round")
    parser.add_argument("--sizes", nargs="+", default=["default", "520"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--backbones", nargs="+", default=list(NAMES))
    parser.add_argument("--attacks", nargs="+", default=list(ATTACK_KWARGS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--peer", action="store_true", help="also time adv_lib's asma and dag")
    parser.add_argument("--peer-sizes", nargs="+", default=["default"], help="the sizes where --peer applies")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="cpu: the process's CPU time, which on "
        "one thread (--threads 1) ignores the time spent waiting for a core other processes hold",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "iteration_cost.json"))
    parser.add_argument("--tables", metavar="JSON", help="print the tables of a saved run and measure nothing")
    args = parser.parse_args()
    if args.tables:
        rows = json.loads(Path(args.tables).read_text())["rows"]
        print(summary(rows, args.attacks) + "\n\n" + tables(rows, args.attacks))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            for batch in args.batches:
                rows.append(
                    measure(
                        backbone,
                        0 if size == "default" else int(size),
                        batch,
                        args.rounds,
                        args.repeats,
                        args.attacks,
                        args.configs,
                        args.peer and size in args.peer_sizes,
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(
                    json.dumps(
                        {
                            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                            "cpu": describe(),
                            "clock": args.clock,
                            "load_average": os.getloadavg(),
                            "command": " ".join(sys.argv),
                            "torch": str(torch.__version__),
                            "rounds": args.rounds,
                            "repeats": args.repeats,
                            "date": time.strftime("%Y-%m-%d"),
                            "rows": rows,
                        },
                        indent=1,
                    )
                )
    print(summary(rows, args.attacks) + "\n\n" + tables(rows, args.attacks))


if __name__ == "__main__":
    main()
