"""``segattack leaderboard``: evaluation records ranked in one table (HTML, Markdown or CSV)."""

from __future__ import annotations

import argparse
from typing import Any

from segattack.cli.evaluate import parse_eps
from segattack.util.params import ParameterError


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    lb = sub.add_parser("leaderboard", parents=[common], help="rank evaluation records in one table")
    lb.add_argument("records", nargs="+", metavar="DIR_OR_RECORD", help="evaluation.json files or folders of them")
    lb.add_argument("--out", required=True, help="the table: .html, .md or .csv")
    lb.add_argument("--eps", type=parse_eps, help="the radius to rank at (default: the largest the records share)")
    lb.add_argument("--mixed", action="store_true", help="compare records made under different protocols")
    lb.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segattack.study.leaderboard import leaderboard

    eps = None
    if args.eps:
        if len(args.eps) != 1:
            raise ParameterError("--eps names one radius for the leaderboard")
        eps = args.eps[0]
    ranked = leaderboard(args.records, args.out, eps, args.mixed)
    print(f"{len(ranked)} models ranked -> {args.out}")
    return 0
