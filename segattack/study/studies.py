"""The studies a reviewer asks for, on the same images and budget for every attack, in cells.

- attack comparison: every registered attack on every backbone at one L-inf budget;
- security curves: targeted success and IoU to target versus epsilon;
- transferability: adversarial images of one backbone evaluated on the others;
- per-class difficulty: which target classes are hardest to impose;
- the budget axis: per image, the smallest perturbation at which each attack breaks it
  (:mod:`segattack.evaluation.budget`), targeted (the paper's scheme: every image toward the target image's
  prediction) and untargeted.

The work is split into cells (:func:`study_cells`): a ``compare`` cell attacks one shard of the
images with one attack on one backbone (and measures transfer and difficulty from the same
images), a ``curve`` cell one shard at one epsilon, a ``budget`` cell one shard of
``StudyConfig.budget_indices``, one attack and one mode (targeted or untargeted). A cell is a pure
function of the settings and its name (:func:`run_cell`), so the grid runs cells as Dask tasks and
a restarted study redoes only missing cells. Functions return plain rows (per image where it matters) for the report to
aggregate with intervals; nothing here re-implements an attack or a metric.
"""

from __future__ import annotations

import inspect
import os
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from segattack.attacks import ATTACKS, AttackResult
from segattack.data.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from segattack.data.sets import MIN_SIDE, image_set, resolve_source
from segattack.data.targets import attacked_images, target_sources
from segattack.engine.jobs import Job
from segattack.engine.store import atomic_write_text
from segattack.evaluation.budget import ROUNDS, smallest_budget
from segattack.metrics import (
    changed_share,
    changed_success,
    confusion_matrix,
    dataset_scores,
    finite_or_none,
    mean_iou,
    perturbation_norm,
    pixel_accuracy,
    predict_classes,
)
from segattack.models.backbones import BACKBONES, resolve_weights
from segattack.models.wrapper import SegmentationModel, WeightsInfo
from segattack.study.cache import ImageSetKey, cached_model, clean_prediction, warm_up
from segattack.study.config import ModelKey, RunConfig, check_bounds, coerce_fields, digest
from segattack.study.inputs import InputFile, fingerprint, weights_files
from segattack.study.numerics import DEFAULT_DETERMINISTIC, DEFAULT_THREADS, Numerics, check_threads, numerics
from segattack.study.records import RESULTS_VERSION, BudgetRow, CellRecord, RecordError, Row, StudiesResults
from segattack.study.runner import shard_ranges
from segattack.util.params import ParameterError

BUDGET_MODES = ("targeted", "untargeted")
PAPER_TARGET = RunConfig.target_index  # the paper's scheme: every image toward this image's prediction
LEVELS: dict[str, dict[str, Any]] = {
    "default": {
        "steps": 20,
        "curve_steps": 10,
        "curve_images": 8,
        "eps_values": [2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255],
        "budget_images": 8,
        "budget_steps": 10,
        "budget_attacks": list(ATTACKS.in_paper()),
        "budget_modes": ["targeted"],
    },
    "full": {
        "steps": 50,
        "curve_steps": 50,
        "curve_images": 0,
        "eps_values": [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255],
        "budget_images": 16,
        "budget_steps": 20,
        "budget_attacks": [*(s.name for s in ATTACKS.compared()), *ATTACKS.minimal_norm()],
        "budget_modes": list(BUDGET_MODES),
    },
}


