"""The studies a reviewer asks for, on the same images and budget for every attack, in cells.

- attack comparison: every registered attack on every backbone at one L-inf budget;
- security curves: targeted success and IoU to target versus epsilon;
- transferability: adversarial images of one backbone evaluated on the others;
- per-class difficulty: which target classes are hardest to impose.

The work is split into cells (:func:`study_cells`): a ``compare`` cell attacks one shard of the
images with one attack on one backbone (and measures transfer and difficulty from the same
images), a ``curve`` cell one shard at one epsilon. A cell is a pure function of the settings and
its name (:func:`run_cell`), so the grid runs cells as Dask tasks and a restarted study redoes only
missing cells. Functions return plain rows (per image where it matters) for the report to
aggregate with intervals; nothing here re-implements an attack or a metric.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .attacks import ATTACKS, PAPER_BETA, PAPER_TAU
from .classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from .data import MIN_SIDE, image_set, target_sources
from .metrics import confusion_matrix, dataset_scores, mean_iou, perturbation_norm, pixel_accuracy, predict_classes
from .models import BACKBONES, WEIGHT_SOURCES
from .params import ParameterError, coerce
from .runner import cached_model, clean_prediction, shard_ranges, warm_up
from .store import atomic_write_text, claim, json_matches, locked, replace_folder

COMPARED = ("pgd", "segpgd", "cospgd", "dag", "asma")
LEVELS: dict[str, dict[str, Any]] = {
    "default": {"steps": 20, "curve_steps": 10, "curve_images": 8,
                "eps_values": [2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255]},
    "full": {"steps": 50, "curve_steps": 50, "curve_images": 0,
             "eps_values": [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255]},
}
STUDIES_VERSION = 2


@dataclass
class StudyConfig:
    """The studies' settings: one image set and budget for every attack and backbone (checked and
    converted on construction, like :class:`~segattack.runner.RunConfig`)."""

    weights: str = "embedded"
    images: str = "scenes"
    num_images: int = 16
    size: int = 96
    batch: int = 4
    steps: int = 20
    eps: float = 8 / 255
    eps_values: list[float] = field(default_factory=lambda: list(LEVELS["default"]["eps_values"]))
    curve_images: int = 8  # the security curves use the first this many images (0: all)
    curve_steps: int = 10
    seed: int = 0
    device: str = "cpu"
    backbones: list[str] = field(default_factory=lambda: list(BACKBONES))

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(StudyConfig)
        for f in fields(self):
            setattr(self, f.name, coerce(f"studies {f.name}", getattr(self, f.name), hints[f.name]))
        for name in ("num_images", "batch", "steps", "curve_steps"):
            if getattr(self, name) < 1:
                raise ParameterError(f"studies {name} must be >= 1, got {getattr(self, name)}")
        if self.size < MIN_SIDE or self.curve_images < 0 or self.seed < 0:
            raise ParameterError(f"studies size must be >= {MIN_SIDE}, curve_images and seed >= 0")
        if not (self.eps > 0 and self.eps_values and all(e > 0 for e in self.eps_values)):
            raise ParameterError("studies eps and eps_values must be > 0")
        if self.weights not in WEIGHT_SOURCES and not (os.sep in self.weights or self.weights.endswith(".pt")):
            raise ParameterError(f"unknown studies weights {self.weights!r}")
        unknown = [b for b in self.backbones if b not in BACKBONES] or (not self.backbones and ["none"])
        if unknown:
            raise ParameterError(f"unknown studies backbone {unknown[0]!r}; choose from {', '.join(BACKBONES)}")

    @property
    def total(self) -> int:
        return image_set(self.images, self.size, "crop", self.seed).select(self.num_images)

    @property
    def curve_total(self) -> int:
        return min(self.curve_images or self.total, self.total)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def model_key(self, backbone: str) -> tuple[str, str, str, bool, bool]:
        """:func:`~segattack.runner.cached_model`'s arguments for ``backbone`` (NHWC, folded BN)."""
        return backbone, self.weights, self.device, True, True


