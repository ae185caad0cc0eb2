"""The study grid: one run per backbone x attack, resumable, under a profile.

A run directory holds ``results.json`` only once the run finished (it is written last and
atomically) and records the hash of the run's parameters, so a restarted grid skips exactly the
runs whose results are complete for the same parameters and redoes the rest.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from .runner import RunConfig, config_hash

BACKBONE_ORDER = ("mobilenet_v3_large", "resnet50")
ATTACK_ORDER = ("asma", "pgd")

PROFILES: dict[str, dict[str, Any]] = {
    # Embedded weights on their held-out scenes at their training size: CPU-friendly.
    "default": {"weights": "embedded", "images": "scenes", "num_images": 8, "size": 0, "steps": 100},
    # The paper: torchvision's COCO weights, the shipped photos at 520 px (a GPU or a patient CPU).
    "paper": {"weights": "torchvision", "images": "photos", "num_images": 8, "size": 520, "steps": 100},
    # Smoke test for CI: two small images, two iterations.
    "tiny": {"weights": "embedded", "images": "scenes", "num_images": 2, "size": 64, "steps": 2},
}


def run_name(backbone: str, attack: str) -> str:
    return f"{backbone}-{attack}"


def grid_configs(profile: str, overrides: dict[str, Any] | None = None,
                 backbones: tuple[str, ...] = BACKBONE_ORDER,
                 attacks: tuple[str, ...] = ATTACK_ORDER) -> Iterator[RunConfig]:
    """The runs of ``profile`` (with ``overrides`` applied to every run), in report order."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    settings = {**PROFILES[profile], **(overrides or {})}
    unknown = set(settings) - set(RunConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown run parameters: {', '.join(sorted(unknown))}")
    for backbone in backbones:
        for attack in attacks:
            yield replace(RunConfig(backbone=backbone, attack=attack), **settings)


def is_complete(run_dir: Path, digest: str) -> bool:
    """True when ``run_dir`` holds finished results for exactly these parameters."""
    try:
        return json.loads((run_dir / "results.json").read_text()).get("config_hash") == digest
    except (OSError, ValueError):
        return False