@dataclass
class StudyConfig:
    """The studies' settings: one image set and budget for every attack and backbone (checked and
    converted on construction, like :class:`~segattack.study.runner.RunConfig`)."""

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
    threads: int = DEFAULT_THREADS  # intra-op threads (float sums depend on them), as a run's
    deterministic: bool = DEFAULT_DETERMINISTIC
    backbones: list[str] = field(default_factory=lambda: list(BACKBONES))
    # the budget axis: these attacks in these modes on the first budget_images images other than the
    # paper's target image (0: off); a searched attack runs rounds of budget_steps iterations at each
    # radius until the image breaks or its success stops moving (at most budget_rounds); a measured
    # or minimal-norm attack one run of budget_run_steps, 0: its registered iterations under
    # budget_plan (ASMA's Table 1 budget: 300 default, 1000 paper); an image broken at
    # budget_threshold of its pixels; radii searched up to budget_eps_max
    budget_attacks: list[str] = field(default_factory=lambda: list(LEVELS["default"]["budget_attacks"]))
    budget_modes: list[str] = field(default_factory=lambda: list(LEVELS["default"]["budget_modes"]))
    budget_images: int = LEVELS["default"]["budget_images"]
    budget_steps: int = LEVELS["default"]["budget_steps"]
    budget_rounds: int = ROUNDS
    budget_run_steps: int = 0
    budget_plan: Literal["default", "paper"] = "default"
    budget_threshold: float = 0.5
    budget_eps_max: float = 128 / 255  # FMN breaks the embedded models' targeted images at 40-60/255

    def __post_init__(self) -> None:
        coerce_fields(self, "studies ")
        try:
            self.budget_attacks = [ATTACKS.check(a).name for a in self.budget_attacks]
        except ValueError as exc:
            raise ParameterError(f"studies budget_attacks: {exc}") from None
        if self.budget_images < 0 or min(self.budget_steps, self.budget_rounds) < 1 or self.budget_run_steps < 0:
            raise ParameterError(
                "studies budget_images, budget_run_steps must be >= 0, budget_steps, budget_rounds >= 1"
            )
        if not 0 < self.budget_threshold <= 1 or not set(self.budget_modes) <= set(BUDGET_MODES):
            raise ParameterError(f"studies budget_threshold must be in (0, 1], budget_modes in {BUDGET_MODES}")
        if not self.budget_eps_max > 0:
            raise ParameterError(f"studies budget_eps_max must be > 0, got {self.budget_eps_max}")
        for name in ("num_images", "batch", "steps", "curve_steps"):
            if getattr(self, name) < 1:
                raise ParameterError(f"studies {name} must be >= 1, got {getattr(self, name)}")
        if self.size < MIN_SIDE or self.curve_images < 0 or self.seed < 0:
            raise ParameterError(f"studies size must be >= {MIN_SIDE}, curve_images and seed >= 0")
        check_bounds("studies ", self.size, self.images, self.num_images)
        if not (self.eps > 0 and self.eps_values and all(e > 0 for e in self.eps_values)):
            raise ParameterError("studies eps and eps_values must be > 0")
        try:  # paths are made absolute before hashing and before any worker sees them
            self.weights = resolve_weights(self.weights, "studies weights")
            self.images = resolve_source(self.images)
            check_threads(self.threads)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        unknown = [b for b in self.backbones if b not in BACKBONES] or (not self.backbones and ["none"])
        if unknown:
            raise ParameterError(f"unknown studies backbone {unknown[0]!r}; choose from {', '.join(BACKBONES)}")

    @property
    def total(self) -> int:
        return image_set(self.images, self.size, "crop", self.seed).select(self.num_images)

    @property
    def curve_total(self) -> int:
        return min(self.curve_images or self.total, self.total)

    @property
    def budget_indices(self) -> list[int]:
        """The budget axis's images: the first ``budget_images`` other than the paper's target image."""
        return attacked_images(self.total, "single", PAPER_TARGET)[: self.budget_images] if self.budget_images else []

    def input_files(self, backbone: str | None = None) -> list[InputFile]:
        """The weights files of the studies' backbones (or of ``backbone``), by content: a replaced
        checkpoint is another study (:mod:`segattack.inputs`); read once per config object."""
        key = (tuple(self.backbones), self.weights)
        cached = self.__dict__.get("_inputs")
        if cached is None or cached[0] != key:
            cached = (key, {b: fingerprint(weights_files(b, self.weights)) for b in self.backbones})
            self.__dict__["_inputs"] = cached
        files = cached[1]
        return list(files[backbone]) if backbone is not None else [f for b in self.backbones for f in files[b]]

    def digest(self) -> str:
        return digest(self, self.input_files())

    @property
    def numerics(self) -> Numerics:
        return Numerics(self.threads, self.deterministic)

    def model_key(self, backbone: str) -> ModelKey:
        """The cache key of ``backbone``'s model (NHWC, folded BN)."""
        content = ",".join(f.sha256 for f in self.input_files(backbone)) if backbone in self.backbones else ""
        return ModelKey(backbone, self.weights, self.device, True, True, content=content)