def budget_params(attack: str, backbone: str, eps: float, steps: int) -> dict[str, Any]:
    """Hyperparameters giving ``attack`` the L-inf budget ``eps`` ([0,1] pixels) over ``steps``.

    PGD/SegPGD/CosPGD project onto the ball; ASMA keeps the paper's beta/tau and gets the ball as
    its optional bound; DAG (unbounded by design) takes steps of L-inf size eps/4 and is reported
    with the norms it reaches.
    """
    if attack == "pgd":
        return {"mode": "linf", "eps": eps, "steps": steps}
    if attack in ("segpgd", "cospgd"):
        return {"eps": eps, "steps": steps}
    if attack == "asma":
        return {"beta": PAPER_BETA.get(backbone, 1e-4), "tau": PAPER_TAU, "eps": eps, "steps": steps}
    if attack == "dag":
        return {"gamma": eps / 4, "steps": steps}
    raise ValueError(f"no budget rule for attack {attack!r}")


def _rows(attack: str, backbone: str, clean: torch.Tensor, adv: torch.Tensor, pred: torch.Tensor,
          targets: torch.Tensor, clean_pred: torch.Tensor, index: list[int] | None = None,
          **extra: Any) -> list[dict[str, Any]]:
    per_image = {
        "success": pixel_accuracy(pred, targets), "iou_target": mean_iou(pred, targets),
        "acc_original": pixel_accuracy(pred, clean_pred), "iou_original": mean_iou(pred, clean_pred),
        "l2": perturbation_norm(adv, clean, 2), "linf": perturbation_norm(adv, clean, float("inf")),
    }
    index = index or list(range(len(clean)))
    return [{"attack": attack, "backbone": backbone, "image": index[i], **extra,
             **{k: float(v[i]) for k, v in per_image.items()}} for i in range(len(clean))]


def transfer_matrix(source: str, advs: dict[str, torch.Tensor], images: torch.Tensor, target_model: nn.Module,
                    target: str, targets: torch.Tensor, index: list[int] | None = None,
                    with_clean: bool = True) -> list[dict[str, Any]]:
    """Adversarial images crafted on ``source`` evaluated on ``target``: per-image success and
    IoU to target, against the same targets, beside the clean images' scores (``with_clean``)."""
    rows = []
    index = index or list(range(len(images)))
    with torch.inference_mode():
        clean_pred = predict_classes(target_model(images))
        for attack, adv in advs.items():
            pred = predict_classes(target_model(adv))
            rows += [dict(r, source=source, evaluated_on=target)
                     for r in _rows(attack, target, images, adv, pred, targets, clean_pred, index)]
        base = pixel_accuracy(clean_pred, targets)
    if with_clean:
        rows += [{"attack": "none (clean)", "backbone": target, "image": index[i], "source": source,
                  "evaluated_on": target, "success": float(base[i])} for i in range(len(images))]
    return rows


def class_difficulty(attack: str, backbone: str, pred: torch.Tensor, targets: torch.Tensor,
                     clean_pred: torch.Tensor, index: list[int] | None = None) -> list[dict[str, Any]]:
    """Per image and target class: the fraction of its target pixels imposed, counting only pixels
    whose clean prediction was another class (so classes already present do not look easy)."""
    rows = []
    index = index or list(range(len(targets)))
    to_change = (targets != clean_pred) & (targets != IGNORE_INDEX)
    for i in range(len(targets)):
        for c in range(NUM_CLASSES):
            where = to_change[i] & (targets[i] == c)
            total = int(where.sum())
            if total:
                rows.append({"attack": attack, "backbone": backbone, "image": index[i], "class": VOC_CLASSES[c],
                             "pixels": total, "imposed": float((pred[i][where] == c).float().mean())})
    return rows


def study_cells(study: StudyConfig) -> list[str]:
    """The names of every cell of the studies: ``compare/BACKBONE/ATTACK/SHARD`` and
    ``curve/BACKBONE/ATTACK/EPS_INDEX/SHARD`` (DAG has no epsilon)."""
    compare = [f"compare/{b}/{a}/{k}" for b in study.backbones for a in COMPARED
               for k in range(len(shard_ranges(study.total, study.batch)))]
    curve = [f"curve/{b}/{a}/{e}/{k}" for b in study.backbones for a in COMPARED if a != "dag"
             for e in range(len(study.eps_values)) for k in range(len(shard_ranges(study.curve_total, study.batch)))]
    return compare + curve


