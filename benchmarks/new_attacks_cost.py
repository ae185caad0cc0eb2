"""Time per iteration of the newer attacks (APGD, SEA, ALMA prox, PDPGD, FMN) against one bare
forward+backward of the same model on the same batch, and against adv_lib 0.2.8's ALMA prox and PDPGD.

    .venv/bin/python benchmarks/new_attacks_cost.py          # MobileNetV3, 128 px, batch 1 and 4

For each batch, in one process and on the same random batch (images in [0,1], random target labels
of the 21 classes; targeted attacks, every step run, no early stopping):

- ``bare``: one forward of the model plus the backward of the pixel-wise cross-entropy w.r.t. the
  input (after a warm-up pass), as ``iteration_cost.py`` times it;
- each attack: the time of one iteration, read as the interval between the starts of two
  consecutive forward passes (a forward pre-hook on the model) *when a backward ran between them*
  (a gradient hook on the model's output marks it). APGD's last iterate and the final judging pass
  of every run are forward-only, so their intervals are left out; so is a run's first interval
  (warm-up). SEA runs its three losses (each APGD over three stages), so its samples mix the three
  losses' iterations;
- ``--peer``: adv_lib's ``alma_prox`` and ``pdpgd`` (L-inf) timed the same way with their
  defaults and the same steps, on the plain model (torchvision's network as built: what a user
  hands adv_lib) and on ours. adv_lib wraps its ALMA prox operator in ``torch.compile``, which
  takes minutes to compile on a CPU; it runs uncompiled here (as ``tests/test_adv_lib_minimal.py``
  runs it) unless ``--adv-lib-compile``.

After one unrecorded warm-up round over every item (oneDNN's first calls at a shape are many
times slower), every item is timed in each of ``--rounds`` interleaved rounds, so a slow spell
of a noisy machine touches all items alike, and reported as the median of its samples; ratios are
taken within the run. Targets: overhead = iteration / bare (same model) <= 1.05; speed-up = adv_lib
on the plain model / ours on ``fast`` >= 1.2 (also shown: adv_lib on ``fast``). Models: the
embedded checkpoints (time does not depend on the weights' values); ``fast`` is ``load_model``'s
default (channels_last, batch norms folded), ``plain`` is torchvision's network as built.
Torch runs on ``--threads`` threads (1 by default: with another process busy on a 2-core
machine, two OpenMP threads wait on each other and single passes vary 10x), and every interval is
read on ``--clock``: by default the process's CPU time, which on one thread counts the work done
and not the time spent waiting for a core that other processes hold (wall-clock samples of the same
pass moved 130-500 ms at batch 4 while two other studies ran; ``--clock wall`` restores it).
Writes JSON (``--out``) with the CPU (:mod:`machine`), torch version, threads and load average,
and prints the Markdown tables of ``benchmarks/README.md`` (``--tables JSON`` prints a saved run's).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
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

NAMES = {"mobilenet_v3_large": "MobileNetV3", "resnet50": "ResNet50"}
LABELS = {"apgd": "APGD", "sea": "SEA", "alma_prox": "ALMA prox", "pdpgd": "PDPGD", "fmn": "FMN"}
# every step run: SEA's default stops an image once it is fully won
ATTACK_KWARGS: dict[str, dict] = {"apgd": {}, "sea": {"adv_threshold": None}, "alma_prox": {}, "pdpgd": {}, "fmn": {}}
PEERS = ("alma_prox", "pdpgd")
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
clock: Callable[[], float] = time.process_time
CONFIGS = {"plain": {"channels_last": False, "fold_bn": False}, "fast": {}}


def bare_seconds(model: SegmentationModel, x: torch.Tensor, t: torch.Tensor, repeats: int) -> list[float]:
    """Seconds of ``repeats`` forward + cross-entropy backward passes w.r.t. the input (after a warm-up)."""
    times = []
    for _ in range(repeats + 1):
        start = clock()
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(pixel_cross_entropy(model(xx), t).mean(), xx)
        times.append(clock() - start)
    return times[1:]


def iteration_seconds(model: torch.nn.Module, run: Callable[[], object]) -> list[float]:
    """The intervals between consecutive forward starts of ``run()`` with a backward through the
    model's output between them, the first such interval left out as warm-up."""
    events: list[tuple[str, float]] = []

    def on_output(_module: object, _args: object, out: torch.Tensor) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(lambda g: events.append(("backward", 0.0)))

    pre = model.register_forward_pre_hook(lambda *_: events.append(("forward", clock())))
    post = model.register_forward_hook(on_output)
    try:
        run()
    finally:
        pre.remove()
        post.remove()
    intervals, start, backward = [], None, False
    for kind, stamp in events:
        if kind == "backward":
            backward = True
            continue
        if start is not None and backward:
            intervals.append(stamp - start)
        start, backward = stamp, False
    return intervals[1:]