def _rows(
    attack: str,
    backbone: str,
    clean: torch.Tensor,
    adv: torch.Tensor,
    pred: torch.Tensor,
    targets: torch.Tensor,
    clean_pred: torch.Tensor,
    index: list[int] | None = None,
    **extra: Any,
) -> list[Row]:
    per_image = {
        "success_changed": changed_success(pred, targets, clean_pred),
        "changed_share": changed_share(targets, clean_pred),
        "success": pixel_accuracy(pred, targets),
        "iou_target": mean_iou(pred, targets),
        "acc_original": pixel_accuracy(pred, clean_pred),
        "iou_original": mean_iou(pred, clean_pred),
        "l2": perturbation_norm(adv, clean, 2),
        "linf": perturbation_norm(adv, clean, float("inf")),
    }
    index = index or list(range(len(clean)))
    return [
        {
            "attack": attack,
            "backbone": backbone,
            "image": index[i],
            **extra,
            **{k: finite_or_none(float(v[i])) for k, v in per_image.items()},
        }
        for i in range(len(clean))
    ]


def transfer_matrix(
    source: str,
    advs: dict[str, torch.Tensor],
    images: torch.Tensor,
    target_model: nn.Module,
    target: str,
    targets: torch.Tensor,
    index: list[int] | None = None,
    with_clean: bool = True,
) -> list[Row]:
    """Adversarial images crafted on ``source`` evaluated on ``target``: per-image success and
    IoU to target, against the same targets, beside the clean images' scores (``with_clean``)."""
    rows = []
    index = index or list(range(len(images)))
    with torch.inference_mode():
        clean_pred = predict_classes(target_model(images))
        for attack, adv in advs.items():
            pred = predict_classes(target_model(adv))
            rows += [
                dict(r, source=source, evaluated_on=target)
                for r in _rows(attack, target, images, adv, pred, targets, clean_pred, index)
            ]
        base, base_changed = pixel_accuracy(clean_pred, targets), changed_success(clean_pred, targets, clean_pred)
    if with_clean:  # over the changed pixels the clean images score 0 (or nothing to change) by construction
        rows += [
            {
                "attack": "none (clean)",
                "backbone": target,
                "image": index[i],
                "source": source,
                "evaluated_on": target,
                "success": float(base[i]),
                "success_changed": finite_or_none(float(base_changed[i])),
            }
            for i in range(len(images))
        ]
    return rows


def class_difficulty(
    attack: str,
    backbone: str,
    pred: torch.Tensor,
    targets: torch.Tensor,
    clean_pred: torch.Tensor,
    index: list[int] | None = None,
) -> list[Row]:
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
                rows.append(
                    {
                        "attack": attack,
                        "backbone": backbone,
                        "image": index[i],
                        "class": VOC_CLASSES[c],
                        "pixels": total,
                        "imposed": float((pred[i][where] == c).float().mean()),
                    }
                )
    return rows


