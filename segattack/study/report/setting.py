"""Which runs are in the paper's setting, and the report's title and headers from the runs it holds.

The paper attacks torchvision's DeepLabV3 (the study's two backbones) on VOC-labelled images. A run
of another model, on images labelled in another space, or with its masks read through a label map
is not in that setting: the report names how it departs, judges the paper's claims on the runs in
the setting only, and speaks of the others in their own section.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from segattack.attacks import ATTACKS
from segattack.data.labels import VOC
from segattack.models.backbones import BACKBONES
from segattack.study.config import RunConfig
from segattack.study.records import Results

PAPER_MODEL = "DeepLabV3"  # what the study's backbones are


def departures(config: RunConfig) -> list[str]:
    """How a run's setting departs from the paper's, one phrase each (none: the paper's setting)."""
    out = []
    if config.backbone not in BACKBONES:
        out.append(f"model {config.backbone}")
    if config.label_map:
        out.append(f"masks read through the label map {Path(config.label_map).name}")
    if config.labels.name != VOC.name:
        out.append(f"images labelled in {config.labels.name}")
    return out


def in_paper_setting(config: RunConfig) -> bool:
    return not departures(config)


def model_name(backbone: str) -> str:
    """A model's name for titles: DeepLabV3 for the study's backbones, else its spec shortened (an
    ``hf:`` folder's or an ``smp:`` checkpoint's file name, not its path)."""
    if backbone in BACKBONES:
        return PAPER_MODEL
    kind, _, rest = backbone.partition(":")
    if kind == "hf" and rest.startswith("/"):
        return f"hf:{Path(rest).name}"
    if kind == "smp":
        return "smp:" + ":".join(rest.split(":", 2)[:2])
    return backbone


def title(configs: Iterable[RunConfig]) -> str:
    """The report's title from the models and label spaces of its runs."""
    configs = list(configs)
    if not configs:
        return "segattack report: no finished runs"
    if all(map(in_paper_setting, configs)):
        return f"Multiclass ASMA vs targeted PGD on {PAPER_MODEL} — segattack reproduction"
    models = dict.fromkeys(f"{model_name(c.backbone)} ({c.labels.name})" for c in configs)
    paper = any(c.attack in ATTACKS.in_paper() for c in configs)
    return f"{'Multiclass ASMA vs targeted PGD' if paper else 'Attacks'} on {' and '.join(models)} — segattack"


def classes_note(configs: Iterable[RunConfig]) -> str:
    """What ``all`` averages over in the every-reading table: each run's own label space's classes."""
    spaces = {c.labels.name: c.labels.num_classes for c in configs}
    if len(spaces) == 1:
        ((name, count),) = spaces.items()
        return f"all {count} classes of {name}"
    return "all classes of each run's label space (" + ", ".join(f"{n}: {k}" for n, k in spaces.items()) + ")"


def setting_note(configs: Iterable[RunConfig]) -> str | None:
    """One sentence naming every run outside the paper's setting and how it departs (None: every run is in it)."""
    others = dict.fromkeys(
        f"{c.backbone} on {c.images} ({'; '.join(departures(c))})" for c in configs if not in_paper_setting(c)
    )
    if not others:
        return None
    return (
        "Not the paper's setting: " + "; ".join(others) + ". Their rows read as the paper's readings do, but the "
        "paper's numbers are not theirs to compare with: its claims are judged on the runs in its setting only, "
        "and its figures are not drawn from these runs."
    )


def other_setting_lines(results: Iterable[Results]) -> list[str]:
    """The discussion's section on the runs outside the paper's setting: per model and data, each
    attack's readings, stated without a verdict against the paper's numbers."""
    groups: dict[str, list[Results]] = {}
    for r in results:
        if not in_paper_setting(r.config):
            setting = f"{r.config.backbone} on {r.config.images} ({'; '.join(departures(r.config))})"
            groups.setdefault(setting, []).append(r)
    lines = []
    for setting, runs in groups.items():
        readings = "; ".join(
            f"{ATTACKS[r.config.attack].label if r.config.attack in ATTACKS else r.config.attack}: IoU to the "
            f"original prediction {_percent(r.mean('iou_original'))}, pixel accuracy "
            f"{_percent(r.mean('acc_original'))}, targeted success on the pixels to change "
            f"{_percent(r.mean('success_changed'))}, L2 {_number(r.mean('l2_255'))} (0-255)"
            for r in runs
        )
        lines.append(f"  - **{setting}:** {readings}.")
    if lines:
        lines.insert(
            0,
            "- **Outside the paper's setting** (the paper's claims above are judged without these runs; their "
            "numbers are not the paper's to compare with):",
        )
    return lines


def _percent(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _number(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:,.1f}"
