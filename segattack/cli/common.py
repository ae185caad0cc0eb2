"""What the subcommands share: the run defaults' one home and argument types that refuse bad input."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from segattack.attacks import ATTACKS
from segattack.study.config import RunConfig
from segattack.util.params import parse_override

DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RunConfig)}  # the one home of the run defaults
ATTACK_HELP = f"{', '.join(ATTACKS)}, or ensemble:A,B,... (their per-image worst case)"


def attack_name(name: str) -> str:
    """An attack name argparse accepts: registered, or a family's (ensemble:pgd,segpgd)."""
    try:
        return ATTACKS.check(name).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def force_option() -> argparse.ArgumentParser:
    """``--force``: work over the bounds (steps, sliding windows) a user truly means."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--force",
        action="store_true",
        help="accept more than 10,000 steps or 64 sliding windows per pass (refused by default: usually a typo)",
    )
    return parser


def override(text: str) -> tuple[str, object]:
    """A ``KEY=VALUE`` option (``-a``, ``-p``), parsed as the configs parse it."""
    try:
        return parse_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
