"""Where segattack finds its shipped data and keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # segattack/util/paths.py -> the repository


def data_dir() -> Path:
    """The shipped ``data/`` folder (override with ``SEGATTACK_DATA``)."""
    return Path(os.environ.get("SEGATTACK_DATA", REPO_ROOT / "data"))


def photos_dir() -> Path:
    """The CC0/public-domain photos: study inputs and scene backgrounds."""
    return data_dir() / "photos"


def weights_dir() -> Path:
    """The embedded (project-trained) checkpoints shipped in the repository."""
    return data_dir() / "weights"


def cache_dir() -> Path:
    """``$SEGATTACK_HOME`` (default ``~/.cache/segattack``): models trained on first use, scratch."""
    return Path(os.environ.get("SEGATTACK_HOME", Path.home() / ".cache" / "segattack"))
