"""A run's results from its shard records: statistics over images, [5]'s pooled scores, files.

:func:`assemble` turns the shard records into :class:`~segattack.study.records.Results` and the saved
images; :func:`write_run` writes them into a (staging) folder; :func:`read_run` reads a finished
run back and refuses one made with other parameters. Every entry point (CLI, notebooks, grid,
API) goes through these functions, so they all report the same numbers.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from segattack import __version__
from segattack.data.labels import VOC, LabelSpace
from segattack.data.targets import attacked_images
from segattack.engine.store import atomic_save, atomic_write_text
from segattack.metrics import dataset_scores, finite_or_none, pooled_from_counts
from segattack.study.config import RunConfig
from segattack.study.numerics import describe
from segattack.study.records import (
    RESULTS_VERSION,
    CleanTruth,
    Curve,
    Pooled,
    RecordError,
    Results,
    SavedImages,
    Score,
    ShardRecord,
    Stat,
    shallow_dict,
)


def summarize(metrics: dict[str, torch.Tensor], rows: list[int] | None = None) -> dict[str, Stat]:
    """Mean and 95% normal interval half-width over images (``rows``: a subset) for each metric;
    the half-width is None for one image."""
    out = {}
    for name, values in metrics.items():
        v = values.double() if rows is None else values.double()[rows]
        v = v[v.isfinite()]
        half = 1.96 * v.std(unbiased=True).item() / len(v) ** 0.5 if len(v) > 1 else float("nan")
        out[name] = Stat(finite_or_none(v.mean().item()) if len(v) else None, finite_or_none(half), len(v))
    return out


def curve(history: torch.Tensor, rows: list[int]) -> Curve:
    """Per iteration: mean and 95% normal half-width over ``rows`` of a (steps, images) history."""
    values = history.double()[:, rows]
    half = 1.96 * values.std(1, unbiased=True) / math.sqrt(len(rows)) if len(rows) > 1 else values[:, 0] * math.nan
    return Curve([finite_or_none(v) for v in values.mean(1).tolist()], [finite_or_none(v) for v in half.tolist()])


def pooled(conf: torch.Tensor, pixels: torch.Tensor, void: torch.Tensor) -> Pooled:
    """Reference [5]'s pooled IoU and accuracy of a set of images (:func:`metrics.pooled_from_counts`),
    predictions at the reference's void pixels counted in their class's union as [5] counts them."""
    scores = pooled_from_counts(conf, pixels, void)
    return Pooled(**{k: Score(v["value"], v["ci95"]) for k, v in scores.items()})  # type: ignore[arg-type]


def environment(cfg: RunConfig) -> dict[str, str]:
    """Versions, device and numerics: what a run's numbers depend on besides its config."""
    return {
        "segattack": __version__,
        "torch": str(torch.__version__),
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": cfg.device if cfg.device != "cpu" else f"cpu ({os.cpu_count()} cores)",
        **describe(cfg.numerics),
    }


def assemble(
    cfg: RunConfig, records: list[ShardRecord], skipped: list[str] | None = None
) -> tuple[Results, SavedImages]:
    """The run's results document and its saved images, from its shard records."""
    records = sorted(records, key=lambda r: r.shard)
    total = sum(len(r.indices) for r in records)
    metrics = {k: torch.cat([r.metrics[k] for r in records]) for k in records[0].metrics}
    conf = {k: torch.cat([r.conf[k] for r in records]) for k in records[0].conf}
    void = {k: torch.cat([r.void[k] for r in records]) for k in records[0].void}
    pixels = torch.cat([r.pixels for r in records])
    history = {k: torch.cat([r.history[k] for r in records], dim=1) for k in records[0].history}
    attacked = attacked_images(total, cfg.target_scheme, cfg.target_index)
    seconds, passes = sum(r.seconds for r in records), sum(r.passes for r in records)
    scopes = (("attacked", attacked), ("all", list(range(total))))
    pooled_scores = {
        scope: {ref: pooled(conf[ref][rows], pixels[rows], void[ref][rows]) for ref in void} for scope, rows in scopes
    }
    clean_truth = None
    if "clean_truth" in conf:
        scores = dataset_scores(conf["clean_truth"])
        clean_truth = CleanTruth(
            finite_or_none(scores["miou"]),
            finite_or_none(scores["pixel_accuracy"]),
            total,
            cfg.resize,
            [finite_or_none(v) for v in scores["class_iou"]],
        )
    results = Results(
        config=cfg,
        config_hash=cfg.digest(),
        results_version=RESULTS_VERSION,
        image_size=records[0].size,
        names=[n for r in records for n in r.names],
        notes=[n for r in records for n in r.notes],
        skipped=skipped or [],
        weights=records[0].weights,
        attack_params=records[0].attack_params,
        iterations=[i for r in records for i in r.iterations],
        shards=len(records),
        seconds=seconds,
        seconds_per_iteration=seconds / max(passes, 1),
        attacked=attacked,
        summary=summarize(metrics, attacked),
        summary_all=summarize(metrics),
        pooled=pooled_scores,
        clean_truth=clean_truth,
        per_image={k: [finite_or_none(x) for x in v.tolist()] for k, v in metrics.items()},
        history={k: curve(v, attacked) for k, v in history.items()},
        environment=environment(cfg),
        input_files=cfg.input_files(),
    )
    return results, SavedImages.join([r.saved for r in records])


def write_run(results: Results, saved: SavedImages, folder: Path, labels: LabelSpace = VOC) -> None:
    """PNGs of the saved images (clamped to [0,1] for display; predictions in ``labels``' colours),
    tensors, then ``results.json``."""
    palette = labels.palette
    for i, idx in enumerate(saved.index):
        adv = (saved.adv[i].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(adv).save(folder / f"{idx:02d}_adv.png")
        Image.fromarray(palette[saved.clean_pred[i].numpy()]).save(folder / f"{idx:02d}_pred_clean.png")
        Image.fromarray(palette[saved.adv_pred[i].numpy()]).save(folder / f"{idx:02d}_pred_adv.png")
    atomic_save(shallow_dict(saved), folder / "tensors.pt")  # through a Python file: a full disk is ENOSPC, named
    atomic_write_text(folder / "results.json", results.to_json())


def read_run(folder: str | os.PathLike, cfg: RunConfig | None = None) -> tuple[Results, SavedImages]:
    """A finished run's results and saved images; with ``cfg``, refused unless they were made with it."""
    folder = Path(folder).expanduser().resolve()
    results = Results.read(folder / "results.json")
    if cfg is not None and results.config_hash != cfg.digest():
        theirs, ours = asdict(results.config), asdict(cfg)
        diff = [
            f"{k}={theirs.get(k)!r} (asked {ours.get(k)!r})" for k in {**theirs, **ours} if theirs.get(k) != ours.get(k)
        ]
        raise RecordError(
            f"{folder} holds results of other parameters: "
            f"{'; '.join(diff) or 'the same fields, hashed by another segattack version'}"
        )
    return results, SavedImages.read(folder / "tensors.pt")