def _shard_inputs(study: StudyConfig, backbone: str, indices: list[int], total: int) -> dict[str, Any]:
    """A shard's images, clean predictions (:func:`~segattack.runner.clean_prediction`: one image at
    a time, the same bits in every cell) and targets: image i takes the clean prediction of image
    i+1 of the whole set (``roll``)."""
    sources = target_sources(indices, total, "roll", 0)
    loaded = image_set(study.images, study.size, "crop", study.seed).load(indices)
    model_key = study.model_key(backbone)
    set_key = (study.images, study.size, "crop", study.seed)
    clean = {i: clean_prediction(model_key, set_key, i).long() for i in {*indices, *sources}}
    device = torch.device(study.device)
    truth = None if loaded.truth is None else torch.stack(loaded.truth).to(device)
    return {"images": torch.stack(loaded.images).to(device), "clean": torch.stack([clean[i] for i in indices]),
            "targets": torch.stack([clean[i] for i in sources]), "truth": truth, "model": cached_model(*model_key)}


def compare_attack(model: nn.Module, backbone: str, attack: str, images: torch.Tensor, targets: torch.Tensor,
                   clean_pred: torch.Tensor, eps: float, steps: int,
                   index: list[int] | None = None) -> tuple[list[dict[str, Any]], Any]:
    """One attack at the studies' budget: per-image rows (with iterations and the batch's wall time)
    and the attack's result (its images and prediction feed transfer and difficulty)."""
    budget = budget_params(attack, backbone, eps, steps)
    warm_up(model, attack, images, targets, {k: v for k, v in budget.items() if k != "steps"})
    started = time.perf_counter()
    res = ATTACKS[attack](model, images, targets, **budget)
    seconds = time.perf_counter() - started
    iterations = res.params.get("iterations", [steps] * len(images))
    rows = [dict(r, iterations=iterations[p], seconds=seconds)
            for p, r in enumerate(_rows(attack, backbone, images, res.adv, res.pred, targets, clean_pred, index))]
    return rows, res


def curve_rows(model: nn.Module, backbone: str, attack: str, images: torch.Tensor, targets: torch.Tensor,
               clean_pred: torch.Tensor, eps: float, steps: int,
               index: list[int] | None = None) -> list[dict[str, Any]]:
    """Per-image success and IoU to target of ``attack`` at budget ``eps`` (one point of a security curve)."""
    res = ATTACKS[attack](model, images, targets, **budget_params(attack, backbone, eps, steps))
    return _rows(attack, backbone, images, res.adv, res.pred, targets, clean_pred, index, eps=eps)


def run_cell(study: StudyConfig, cell: str) -> dict[str, Any]:
    """Compute one cell (see :func:`study_cells`); its rows are plain numbers for ``studies.json``."""
    kind, backbone, attack, *rest = cell.split("/")
    total = study.total if kind == "compare" else study.curve_total
    indices = list(shard_ranges(total, study.batch)[int(rest[-1])])
    inputs = _shard_inputs(study, backbone, indices, study.total)
    images, clean, targets, model = inputs["images"], inputs["clean"], inputs["targets"], inputs["model"]
    if kind == "curve":
        eps = study.eps_values[int(rest[0])]
        return {"cell": cell, "security": curve_rows(model, backbone, attack, images, targets, clean, eps,
                                                     study.curve_steps, indices)}
    rows, res = compare_attack(model, backbone, attack, images, targets, clean, study.eps, study.steps, indices)
    transfer = []
    for other in (b for b in study.backbones if b != backbone):
        other_model = cached_model(*study.model_key(other))
        transfer += transfer_matrix(backbone, {attack: res.adv}, images, other_model, other, targets, indices,
                                    with_clean=attack == COMPARED[0])
    truth = inputs["truth"]
    return {"cell": cell, "comparison": rows, "transfer": transfer,
            "difficulty": class_difficulty(attack, backbone, res.pred, targets, clean, indices),
            "success_history": res.history["success"].T.tolist(),
            "clean_conf": None if truth is None else confusion_matrix(clean, truth).sum(0).tolist(),
            "weights": model.info.as_dict()}


