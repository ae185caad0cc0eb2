"""Command line: ``python -m segattack {attack,report,train,evaluate,leaderboard} ...``.

Every parameter is checked before any work (and before any folder is touched); a failure prints
one line and exits with 2 (bad input), 1 (an attack diverged, a run failed) or 130 / 128+signal
(stopped: what finished is kept, and the same command resumes). ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from segattack.attacks import AttackDiverged
from segattack.cli import attack, evaluate, leaderboard, report, train

SUBCOMMANDS = (
    attack,
    report,
    train,
    evaluate,
    leaderboard,
)  # each module adds its subparser and the function that runs it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segattack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an error too")
    for command in SUBCOMMANDS:
        command.add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from segattack.engine.kernels import Stopped, stopping

    args = build_parser().parse_args(argv)
    prefix = f"segattack {args.command}:"
    try:
        with stopping():
            return args.func(args)
    except AttackDiverged as exc:
        print(
            f"{prefix} error: the attack diverged: {exc}. Likely cause: a step size too large for the model's "
            f"logits (alpha, beta, tau, gamma) or non-finite weights; finished shards are kept and the same "
            f"command resumes from them",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else 2
        print(
            f"{prefix} stopped ({'Ctrl-C' if signum == 2 else exc}): every finished shard and result is kept; "
            f"run the same command again to resume",
            file=sys.stderr,
        )
        return 128 + signum
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        _explain(args, f"{prefix} error: {_first_line(exc)}")
        return 2
    except Exception as exc:  # a notebook's, a kernel's or Dask's own failure: still one line (-v: the traceback)
        _explain(args, f"{prefix} error: {type(exc).__name__}: {_first_line(exc)} (-v prints the traceback)")
        return 1


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _explain(args: argparse.Namespace, line: str) -> None:
    """The error's one line, after its traceback when ``-v`` asked for it."""
    if getattr(args, "verbose", False):
        traceback.print_exc()
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
