"""The input files that change a run's numbers, identified by their content.

A run's parameters name files whose content decides its numbers: a checkpoint (``weights``, an
``smp:`` checkpoint), the published or embedded weights a source resolves to, a local ``hf:``
folder's weights and configs, a label map, a ``pairs:`` folder's ``classes.txt``. Their SHA-256
digests enter the run's config hash (:meth:`segattack.config.RunConfig.digest`), so a replaced file
never reuses the results or the shards made from the old one; the results list them
(:class:`InputFile`) with paths relative to the project or the data root
(:func:`segattack.paths.shown_path`), never an absolute path of the machine. A file is hashed once
per (path, size, modification time, inode) in a process (:func:`segattack.models.file_sha256`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from segattack.data.sets import DATASET_PREFIXES
from segattack.models.backbones import (
    BACKBONES,
    embedded_weights_path,
    file_sha256,
    torchvision_hash_prefix,
    torchvision_weights_path,
)
from segattack.models.specs import _looks_local, _smp_parts
from segattack.util.paths import shown_path


@dataclass(frozen=True)
class InputFile:
    """One input file of a run: its role, its path as recorded (:func:`~segattack.paths.shown_path`) and
    its SHA-256 (``absent`` for a file the run will fetch: published weights, checked by their hash)."""

    role: str
    path: str
    sha256: str


def weights_files(backbone: str, weights: str) -> list[tuple[str, Path]]:
    """The files a model's numbers come from: ``(role, path)`` for a backbone's or a ``torchvision:``
    spec's weights, an ``smp:`` checkpoint, every file of a local ``hf:`` folder (a hub repository
    is named by its spec alone; a ``module:`` model by its code)."""
    kind, _, rest = backbone.partition(":")
    if backbone in BACKBONES or kind == "torchvision":
        name = backbone if backbone in BACKBONES else rest
        source = weights
        if source == "auto":
            source = "torchvision" if torchvision_weights_path(name).is_file() else "embedded"
        if source == "torchvision":
            return [("torchvision weights", torchvision_weights_path(name))]
        if source == "embedded" and backbone in BACKBONES:
            return [("embedded weights", embedded_weights_path(name))]
        return [("weights", Path(weights))] if source not in ("embedded", "auto") else []
    if kind == "smp":
        checkpoint = _smp_parts(backbone, rest)[2]
        return [("smp checkpoint", Path(checkpoint))] if checkpoint else []
    if kind == "hf" and _looks_local(rest) and os.path.isdir(rest):
        folder = Path(rest)
        return [
            (f"hf:{folder.name}/{p.name}", p)
            for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")
        ]
    return []


def data_files(images: str, label_map: str) -> list[tuple[str, Path]]:
    """The label files of a run's images: a ``pairs:`` folder's ``classes.txt`` and the label map."""
    files = []
    if images.startswith("pairs:") and (Path(images[6:]) / "classes.txt").is_file():
        files.append(("classes.txt", Path(images[6:]) / "classes.txt"))
    if label_map:
        files.append(("label map", Path(label_map)))
    return files


def data_root(images: str) -> Path | None:
    """The folder of a dataset spec (``pairs:``, ``voc:``, ...) or of a folder of images."""
    for prefix in DATASET_PREFIXES:
        if images.startswith(prefix):
            return Path(images[len(prefix) :])
    return Path(images) if images not in ("scenes", "photos") else None


def fingerprint(files: list[tuple[str, Path]], root: Path | None = None) -> list[InputFile]:
    """``files`` by content. Published torchvision weights are named by the hash prefix torch.hub
    checks (a cached file that matches it and one not yet downloaded are the same weights); a missing
    file is ``absent`` (the run refuses it, or fetches and checks it)."""
    out = []
    for role, path in files:
        if not path.is_file():
            digest = "absent"
            if role == "torchvision weights":
                digest = f"published:{torchvision_hash_prefix(path)}"
        else:
            digest = file_sha256(path)
            if role == "torchvision weights" and digest.startswith(torchvision_hash_prefix(path)):
                digest = f"published:{torchvision_hash_prefix(path)}"
        out.append(InputFile(role, shown_path(path, root), digest))
    return out