class StudyFolder:
    """The studies' folder: one JSON file per finished cell under ``cells/<settings hash>/``, then
    ``studies.json`` assembled from them, replacing the folder's previous content whole."""

    def __init__(self, path: str | os.PathLike, study: StudyConfig) -> None:
        self.path, self.study, self.digest = Path(path).expanduser().resolve(), study, study.digest()
        self.cell_dir = self.path / "cells" / self.digest

    def _file(self, cell: str) -> Path:
        return self.cell_dir / (cell.replace("/", "-") + ".json")

    def complete(self) -> bool:
        """True when the folder holds finished studies for exactly these settings."""
        return json_matches(self.path / "studies.json", settings_hash=self.digest, version=STUDIES_VERSION)

    def pending(self) -> list[str]:
        return [c for c in study_cells(self.study) if not self._file(c).is_file()]

    def write_cell(self, record: dict[str, Any]) -> None:
        claim(self.path)
        self.cell_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self._file(record["cell"]), json.dumps(record, allow_nan=False))

    def finish(self, seconds: float | None = None) -> dict[str, Any]:
        """Assemble every cell into ``studies.json`` and replace the folder with it whole."""
        cells = [json.loads(self._file(c).read_text()) for c in study_cells(self.study)]
        doc = assemble_studies(self.study, cells, self.digest, seconds)

        def build(staging: Path) -> None:
            atomic_write_text(staging / "studies.json", json.dumps(doc, indent=1, allow_nan=False))
            (staging / "cells").mkdir()
            os.replace(self.cell_dir, staging / "cells" / self.digest)

        replace_folder(self.path, build)
        return doc


def assemble_studies(study: StudyConfig, cells: list[dict[str, Any]], digest: str,
                     seconds: float | None = None) -> dict[str, Any]:
    """``studies.json`` from the cells: rows in cell order, per-attack wall time summed over shards."""
    comparison, security, transfer, difficulty, curves, weights, clean_conf = [], [], [], [], {}, {}, {}
    totals: dict[tuple[str, str], float] = {}
    compare = [c for c in cells if c["cell"].startswith("compare/")]
    for cell in compare:
        _, backbone, attack, _ = cell["cell"].split("/")
        totals[(backbone, attack)] = totals.get((backbone, attack), 0.0) + cell["comparison"][0]["seconds"]
    for cell in cells:
        security += cell.get("security", [])
        if "comparison" not in cell:
            continue
        _, backbone, attack, _ = cell["cell"].split("/")
        comparison += [dict(r, seconds=totals[(backbone, attack)]) for r in cell["comparison"]]
        transfer += cell["transfer"]
        difficulty += cell["difficulty"]
        curves.setdefault(backbone, {}).setdefault(attack, []).extend(cell["success_history"])
        weights[backbone] = cell["weights"]
        if attack == COMPARED[0] and cell["clean_conf"] is not None:
            clean_conf.setdefault(backbone, []).append(torch.tensor(cell["clean_conf"]))
    return {
        "version": STUDIES_VERSION, "settings_hash": digest,
        "params": {**asdict(study), "targets": "roll (image i -> prediction of image i+1)"},
        "weights": weights,
        "clean_iou_truth": {b: dataset_scores(torch.stack(clean_conf[b]))["miou"] if b in clean_conf else None
                            for b in study.backbones},
        "comparison": comparison, "security": security, "transfer": transfer, "difficulty": difficulty,
        # per backbone and attack: success per iteration, one list per image (transposed to (steps, images))
        "iteration_curves": {b: {a: [list(step) for step in zip(*hist)] for a, hist in per.items()}
                             for b, per in curves.items()},
        "seconds": seconds if seconds is not None else sum(totals.values()),
    }


def run_studies(study: StudyConfig, out_dir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Compute the missing cells in this process, assemble and save; return ``studies.json``'s content
    (finished studies for the same settings are read, not recomputed)."""
    folder = StudyFolder(out_dir, study)
    with locked(folder.path):
        if not folder.complete():
            started = time.perf_counter()
            for cell in tqdm(folder.pending(), desc="studies", unit="cell", disable=not progress):
                folder.write_cell(run_cell(study, cell))
            folder.finish(time.perf_counter() - started)
        return json.loads((folder.path / "studies.json").read_text())
