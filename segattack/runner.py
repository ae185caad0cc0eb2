"""One study run, in shards: load model and images, build targets, attack, measure, save.

A run attacks ``num_images`` images of an image set in shards of ``batch`` images (the attack's
batch: [5] attacks 4 at a time). A shard is a pure function of the run's configuration and its
index (:func:`run_shard`), so shards run in any order on any worker (the Dask grid) with the same
numbers, and a restarted run redoes only the shards that are not on disk. Targets are defined
over the whole set (:func:`segattack.data.target_sources`), so sharding never changes an image's
target. :func:`assemble` turns the shard records into the run's results; the CLI, the notebooks
and the grid all go through these functions, so every entry point reports the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
import typing
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import __version__
from .attacks import ATTACKS, PAPER_BETA, PAPER_TAU
from .classes import NUM_CLASSES, voc_palette
from .data import MIN_SIDE, RESIZES, image_set, target_sources
from .metrics import (attack_metrics, confusion_matrix, dataset_scores, finite_or_none, mean_iou, pixel_accuracy,
                      pooled_from_counts, predict_classes)
from .models import BACKBONES, WEIGHT_SOURCES, SegmentationModel, load_model, wrap_model
from .params import ParameterError, check_attack_params, coerce
from .store import atomic_save, atomic_write_text, claim, json_matches, locked, output_folder, replace_folder

RESULTS_VERSION = 3  # bumped when results.json gains or changes fields the report reads
TARGET_SCHEMES = ("single", "roll")


@dataclass
class RunConfig:
    """Everything that determines a run's numbers (hashed to skip finished runs and shards).

    Values are checked (and strings converted strictly) on construction, so a RunConfig that
    exists is valid: a bad parameter fails before any folder is touched."""

    backbone: str = "mobilenet_v3_large"
    attack: str = "pgd"
    weights: str = "auto"
    images: str = "scenes"
    num_images: int = 8  # 0: every image of a finite set (a folder, voc:, pairs:)
    size: int = 0  # 0: the embedded model's training size, else 520 (torchvision weights)
    resize: str = "crop"  # crop: centre square | shorter: shorter side to size (torchvision's transforms)
    batch: int = 4  # images per shard, attacked together ([5]'s batch of 4)
    steps: int = 50
    target_scheme: str = "single"
    target_index: int = 1
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # bf16 autocast for the attack's forward/backward passes (GPU path; CPU works too)
    channels_last: bool = True  # NHWC memory layout for the network (same numbers, faster)
    fold_bn: bool = True  # batch norms folded into the convolutions (same numbers, faster)
    save_images: int = 8  # adversarial tensors and PNGs are kept for the first this many images
    attack_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(RunConfig)
        for f in fields(self):
            setattr(self, f.name, coerce(f.name, getattr(self, f.name), hints[f.name]))
        _check_values(self)


def _check_values(cfg: RunConfig) -> None:
    for name, allowed in (("backbone", BACKBONES), ("attack", ATTACKS), ("resize", RESIZES),
                          ("target_scheme", TARGET_SCHEMES)):
        if getattr(cfg, name) not in allowed:
            raise ParameterError(f"unknown {name} {getattr(cfg, name)!r}; choose one of {', '.join(allowed)}")
    for name, low in (("num_images", 0), ("batch", 1), ("steps", 1), ("target_index", 0), ("seed", 0),
                      ("save_images", 0)):
        if getattr(cfg, name) < low:
            raise ParameterError(f"{name} must be >= {low}, got {getattr(cfg, name)}")
    if cfg.size and cfg.size < MIN_SIDE:
        raise ParameterError(f"size must be 0 (the weights' own) or >= {MIN_SIDE} px, got {cfg.size}")
    if cfg.seed >= 2**63:
        raise ParameterError(f"seed must be < 2**63, got {cfg.seed}")
    if not (cfg.weights in WEIGHT_SOURCES or os.sep in cfg.weights or cfg.weights.endswith((".pt", ".pth"))):
        raise ParameterError(f"unknown weights {cfg.weights!r}; use one of {', '.join(WEIGHT_SOURCES)} or a "
                             f"checkpoint path")
    try:
        torch.device(cfg.device)
    except RuntimeError:
        raise ParameterError(f"unknown device {cfg.device!r}; use cpu, cuda or cuda:N") from None
    cfg.attack_params = check_attack_params(cfg.attack, ATTACKS[cfg.attack], cfg.attack_params)
    _probe(cfg)


def _probe(cfg: RunConfig) -> None:
    """One step of the attack on a tiny dummy batch: the attack's own checks (eps > 0, known modes,
    ...) refuse a bad value here, before any model or image is loaded."""
    probe = wrap_model(torch.nn.Conv2d(3, NUM_CLASSES, 1), "probe")
    params = {**default_attack_params(cfg.attack, cfg.backbone), **cfg.attack_params}
    try:
        with torch.no_grad(), torch.enable_grad():
            ATTACKS[cfg.attack](probe, torch.full((1, 3, MIN_SIDE, MIN_SIDE), 0.5),
                                torch.zeros(1, MIN_SIDE, MIN_SIDE, dtype=torch.long), steps=1, **params)
    except (ValueError, TypeError) as exc:
        raise ParameterError(str(exc)) from None
    except ArithmeticError:  # diverging on a dummy model says nothing about the real one
        pass


def config_hash(cfg: RunConfig) -> str:
    """A stable hash of everything that determines a run's numbers."""
    blob = json.dumps(asdict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_attack_params(attack: str, backbone: str) -> dict[str, Any]:
    """The paper's section-5 hyperparameters for ``attack`` on ``backbone`` (the attack's own defaults
    for the attacks the paper does not use)."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    if attack == "asma":
        return {"beta": PAPER_BETA[backbone], "tau": PAPER_TAU}
    if attack == "pgd":
        return {"mode": "paper"}
    return {}


@lru_cache(maxsize=4)
def cached_model(backbone: str, weights: str, device: str, channels_last: bool, fold_bn: bool) -> SegmentationModel:
    """A loaded model, kept per process: every shard a worker runs reuses it."""
    return load_model(backbone, weights, device=device, channels_last=channels_last, fold_bn=fold_bn)


def model_for(cfg: RunConfig) -> SegmentationModel:
    return cached_model(*model_key(cfg))


def model_key(cfg: RunConfig) -> tuple[str, str, str, bool, bool]:
    return cfg.backbone, cfg.weights, cfg.device, cfg.channels_last, cfg.fold_bn


@lru_cache(maxsize=256)
def clean_prediction(model: tuple[str, str, str, bool, bool], images: tuple[str, int, str, int],
                     index: int) -> torch.Tensor:
    """The clean prediction (H,W) of image ``index`` of the set ``images`` = (source, size, resize,
    seed) by the model ``model`` (:func:`cached_model`'s arguments), made alone so that it is the
    same bits in every shard; kept per process, as the shards and cells a worker runs share images."""
    x = image_set(*images).load([index]).images[0]
    net = cached_model(*model)  # loaded outside inference mode: the attacks differentiate through it
    with torch.inference_mode():
        return predict_classes(net(x[None].to(model[2])))[0].to(torch.uint8)


def image_size(cfg: RunConfig, model: SegmentationModel) -> int:
    """The side the images are resized to: the run's ``size``, else the weights' own."""
    return cfg.size or int(model.info.extra.get("image_size", 520))


def count_images(cfg: RunConfig) -> int:
    """How many images the run attacks; the set is listed, every file's header checked (not decoded)
    and the target scheme checked against the count."""
    images = image_set(cfg.images, max(cfg.size, MIN_SIDE), cfg.resize, cfg.seed)
    count = images.select(cfg.num_images)
    images.check(count)
    target_sources([], count, cfg.target_scheme, cfg.target_index)
    return count


def shard_ranges(total: int, batch: int) -> list[range]:
    return [range(start, min(start + batch, total)) for start in range(0, total, batch)]


def attacked_images(count: int, scheme: str, target_index: int) -> list[int]:
    """The images whose numbers Table 1 averages: under the ``single`` scheme the target image
    attacks its own prediction (ASMA leaves it untouched, PGD perturbs it), so it is left out."""
    return [i for i in range(count) if not (scheme == "single" and i == target_index)] or list(range(count))


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


def run_shard(cfg: RunConfig, shard: int, model: SegmentationModel | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Attack shard ``shard`` of the run and measure it: a record of plain tensors and numbers.

    Clean predictions are made one image at a time (:func:`clean_prediction`), so an image's
    prediction (and so every target taken from it) is the same bits in every shard and on every
    worker."""
    model = model or model_for(cfg)
    size = image_size(cfg, model)
    images_set = image_set(cfg.images, size, cfg.resize, cfg.seed)
    total = images_set.select(cfg.num_images)
    indices = list(shard_ranges(total, cfg.batch)[shard])
    sources = target_sources(indices, total, cfg.target_scheme, cfg.target_index)
    loaded = images_set.load(indices)
    device = torch.device(cfg.device)
    set_key = (cfg.images, size, cfg.resize, cfg.seed)
    clean = {i: clean_prediction(model_key(cfg), set_key, i).long() for i in {*indices, *sources}}
    images = [x.to(device) for x in loaded.images]
    targets = [_resize_mask(clean[s], images[p].shape[1:]) for p, s in enumerate(sources)]
    truth = None if loaded.truth is None else [t.to(device) for t in loaded.truth]
    params = {**default_attack_params(cfg.attack, cfg.backbone), **cfg.attack_params}
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + shard)
    if "generator" in typing.get_type_hints(ATTACKS[cfg.attack]):
        params["generator"] = generator
    parts, seconds, passes = [], 0.0, 0
    for group in _groups(images):
        x, t = torch.stack([images[i] for i in group]), torch.stack([targets[i] for i in group])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            warm_up(model, cfg.attack, x, t, params)
            started = time.perf_counter()
            result = ATTACKS[cfg.attack](model, x, t, steps=cfg.steps, progress=progress, **params)
            seconds += time.perf_counter() - started
        passes += max(result.params["iterations"])  # fewer than steps once every sample has stopped
        parts.append((group, x, t, result))
    return _shard_record(cfg, shard, indices, loaded, [clean[i] for i in indices], targets, truth, parts, seconds,
                         passes, model)


_WARM: set[tuple[int, tuple[int, ...], bool]] = set()  # (model, input shape, autocast) this process has run


def warm_up(model: SegmentationModel, attack: str, images: torch.Tensor, targets: torch.Tensor,
            params: dict[str, Any]) -> None:
    """One untimed iteration the first time this process runs ``model`` on this input shape: the
    first calls on a shape pay one-off kernel set-up (seconds on a CPU) that would otherwise be
    timed as attack iterations. It draws from a generator of its own, never the run's."""
    key = (id(model), tuple(images.shape), torch.is_autocast_enabled(images.device.type))
    if key not in _WARM:
        own = {**params, "generator": torch.Generator()} if "generator" in params else params
        ATTACKS[attack](model, images, targets, steps=1, **own)
        _WARM.add(key)


def _shard_record(cfg: RunConfig, shard: int, indices: list[int], loaded: Any, clean: list[torch.Tensor],
                  targets: list[torch.Tensor], truth: list[torch.Tensor] | None, parts: list[Any], seconds: float,
                  passes: int, model: SegmentationModel) -> dict[str, Any]:
    metrics: dict[str, list[torch.Tensor]] = {}
    conf: dict[str, list[torch.Tensor]] = {}
    history: dict[str, list[torch.Tensor]] = {}
    iterations, adv_all, adv_pred_all = [], [], []
    for group, x, t, result in parts:
        clean_pred = torch.stack([clean[i] for i in group])
        refs = {"original": clean_pred, "target": t}
        if truth is not None:
            refs["truth"] = torch.stack([truth[i] for i in group])
        values = attack_metrics(clean_pred, result.pred, t, x, result.adv)
        if truth is not None:
            values.update(iou_truth=mean_iou(result.pred, refs["truth"]),
                          acc_truth=pixel_accuracy(result.pred, refs["truth"]),
                          clean_iou_truth=mean_iou(clean_pred, refs["truth"]))
        for name, value in values.items():
            metrics.setdefault(name, []).append(value.cpu())
        for name, ref in refs.items():
            conf.setdefault(name, []).append(confusion_matrix(result.pred, ref).int().cpu())
        if truth is not None:
            conf.setdefault("clean_truth", []).append(confusion_matrix(clean_pred, refs["truth"]).int().cpu())
        for name, value in result.history.items():
            history.setdefault(name, []).append(value.float().cpu())
        iterations += result.params["iterations"]
        adv_all += list(result.adv.cpu())
        adv_pred_all += list(result.pred.cpu())
    keep = [p for p, i in enumerate(indices) if i < cfg.save_images]
    saved = {"index": [indices[p] for p in keep], "images": [loaded.images[p] for p in keep],
             "adv": [adv_all[p] for p in keep], "clean_pred": [clean[p].cpu() for p in keep],
             "adv_pred": [adv_pred_all[p] for p in keep], "targets": [targets[p].cpu() for p in keep],
             "truth": [truth[p].cpu() for p in keep] if truth is not None else None}
    attack_params = {k: v for k, v in parts[0][3].params.items() if k != "iterations"}
    return {
        "config_hash": config_hash(cfg), "shard": shard, "indices": indices, "size": image_size(cfg, model),
        "names": loaded.names, "notes": loaded.notes, "sizes": [list(x.shape[1:]) for x in loaded.images],
        "metrics": {k: torch.cat(v) for k, v in metrics.items()}, "conf": {k: torch.cat(v) for k, v in conf.items()},
        "pixels": torch.tensor([x.shape[1] * x.shape[2] for x in loaded.images], dtype=torch.float64),
        "history": {k: torch.cat(v, dim=1) for k, v in history.items()}, "iterations": iterations,
        "seconds": seconds, "passes": passes, "attack_params": attack_params, "weights": model.info.as_dict(),
        "saved": saved,
    }


def summarize(metrics: dict[str, torch.Tensor], rows: list[int] | None = None) -> dict[str, dict[str, float | None]]:
    """Mean and 95% normal interval half-width over images (``rows``: a subset) for each metric;
    the half-width is None for one image."""
    out = {}
    for name, values in metrics.items():
        v = values.double() if rows is None else values.double()[rows]
        half = 1.96 * v.std(unbiased=True).item() / len(v) ** 0.5 if len(v) > 1 else float("nan")
        out[name] = {"mean": finite_or_none(v.mean().item()), "ci95": finite_or_none(half)}
    return out


def _curve(history: torch.Tensor, rows: list[int]) -> dict[str, list[float | None]]:
    """Per iteration: mean and 95% normal half-width over ``rows`` of a (steps, images) history."""
    values = history.double()[:, rows]
    half = 1.96 * values.std(1, unbiased=True) / math.sqrt(len(rows)) if len(rows) > 1 else values[:, 0] * math.nan
    return {"mean": [finite_or_none(v) for v in values.mean(1).tolist()],
            "ci95": [finite_or_none(v) for v in half.tolist()]}


def assemble(cfg: RunConfig, records: list[dict[str, Any]], skipped: list[str] | None = None) -> tuple[dict, dict]:
    """The run's results document (``results.json``) and its saved tensors, from its shard records."""
    records = sorted(records, key=lambda r: r["shard"])
    total = sum(len(r["indices"]) for r in records)
    metrics = {k: torch.cat([r["metrics"][k] for r in records]) for k in records[0]["metrics"]}
    conf = {k: torch.cat([r["conf"][k] for r in records]) for k in records[0]["conf"]}
    pixels = torch.cat([r["pixels"] for r in records])
    history = {k: torch.cat([r["history"][k] for r in records], dim=1) for k in records[0]["history"]}
    attacked = attacked_images(total, cfg.target_scheme, cfg.target_index)
    seconds, passes = sum(r["seconds"] for r in records), sum(r["passes"] for r in records)
    pooled = {scope: {ref: pooled_from_counts(counts[rows], pixels[rows]) for ref, counts in conf.items()
                      if ref != "clean_truth"}
              for scope, rows in (("attacked", attacked), ("all", list(range(total))))}
    clean_truth = None
    if "clean_truth" in conf:
        scores = dataset_scores(conf["clean_truth"])
        clean_truth = {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"], "images": total,
                       "resize": cfg.resize, "class_iou": [finite_or_none(v) for v in scores["class_iou"]]}
    doc = {
        "config": asdict(cfg), "config_hash": config_hash(cfg), "results_version": RESULTS_VERSION,
        "image_size": records[0]["size"],
        "names": [n for r in records for n in r["names"]], "notes": [n for r in records for n in r["notes"]],
        "skipped": skipped or [], "weights": records[0]["weights"], "attack_params": records[0]["attack_params"],
        "iterations": [i for r in records for i in r["iterations"]], "shards": len(records),
        "seconds": seconds, "seconds_per_iteration": seconds / max(passes, 1),
        "attacked": attacked, "summary": summarize(metrics, attacked), "summary_all": summarize(metrics),
        "pooled": pooled, "clean_truth": clean_truth,
        "per_image": {k: [finite_or_none(x) for x in v.tolist()] for k, v in metrics.items()},
        "history": {k: _curve(v, attacked) for k, v in history.items()},
        "environment": environment(cfg.device),
    }
    saved = {k: [x for r in records for x in r["saved"][k]] for k in ("index", "images", "adv", "clean_pred",
                                                                      "adv_pred", "targets")}
    saved["truth"] = None if records[0]["saved"]["truth"] is None else [
        x for r in records for x in r["saved"]["truth"]]
    return doc, saved


def environment(device: str) -> dict[str, str]:
    return {"segattack": __version__, "torch": str(torch.__version__), "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "device": device if device != "cpu" else f"cpu ({os.cpu_count()} cores)"}


class RunFolder:
    """A run's folder: shard records under ``shards/<config hash>/`` as they finish, then the
    assembled results, replacing the folder's previous content whole (:func:`store.replace_folder`)."""

    def __init__(self, path: str | os.PathLike, cfg: RunConfig) -> None:
        self.path, self.cfg, self.digest = Path(path).expanduser().resolve(), cfg, config_hash(cfg)

    @property
    def shard_dir(self) -> Path:
        return self.path / "shards" / self.digest

    def complete(self) -> bool:
        """True when the folder holds finished results for exactly this configuration."""
        return json_matches(self.path / "results.json", config_hash=self.digest, results_version=RESULTS_VERSION)

    def pending(self, total: int) -> list[int]:
        """The shards without a record on disk."""
        return [k for k in range(len(shard_ranges(total, self.cfg.batch)))
                if not (self.shard_dir / f"{k:05d}.pt").is_file()]

    def write_shard(self, record: dict[str, Any]) -> None:
        claim(self.path)
        atomic_save(record, self.shard_dir / f"{record['shard']:05d}.pt")

    def records(self) -> list[dict[str, Any]]:
        return [torch.load(p, map_location="cpu", weights_only=True) for p in sorted(self.shard_dir.glob("*.pt"))]

    def finish(self, skipped: list[str] | None = None) -> dict[str, Any]:
        """Assemble the shard records into results and replace the folder with them whole."""
        doc, saved = assemble(self.cfg, self.records(), skipped)

        def build(staging: Path) -> None:
            _write_results(doc, saved, staging)
            (staging / "shards").mkdir()
            os.replace(self.shard_dir, staging / "shards" / self.digest)

        replace_folder(self.path, build)
        return doc

    def results(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The finished results document and saved tensors."""
        doc = json.loads((self.path / "results.json").read_text())
        return doc, torch.load(self.path / "tensors.pt", map_location="cpu", weights_only=True)


def _write_results(doc: dict[str, Any], saved: dict[str, Any], folder: Path) -> None:
    """PNGs of the saved images (clamped to [0,1] for display), tensors, then results.json."""
    palette = voc_palette()
    for i, idx in enumerate(saved["index"]):
        adv = (saved["adv"][i].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(adv).save(folder / f"{idx:02d}_adv.png")
        Image.fromarray(palette[saved["clean_pred"][i].numpy()]).save(folder / f"{idx:02d}_pred_clean.png")
        Image.fromarray(palette[saved["adv_pred"][i].numpy()]).save(folder / f"{idx:02d}_pred_adv.png")
    torch.save(saved, folder / "tensors.pt")
    atomic_write_text(folder / "results.json", json.dumps(doc, indent=1, allow_nan=False))


def run(cfg: RunConfig, out_dir: str | os.PathLike, progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``cfg`` in this process into ``out_dir``: the shards not yet on disk, then the assembled
    results (already finished results for the same configuration are read, not recomputed)."""
    folder = RunFolder(output_folder(out_dir), cfg)
    with locked(folder.path):
        if not folder.complete():
            total = count_images(cfg)
            pending = folder.pending(total)
            model = model_for(cfg) if pending else None
            for shard in tqdm(pending, desc=f"{cfg.backbone} {cfg.attack}", unit="shard", disable=not progress):
                folder.write_shard(run_shard(cfg, shard, model))
            folder.finish(image_set(cfg.images, max(cfg.size, MIN_SIDE), cfg.resize, cfg.seed).skipped)
        return folder.results()