def study_cells(study: StudyConfig) -> list[str]:
    """The names of every cell of the studies: ``compare/BACKBONE/ATTACK/SHARD`` for every compared
    attack, ``curve/BACKBONE/ATTACK/EPS_INDEX/SHARD`` for those with a security curve, and
    ``budget/BACKBONE/ATTACK/MODE/SHARD`` for the budget axis (untargeted where the attack has it)."""
    compared = ATTACKS.compared()
    compare = [
        f"compare/{b}/{a.name}/{k}"
        for b in study.backbones
        for a in compared
        for k in range(len(shard_ranges(study.total, study.batch)))
    ]
    curve = [
        f"curve/{b}/{a.name}/{e}/{k}"
        for b in study.backbones
        for a in compared
        if a.security_curve
        for e in range(len(study.eps_values))
        for k in range(len(shard_ranges(study.curve_total, study.batch)))
    ]
    budget = [
        f"budget/{b}/{a}/{mode}/{k}"
        for b in study.backbones
        for a in study.budget_attacks
        for mode in study.budget_modes
        if mode == "targeted" or "targeted" in inspect.signature(ATTACKS[a].fn).parameters
        for k in range(len(shard_ranges(len(study.budget_indices), study.batch)) if study.budget_indices else 0)
    ]
    return compare + curve + budget


class _Inputs(typing.NamedTuple):
    """A cell's images, clean predictions, targets (image i takes image i+1's prediction), ground
    truth (or None) and model."""

    images: torch.Tensor
    clean: torch.Tensor
    targets: torch.Tensor
    truth: torch.Tensor | None
    model: SegmentationModel


def _shard_inputs(study: StudyConfig, backbone: str, indices: list[int], total: int, scheme: str = "roll") -> _Inputs:
    """A shard's inputs, targets under ``scheme`` (``single``: toward the paper's target image);
    clean predictions come from :func:`~segattack.study.cache.clean_prediction` (one image at a time, the
    same bits in every cell)."""
    sources = target_sources(indices, total, scheme, PAPER_TARGET)
    loaded = image_set(study.images, study.size, "crop", study.seed).load(indices)
    model_key = study.model_key(backbone)
    set_key = ImageSetKey(study.images, study.size, "crop", study.seed)
    clean = {i: clean_prediction(model_key, set_key, i, study.numerics).long() for i in {*indices, *sources}}
    device = torch.device(study.device)
    truth = None if loaded.truth is None else torch.stack(loaded.truth).to(device)
    return _Inputs(
        torch.stack(loaded.images).to(device),
        torch.stack([clean[i] for i in indices]),
        torch.stack([clean[i] for i in sources]),
        truth,
        cached_model(model_key),
    )


def compare_attack(
    model: SegmentationModel,
    backbone: str,
    attack: str,
    images: torch.Tensor,
    targets: torch.Tensor,
    clean_pred: torch.Tensor,
    eps: float,
    steps: int,
    index: list[int] | None = None,
) -> tuple[list[Row], AttackResult]:
    """One attack at the studies' budget: per-image rows (with iterations and the batch's wall time)
    and the attack's result (its images and prediction feed transfer and difficulty)."""
    spec = ATTACKS[attack]
    budget = spec.budget_params(eps, steps, backbone)
    warm_up(model, spec, images, targets, budget)
    started = time.perf_counter()
    res = spec(model, images, targets, **budget)
    seconds = time.perf_counter() - started
    iterations = res.params.get("iterations", [steps] * len(images))
    rows = [
        dict(r, iterations=iterations[p], seconds=seconds)
        for p, r in enumerate(_rows(attack, backbone, images, res.adv, res.pred, targets, clean_pred, index))
    ]
    return rows, res


def curve_rows(
    model: nn.Module,
    backbone: str,
    attack: str,
    images: torch.Tensor,
    targets: torch.Tensor,
    clean_pred: torch.Tensor,
    eps: float,
    steps: int,
    index: list[int] | None = None,
) -> list[Row]:
    """Per-image success and IoU to target of ``attack`` at budget ``eps`` (one point of a security curve)."""
    res = ATTACKS[attack](model, images, targets, **ATTACKS[attack].budget_params(eps, steps, backbone))
    return _rows(attack, backbone, images, res.adv, res.pred, targets, clean_pred, index, eps=eps)


def run_cell(study: StudyConfig, cell: str) -> CellRecord:
    """Compute one cell (see :func:`study_cells`) under the studies' numerics."""
    with numerics(study.numerics):
        return _run_cell(study, cell)


