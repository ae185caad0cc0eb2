"""``segattack evaluate``: models' clean and robust scores, their records and the report."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields
from typing import Any

from segattack.engine.cluster import CLUSTERS
from segattack.study.evaluate import DEFAULT_ATTACKS, DEFAULT_MODELS, TARGETED, EvalConfig, eval_configs
from segattack.util.params import parse_override

SETTINGS = {f.name for f in fields(EvalConfig)} - {"model", "attacks", "eps", "norm", "targeted", "label_map", "window"}


def parse_eps(text: str) -> list[float]:
    """``"0.5/255,1/255,0.01"`` -> radii in [0,1] pixels; each a number or a fraction, > 0 and finite."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            top, slash, bottom = part.partition("/")
            value = float(top) / float(bottom) if slash else float(part)
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"--eps takes numbers or fractions such as 4/255, got {part!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"--eps radii must be > 0, got {part!r}")
        out.append(value)
    return out


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _override(text: str) -> tuple[str, Any]:
    try:
        key, value = parse_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if key not in SETTINGS:
        raise argparse.ArgumentTypeError(f"unknown setting {key!r}; -p takes {', '.join(sorted(SETTINGS))}")
    return key, value


def run(args: argparse.Namespace) -> int:
    from segattack.engine.jobs import TaskState
    from segattack.study.evalrun import run_evaluation

    settings = dict(args.param or [])
    if not args.model:
        settings.setdefault("weights", "embedded")  # the two embedded backbones on their held-out scenes
    settings.update(images=args.images, norm=args.norm, targeted=args.targeted)
    settings.update(label_map=args.label_map or "", window=args.window or "")
    if args.eps:
        settings["eps"] = args.eps
    if args.attacks:
        settings["attacks"] = args.attacks
    configs = eval_configs(list(args.model or []), **settings)
    states = run_evaluation(configs, args.out, args.cluster)
    print("models: " + ", ".join(f"{name} {state}" for name, state in states.items()))
    if TaskState.FAILED in states.values():
        return 1
    print(f"report: {args.out}/index.html; records: {args.out}/<model>/evaluation.json")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    ev = sub.add_parser(
        "evaluate",
        parents=[common],
        help="clean and robust mIoU/aAcc of models under the strongest attacks, their worst case, smallest eps",
    )
    ev.add_argument(
        "--model",
        action="append",
        metavar="SPEC",
        help="a study backbone or a model spec (torchvision:, hf:, smp:, module:); repeat for several "
        f"(default: the embedded {' and '.join(DEFAULT_MODELS)} on their held-out scenes)",
    )
    ev.add_argument("--images", default="scenes", help="scenes (default), voc:PATH, pairs:PATH, cityscapes:PATH, ...")
    ev.add_argument("--out", default="evaluation", help="output folder (default evaluation/)")
    ev.add_argument(
        "--eps", type=parse_eps, help="radii in [0,1] pixels, e.g. 0.5/255,1/255,2/255,4/255,8/255 (L-inf default)"
    )
    ev.add_argument("--norm", default="linf", choices=["linf", "l2"], help="the threat model (default linf)")
    ev.add_argument(
        "--attacks",
        type=_names,
        help=f"comma-separated attacks (default {','.join(DEFAULT_ATTACKS)}: the budget attacks at each eps, "
        "the minimal-norm ones for each image's smallest eps)",
    )
    ev.add_argument(
        "--targeted",
        default="none",
        metavar="MODE",
        help=f"{' | '.join(TARGETED)} | fixed:CLASS | remove:CLASS (default none, the field's standard)",
    )
    ev.add_argument("--label-map", metavar="FILE", help="read the masks in the model's classes (see attack -h)")
    ev.add_argument("--window", metavar="H[xW]", help="sliding-window inference (see attack -h)")
    ev.add_argument(
        "-p",
        "--param",
        action="append",
        type=_override,
        metavar="KEY=VALUE",
        help=f"a run setting: {', '.join(sorted(SETTINGS))} (e.g. -p steps=100 -p num_images=0 -p device=cuda)",
    )
    ev.add_argument(
        "--cluster", default="local", help=f"{', '.join(CLUSTERS)}, or a Dask scheduler address (default local)"
    )
    ev.set_defaults(func=run)
