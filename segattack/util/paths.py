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


def _roots(data_root: Path | None) -> list[tuple[str, Path]]:
    """The folders a recorded path is shown relative to, most specific first."""
    import torch.hub

    roots = [("", REPO_ROOT)]
    if data_root is not None:
        roots.append(("<images>/", data_root))
    roots += [
        ("$SEGATTACK_HOME/", cache_dir()),
        ("$TORCH_HOME/", Path(torch.hub.get_dir()).parent),
        ("$HF_HOME/", Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))),
        ("./", Path.cwd()),
    ]
    return roots


def shown_path(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> str:
    """``path`` as a results file records it, with no absolute path of this machine: relative to the
    project (``data/weights/x.pt``), the run's image folder (``<images>/classes.txt``),
    ``$SEGATTACK_HOME``, ``$TORCH_HOME``, ``$HF_HOME`` or the working directory (``./w.pt``); a file
    elsewhere by its name alone (``.../w.pt``; its recorded hash says which file it was)."""
    target = Path(os.path.abspath(Path(path).expanduser()))
    data = Path(os.path.abspath(data_root)) if data_root is not None else None
    for prefix, root in _roots(data):
        root = Path(os.path.abspath(root))
        if target == root or target.is_relative_to(root):
            relative = target.relative_to(root).as_posix()
            return f"{prefix}{relative}" if relative != "." else (prefix.rstrip("/") or ".")
    return f".../{target.name}"