def _run_cell(study: StudyConfig, cell: str) -> CellRecord:
    kind, backbone, attack, *rest = cell.split("/")
    if kind == "budget":
        chosen = study.budget_indices
        indices = [chosen[p] for p in shard_ranges(len(chosen), study.batch)[int(rest[-1])]]
        inputs = _shard_inputs(study, backbone, indices, study.total, "single")
        return CellRecord(
            cell, budget=budget_rows(study, inputs.model, backbone, attack, rest[0] == "targeted", inputs, indices)
        )
    total = {"compare": study.total, "curve": study.curve_total}[kind]
    indices = list(shard_ranges(total, study.batch)[int(rest[-1])])
    inputs = _shard_inputs(study, backbone, indices, study.total)
    images, clean, targets, model = inputs.images, inputs.clean, inputs.targets, inputs.model
    if kind == "curve":
        eps = study.eps_values[int(rest[0])]
        return CellRecord(
            cell, security=curve_rows(model, backbone, attack, images, targets, clean, eps, study.curve_steps, indices)
        )
    rows, res = compare_attack(model, backbone, attack, images, targets, clean, study.eps, study.steps, indices)
    transfer = []
    first = ATTACKS.compared()[0].name  # its cells also carry the clean baselines, once per image
    for other in (b for b in study.backbones if b != backbone):
        other_model = cached_model(study.model_key(other))
        transfer += transfer_matrix(
            backbone, {attack: res.adv}, images, other_model, other, targets, indices, with_clean=attack == first
        )
    truth = inputs.truth
    return CellRecord(
        cell,
        comparison=rows,
        transfer=transfer,
        difficulty=class_difficulty(attack, backbone, res.pred, targets, clean, indices),
        success_history=res.history["success"].T.tolist(),
        clean_conf=None if truth is None else confusion_matrix(clean, truth).sum(0).tolist(),
        weights=model.info,
    )


def budget_rows(
    study: StudyConfig,
    model: SegmentationModel,
    backbone: str,
    attack: str,
    targeted: bool,
    inputs: _Inputs,
    index: list[int],
) -> list[BudgetRow]:
    """Per image, the smallest L-inf and L2 budget at which ``attack`` breaks it (None: not within
    ``budget_eps_max`` or the attack's run), the passes spent finding it and the wall time (the
    cell's, shared equally over its images). Targeted, the labels
    are the inputs' targets on the pixels whose target differs from the clean prediction, the rest
    ignored: an image is broken when ``budget_threshold`` of the pixels the attack has work to do on
    reach their target (pixels already there would break most images at radius 0); an image with no
    such pixel has no budget to find and no row. Untargeted, away from the clean prediction."""
    unchanged = inputs.targets == inputs.clean
    labels = inputs.targets.masked_fill(unchanged, IGNORE_INDEX) if targeted else inputs.clean
    work = [p for p in range(len(index)) if bool((labels[p] != IGNORE_INDEX).any())]
    if not work:
        return []
    spec = ATTACKS[attack]
    searched = spec.kind == "budget" and spec.budget is not None and spec.searchable
    # a search's rounds per radius; an attack run once gets its own registered budget (ASMA's Table 1)
    steps = study.budget_steps if searched else study.budget_run_steps or spec.steps_for(study.budget_plan)
    start = time.perf_counter()
    found = smallest_budget(
        model, inputs.images[work], labels[work], attack, targeted=targeted, steps=steps, rounds=study.budget_rounds,
        adv_threshold=study.budget_threshold, eps_max=study.budget_eps_max, backbone=backbone,
    )  # fmt: skip
    seconds = (time.perf_counter() - start) / len(work)
    mode = "targeted" if targeted else "untargeted"
    return [
        BudgetRow(
            backbone,
            attack,
            mode,
            index[p],
            finite_or_none(float(found.linf[k])),
            finite_or_none(float(found.l2[k])),
            int(found.passes[k]),
            seconds,
            found.how,
            float(found.success[k]),
            bool(found.converged[k]),
        )
        for k, p in enumerate(work)
    ]