def adv_lib_alma_prox(compiled: bool) -> Callable:
    module = importlib.import_module("adv_lib.attacks.segmentation.alma_prox")
    if not compiled:  # the function torch.compile wraps: the same operator, uncompiled
        module.prox_linf_indicator = getattr(
            module.prox_linf_indicator, "_torchdynamo_orig_callable", module.prox_linf_indicator
        )
    return module.alma_prox


def measure(
    backbone: str,
    size: int,
    batch: int,
    steps: dict[str, int],
    rounds: int,
    repeats: int,
    attacks: list[str],
    peer: bool,
    adv_lib_compile: bool,
) -> dict:
    """Every timing of one (backbone, size, batch), interleaved over ``rounds``."""
    models = {c: load_model(backbone, "embedded", **CONFIGS[c]) for c in (["plain", "fast"] if peer else ["fast"])}
    size = size or int(models["fast"].info.extra["image_size"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    t = torch.randint(0, 21, (batch, size, size), generator=g)

    def ours(name: str, config: str) -> Callable[[], list[float]]:
        model = models[config]
        return lambda: iteration_seconds(
            model, lambda: ATTACKS[name](model, x, t, steps=steps[name], **ATTACK_KWARGS[name])
        )

    items: dict[str, Callable[[], list[float]]] = {"bare/fast": lambda: bare_seconds(models["fast"], x, t, repeats)}
    items.update({f"{name}/fast": ours(name, "fast") for name in attacks})
    if peer:
        from adv_lib.attacks.segmentation import pdpgd as ref_pdpgd

        ref_alma = adv_lib_alma_prox(adv_lib_compile)
        items["bare/plain"] = lambda: bare_seconds(models["plain"], x, t, repeats)
        for name in PEERS:
            if name in attacks:
                items[f"{name}/plain"] = ours(name, "plain")
        for config, model in models.items():
            if "alma_prox" in attacks:
                items[f"adv_lib_alma_prox/{config}"] = lambda m=model: iteration_seconds(
                    m, lambda: ref_alma(m, x, t, targeted=True, num_steps=steps["alma_prox"])
                )
            if "pdpgd" in attacks:
                items[f"adv_lib_pdpgd/{config}"] = lambda m=model: iteration_seconds(
                    m, lambda: ref_pdpgd(m, x, t, norm=float("inf"), targeted=True, num_steps=steps["pdpgd"])
                )
    for timed in items.values():  # a warm-up round, not recorded: the first calls at a shape are slow
        timed()
    samples: dict[str, list[list[float]]] = {k: [] for k in items}
    for _ in range(rounds):
        for key, timed in items.items():
            samples[key].append(timed())
    sec = {k: statistics.median(s for one in v for s in one) for k, v in samples.items()}
    row: dict = {"backbone": backbone, "size": size, "batch": batch, "seconds": sec, "round_seconds": samples}
    row["samples"] = {k: sum(len(one) for one in v) for k, v in samples.items()}
    row["overhead"] = {
        k: v / sec[f"bare/{k.split('/')[1]}"]
        for k, v in sec.items()
        if not k.startswith(("bare", "adv_lib")) and f"bare/{k.split('/')[1]}" in sec
    }
    row["adv_lib_overhead"] = {k: v / sec[f"bare/{k.split('/')[1]}"] for k, v in sec.items() if k.startswith("adv_lib")}
    if peer:
        row["speedup_over_adv_lib"] = {
            a: sec[f"adv_lib_{a}/plain"] / sec[f"{a}/fast"] for a in PEERS if f"{a}/fast" in sec
        }
        row["speedup_same_model"] = {
            a: sec[f"adv_lib_{a}/fast"] / sec[f"{a}/fast"] for a in PEERS if f"{a}/fast" in sec
        }
    return row


def tables(rows: list[dict], attacks: list[str]) -> str:
    """The README's Markdown: overhead per attack, then the adv_lib comparison."""
    head = " | ".join(LABELS[a] for a in attacks)
    out = [
        "Overhead, `fast` model: attack iteration / bare fwd+bwd of the same model (target <= 1.05)\n",
        f"| backbone | px | batch | fwd+bwd (s) | {head} |",
        "|---|---|---|---|" + "---|" * len(attacks),
    ]
    for r in rows:
        cells = " | ".join(f"{r['overhead'][f'{a}/fast']:.2f}" for a in attacks)
        out.append(
            f"| {NAMES[r['backbone']]} | {r['size']} | {r['batch']} | {r['seconds']['bare/fast']:.4f} | {cells} |"
        )
    peers = [r for r in rows if "speedup_over_adv_lib" in r]
    if peers:
        out += [
            "\nPeer: seconds per iteration (overhead in brackets); speed-up = adv_lib on the plain model / "
            "ours on `fast` (target >= 1.2); same model = adv_lib on `fast` / ours on `fast`\n",
            "| backbone | px | batch | attack | adv_lib, plain | ours, plain | adv_lib, fast | ours, fast | "
            "speed-up | same model |",
            "|---" * 10 + "|",
        ]
        for r in peers:
            s = r["seconds"]
            for a in (a for a in PEERS if a in attacks):

                def cell(key: str, r: dict = r, s: dict = s) -> str:
                    config = key.split("/")[1]
                    return f"{s[key]:.4f} ({s[key] / s[f'bare/{config}']:.2f})" if key in s else "-"

                out.append(
                    f"| {NAMES[r['backbone']]} | {r['size']} | {r['batch']} | {LABELS[a]} | "
                    f"{cell(f'adv_lib_{a}/plain')} | {cell(f'{a}/plain')} | {cell(f'adv_lib_{a}/fast')} | "
                    f"{cell(f'{a}/fast')} | {r['speedup_over_adv_lib'][a]:.2f} | {r['speedup_same_model'][a]:.2f} |"
                )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v3_large", choices=list(NAMES))
    parser.add_argument(
        "--size", type=int, default=0, help="image side in px (0: the model's own, 128 for MobileNetV3)"
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--steps", type=int, default=8, help="steps per run (SEA: --sea-steps)")
    parser.add_argument("--sea-steps", type=int, default=10, help="SEA's steps per member (stages of 3, 3, 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over every timed item")
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="unused by attacks (a run gives steps - 1 samples); bare passes per round (0: steps - 1)",
    )
    parser.add_argument("--attacks", nargs="+", default=list(ATTACK_KWARGS), choices=list(ATTACK_KWARGS))
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip adv_lib")
    parser.add_argument("--adv-lib-compile", action="store_true", help="keep adv_lib's torch.compile of its prox")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default). 1 by default: on a "
        "shared 2-core machine two threads stall on each other's OpenMP barriers (10x noise)",
    )
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="cpu",
        help="cpu: the process's CPU time (with one "
        "thread, immune to waiting for a core another process holds); wall: perf_counter",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "new_attacks_cost.json"))
    parser.add_argument("--tables", metavar="JSON", help="print the tables of a saved run and measure nothing")
    args = parser.parse_args()
    if args.tables:
        saved = json.loads(Path(args.tables).read_text())
        print(tables(saved["rows"], saved["attacks"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    steps = {a: args.sea_steps if a == "sea" else args.steps for a in args.attacks}
    repeats = args.repeats or max(args.steps - 1, 1)
    started, load_before = time.time(), os.getloadavg()
    rows = []
    for batch in args.batches:
        rows.append(
            measure(
                args.backbone,
                args.size,
                batch,
                steps,
                args.rounds,
                repeats,
                args.attacks,
                args.peer,
                args.adv_lib_compile,
            )
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "round_seconds"}), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "cpu": describe(),
                    "torch": str(torch.__version__),
                    "threads": torch.get_num_threads(),
                    "clock": args.clock,
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                    "wall_seconds": time.time() - started,
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "steps": steps,
                    "rounds": args.rounds,
                    "bare_repeats": repeats,
                    "adv_lib_compiled": args.adv_lib_compile,
                    "attacks": args.attacks,
                    "command": " ".join(sys.argv),
                    "rows": rows,
                },
                indent=1,
            )
        )
    print(tables(rows, args.attacks))


if __name__ == "__main__":
    main()
