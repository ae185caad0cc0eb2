"""One study run, in shards: load model and images, build targets, attack, measure.

A run attacks ``num_images`` images of an image set in shards of ``batch`` images (the attack's
batch: [5] attacks 4 at a time). A shard is a pure function of the run's configuration and its
index (:func:`run_shard`), so shards run in any order on any worker (the Dask grid) with the same
numbers, and a restarted run redoes only the shards that are not on disk. :class:`RunJob` is the
run as a :class:`~segattack.engine.jobs.Job`; :func:`run` computes one in this process.
"""

from __future__ import annotations

import os
import time
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from segattack.attacks import AttackResult
from segattack.data.sets import MIN_SIDE, ImageError, ImageSet, Loaded, image_set
from segattack.data.targets import scheme_target, target_sources
from segattack.engine.jobs import Job
from segattack.metrics import attack_metrics, confusion_matrix, mean_iou, pixel_accuracy, void_prediction_counts
from segattack.models.classcheck import check_classes, model_classes, spec_classes
from segattack.models.specs import import_backends
from segattack.models.wrapper import SegmentationModel
from segattack.study.cache import ImageSetKey, cached_model, clean_prediction, warm_up
from segattack.study.config import DEFAULT_SIZE, MAX_LONG_SIDE, RunConfig, check_work
from segattack.study.numerics import jittered, numerics
from segattack.study.records import RESULTS_VERSION, Results, SavedImages, ShardRecord
from segattack.study.results import assemble, read_run, write_run


def image_size(cfg: RunConfig, model: SegmentationModel) -> int:
    """The side the images are resized to: the run's ``size``, else the weights' own."""
    return cfg.size or int(model.info.extra.get("image_size", 520))


def run_images(cfg: RunConfig, size: int) -> ImageSet:
    """The run's image set at ``size``, its masks read through the run's label map where it has one."""
    images = image_set(cfg.images, size, cfg.resize, cfg.seed)
    mapping = cfg.label_mapping()
    return images if mapping is None else images.mapped(mapping)


def count_images(cfg: RunConfig) -> int:
    """How many images the run attacks; the set is listed, every file's header checked (not decoded)
    and the target scheme checked against the count."""
    images = run_images(cfg, max(cfg.size, MIN_SIDE))
    count = images.select(cfg.num_images)
    images.check(count)
    if cfg.resize == "shorter" and images.files is not None:
        check_long_sides(images.files[:count], cfg.size or DEFAULT_SIZE, "" if cfg.force else cfg.window)
    target_sources([], count, cfg.target_scheme, cfg.target_index)
    if cfg.target_source == "truth" and not images.has_truth:
        raise ImageError(f"target_source='truth' needs ground truth, and {cfg.images} has none")
    return count


def check_model(cfg: RunConfig) -> None:
    """Refuse, before any work, a model whose classes are not the run's labels: the spec resolved and
    its classes read in this process (:func:`segattack.models.classcheck.spec_classes`, a ``module:`` model
    run once at the run's size), with the message a loaded model's check gives."""
    check_classes(spec_classes(cfg.backbone, cfg.size or DEFAULT_SIZE, cfg.window), cfg.labels, cfg.backbone)