def assemble_studies(study: StudyConfig, cells: list[CellRecord]) -> StudiesResults:
    """``studies.json`` from the cells: rows in cell order, per-attack wall time summed over shards."""
    comparison: list[Row] = []
    security: list[Row] = []
    transfer: list[Row] = []
    difficulty: list[Row] = []
    curves: dict[str, dict[str, list[list[float]]]] = {}
    weights: dict[str, WeightsInfo] = {}
    clean_conf: dict[str, list[torch.Tensor]] = {}
    totals: dict[tuple[str, str], float] = {}
    first = ATTACKS.compared()[0].name
    for cell in cells:
        if cell.comparison:
            _, backbone, attack, _ = cell.cell.split("/")
            totals[(backbone, attack)] = totals.get((backbone, attack), 0.0) + cell.comparison[0]["seconds"]
    budget: list[BudgetRow] = []
    for cell in cells:
        security += cell.security
        budget += cell.budget
        if not cell.comparison:
            continue
        _, backbone, attack, _ = cell.cell.split("/")
        comparison += [dict(r, seconds=totals[(backbone, attack)]) for r in cell.comparison]
        transfer += cell.transfer
        difficulty += cell.difficulty
        curves.setdefault(backbone, {}).setdefault(attack, []).extend(cell.success_history)
        if cell.weights is not None:
            weights[backbone] = cell.weights
        if attack == first and cell.clean_conf is not None:
            clean_conf.setdefault(backbone, []).append(torch.tensor(cell.clean_conf))
    return StudiesResults(
        config_hash=study.digest(),
        results_version=RESULTS_VERSION,
        params={**asdict(study), "targets": "roll (image i -> prediction of image i+1)"},
        weights=weights,
        clean_iou_truth={
            b: finite_or_none(dataset_scores(torch.stack(clean_conf[b]))["miou"]) if b in clean_conf else None
            for b in study.backbones
        },  # None too where every truth pixel is ignore
        comparison=comparison,
        security=security,
        transfer=transfer,
        difficulty=difficulty,
        # per backbone and attack: success per iteration, one list per image, transposed to (steps, images)
        iteration_curves={
            b: {a: [list(step) for step in zip(*hist)] for a, hist in per.items()} for b, per in curves.items()
        },
        seconds=sum(totals.values()),
        budget=budget,
    )


class StudiesJob(Job):
    """The studies as a job: its units are the cells, its document ``studies.json``."""

    notebook = "studies.ipynb"
    document = "studies.json"
    unit_folder = "cells"
    kind = "studies"
    results_version = RESULTS_VERSION

    def __init__(self, study: StudyConfig, path: str | os.PathLike) -> None:
        super().__init__("studies", path, study.digest())
        self.study = study

    def list_units(self) -> list[str]:
        return study_cells(self.study)

    def compute(self, unit: str) -> CellRecord:
        return run_cell(self.study, unit)

    def decode(self, stored: dict[str, Any]) -> CellRecord:
        return CellRecord.from_dict(stored)

    def write_outputs(self, records: list[CellRecord], staging: Path) -> None:
        atomic_write_text(staging / self.document, assemble_studies(self.study, records).to_json())

    def notebook_parameters(self) -> dict[str, Any]:
        return {"settings": asdict(self.study), "out_dir": str(self.path), "compute": False}


def run_studies(study: StudyConfig, out_dir: str | os.PathLike, progress: bool = True) -> StudiesResults:
    """Compute the missing cells in this process, assemble and save; return ``studies.json``'s content
    (finished studies for the same settings are read, not recomputed)."""
    job = StudiesJob(study, out_dir)
    job.run_here(progress)
    return read_studies(job.path, study)


def read_studies(folder: str | os.PathLike, study: StudyConfig | None = None) -> StudiesResults:
    """Finished studies; with ``study``, refused unless they were made with these settings."""
    path = Path(folder).expanduser().resolve() / StudiesJob.document
    results = StudiesResults.read(path)
    if study is not None and results.config_hash != study.digest():
        raise RecordError(f"{path} holds studies of other settings than those asked for")
    return results