def check_long_sides(files: list[Path], size: int, window: str = "") -> None:
    """Refuse a file whose longer side, with its shorter side resized to ``size``, would exceed
    :data:`~segattack.study.config.MAX_LONG_SIDE` (read from headers; size 0 is checked as 520, the
    largest default), or that would take more than :data:`~segattack.study.config.MAX_WINDOWS` sliding
    ``window`` passes at that size."""
    from PIL import Image

    for path in files:
        with Image.open(path) as img:
            w, h = img.size
        if size * max(w, h) > MAX_LONG_SIDE * min(w, h):
            raise ImageError(
                f"{path} is {w}x{h}: with resize=shorter at {size} px its longer side would be "
                f"{size * max(w, h) // min(w, h)} px, over {MAX_LONG_SIDE}; use resize=crop or a "
                f"smaller size"
            )
        if window:
            height, width = (size, size * w // h) if w >= h else (size * h // w, size)
            check_work(1, window, width, height)


def shard_ranges(total: int, batch: int) -> list[range]:
    return [range(start, min(start + batch, total)) for start in range(0, total, batch)]


def _groups(tensors: list[torch.Tensor]) -> list[range]:
    """Runs of consecutive same-shape images: each is attacked as one batch."""
    out, start = [], 0
    for i in range(1, len(tensors) + 1):
        if i == len(tensors) or tensors[i].shape != tensors[start].shape:
            out.append(range(start, i))
            start = i
    return out


def _resize_mask(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if mask.shape == shape:
        return mask
    return F.interpolate(mask[None, None].float(), size=tuple(shape), mode="nearest")[0, 0].long()


def run_shard(
    cfg: RunConfig, shard: int, model: SegmentationModel | None = None, progress: bool = False
) -> ShardRecord:
    """Attack shard ``shard`` of the run and measure it, under the run's numerics.

    Clean predictions are made one image at a time (:func:`~segattack.study.cache.clean_prediction`), so
    an image's prediction (and so every target taken from it) is the same bits in every shard and
    on every worker."""
    with numerics(cfg.numerics):
        return _run_shard(cfg, shard, model or cached_model(cfg.model_key), progress)


def _run_shard(cfg: RunConfig, shard: int, model: SegmentationModel, progress: bool) -> ShardRecord:
    size = image_size(cfg, model)
    images_set = run_images(cfg, size)
    check_classes(model_classes(model, size, cfg.backbone), images_set.labels, cfg.backbone)
    total = images_set.select(cfg.num_images)
    indices = list(shard_ranges(total, cfg.batch)[shard])
    sources = target_sources(indices, total, cfg.target_scheme, cfg.target_index)
    loaded = images_set.load(indices)
    device = torch.device(cfg.device)
    set_key = ImageSetKey(cfg.images, size, cfg.resize, cfg.seed, cfg.input_jitter)
    loaded.images = [jittered(x, cfg.input_jitter, i) for i, x in zip(indices, loaded.images)]
    clean = {i: clean_prediction(cfg.model_key, set_key, i, cfg.numerics).long() for i in {*indices, *sources}}
    images = [x.to(device) for x in loaded.images]
    if cfg.target_source == "truth":  # the target image may lie in another shard
        masks = {s: images_set.load([s]).truth[0].to(device) for s in set(sources)}  # type: ignore[index]
    else:
        masks = {s: clean[s] for s in set(sources)}
    targets = [
        scheme_target(_resize_mask(masks[s], images[p].shape[1:]), cfg.target_scheme, images_set.labels)
        for p, s in enumerate(sources)
    ]
    truth = None if loaded.truth is None else [t.to(device) for t in loaded.truth]
    params = cfg.attack_kwargs()
    if "generator" in typing.get_type_hints(cfg.spec.fn):
        params["generator"] = torch.Generator().manual_seed(cfg.seed * 1_000_003 + shard)
    parts, seconds, passes = [], 0.0, 0
    for group in _groups(images):
        x, t = torch.stack([images[i] for i in group]), torch.stack([targets[i] for i in group])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            warm_up(model, cfg.spec, x, t, params)
            started = time.perf_counter()
            result = cfg.spec(model, x, t, steps=cfg.steps, progress=progress, **params)
            seconds += time.perf_counter() - started
        passes += max(result.params["iterations"])  # fewer than steps once every sample has stopped
        parts.append(_Part(group, x, t, result))
    return _measure(
        cfg, shard, indices, loaded, [clean[i] for i in indices], targets, truth, parts, seconds, passes, model
    )


class _Part(typing.NamedTuple):
    """One same-shape group of a shard's images and what the attack made of it."""

    group: range
    images: torch.Tensor
    targets: torch.Tensor
    result: AttackResult


def _measure(
    cfg: RunConfig,
    shard: int,
    indices: list[int],
    loaded: Loaded,
    clean: list[torch.Tensor],
    targets: list[torch.Tensor],
    truth: list[torch.Tensor] | None,
    parts: list[_Part],
    seconds: float,
    passes: int,
    model: SegmentationModel,
) -> ShardRecord:
    """Every reading of a shard's attacked images, their confusion counts, histories and saved images."""
    metrics: dict[str, list[torch.Tensor]] = {}
    conf: dict[str, list[torch.Tensor]] = {}
    void: dict[str, list[torch.Tensor]] = {}
    history: dict[str, list[torch.Tensor]] = {}
    iterations: list[int] = []
    adv_all: list[torch.Tensor] = []
    adv_pred_all: list[torch.Tensor] = []
    n = cfg.labels.num_classes  # the model's too: RunConfig and _run_shard refuse a mismatch
    for part in parts:
        result = part.result
        clean_pred = torch.stack([clean[i] for i in part.group])
        refs = {"original": clean_pred, "target": part.targets}
        if truth is not None:
            refs["truth"] = torch.stack([truth[i] for i in part.group])
        values = attack_metrics(clean_pred, result.pred, part.targets, part.images, result.adv, n)
        if truth is not None:
            values.update(
                iou_truth=mean_iou(result.pred, refs["truth"], num_classes=n),
                acc_truth=pixel_accuracy(result.pred, refs["truth"]),
                clean_iou_truth=mean_iou(clean_pred, refs["truth"], num_classes=n),
            )
        for name, value in values.items():
            metrics.setdefault(name, []).append(value.cpu())
        for name, ref in refs.items():
            conf.setdefault(name, []).append(confusion_matrix(result.pred, ref, n).int().cpu())
            void.setdefault(name, []).append(void_prediction_counts(result.pred, ref, n).int().cpu())
        if truth is not None:
            conf.setdefault("clean_truth", []).append(confusion_matrix(clean_pred, refs["truth"], n).int().cpu())
        for name, value in result.history.items():
            history.setdefault(name, []).append(value.float().cpu())
        iterations += result.params["iterations"]
        adv_all += list(result.adv.cpu())
        adv_pred_all += list(result.pred.cpu())
    keep = [p for p, i in enumerate(indices) if i < cfg.save_images]
    saved = SavedImages(
        index=[indices[p] for p in keep],
        images=[loaded.images[p] for p in keep],
        adv=[adv_all[p] for p in keep],
        clean_pred=[clean[p].cpu() for p in keep],
        adv_pred=[adv_pred_all[p] for p in keep],
        targets=[targets[p].cpu() for p in keep],
        truth=[truth[p].cpu() for p in keep] if truth is not None else None,
    )
    attack_params = {k: v for k, v in parts[0].result.params.items() if k != "iterations"}
    return ShardRecord(
        config_hash=cfg.digest(),
        shard=shard,
        indices=indices,
        size=image_size(cfg, model),
        names=loaded.names,
        notes=loaded.notes,
        sizes=[list(x.shape[1:]) for x in loaded.images],
        metrics={k: torch.cat(v) for k, v in metrics.items()},
        conf={k: torch.cat(v) for k, v in conf.items()},
        void={k: torch.cat(v) for k, v in void.items()},
        pixels=torch.tensor([x.shape[1] * x.shape[2] for x in loaded.images], dtype=torch.float64),
        history={k: torch.cat(v, dim=1) for k, v in history.items()},
        iterations=iterations,
        seconds=seconds,
        passes=passes,
        attack_params=attack_params,
        weights=model.info,
        saved=saved,
    )


class RunJob(Job):
    """A backbone x attack run as a job: its units are its shards, its document ``results.json``."""

    notebook: ClassVar[str | None] = "attack.ipynb"
    document = "results.json"
    unit_folder = "shards"
    results_version = RESULTS_VERSION

    def __init__(self, cfg: RunConfig, path: str | os.PathLike, profile: str = "interactive") -> None:
        super().__init__(cfg.name, path, cfg.digest())
        self.cfg, self.profile = cfg, profile

    def list_units(self) -> list[str]:
        return [f"{k:05d}" for k in range(len(shard_ranges(count_images(self.cfg), self.cfg.batch)))]

    def model_specs(self) -> tuple[str, ...]:
        return (self.cfg.backbone,)

    def prepare_worker(self) -> None:
        import_backends(self.model_specs())

    def prepare(self) -> None:
        check_model(self.cfg)
        cached_model(self.cfg.model_key)

    def compute(self, unit: str) -> ShardRecord:
        return run_shard(self.cfg, int(unit))

    def decode(self, stored: dict[str, Any]) -> ShardRecord:
        return ShardRecord.from_dict(stored)

    def write_outputs(self, records: list[ShardRecord], staging: Path) -> None:
        skipped = image_set(self.cfg.images, max(self.cfg.size, MIN_SIDE), self.cfg.resize, self.cfg.seed).skipped
        write_run(*assemble(self.cfg, records, skipped), staging, self.cfg.labels)

    def notebook_parameters(self) -> dict[str, Any]:
        return {**asdict(self.cfg), "out_dir": str(self.path), "profile": self.profile, "compute": False}


class RepeatJob(RunJob):
    """A run repeated under other numerics for the report's stability columns (no notebook); its name
    is its folder's, ``BACKBONE-ATTACK-VARIANT``."""

    notebook = None

    def __init__(self, cfg: RunConfig, path: str | os.PathLike) -> None:
        super().__init__(cfg, path)
        self.name = self.path.name

    def notebook_parameters(self) -> dict[str, Any]:
        return {}


def run(cfg: RunConfig, out_dir: str | os.PathLike, progress: bool = True) -> tuple[Results, SavedImages]:
    """Run ``cfg`` in this process into ``out_dir``: the shards not yet on disk, then the assembled
    results (finished results for the same configuration are read, not recomputed)."""
    job = RunJob(cfg, out_dir)
    job.run_here(progress)
    return read_run(job.path, cfg)
