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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segattack.attacks import ATTACKS, AttackResult
from segattack.data.classes import IGNORE_INDEX
from segattack.data.labels import VOC
from segattack.data.targets import target_sources
from segattack.engine.jobs import Job
from segattack.engine.store import atomic_write_text
from segattack.evaluation.budget import smallest_budget
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
from segattack.models.classcheck import check_classes, model_classes
from segattack.models.wrapper import SegmentationModel, WeightsInfo
from segattack.study.cache import ImageSetKey, cached_model, clean_prediction, warm_up
from segattack.study.numerics import numerics
from segattack.study.records import RESULTS_VERSION, BudgetRow, CellRecord, RecordError, Row, StudiesResults
from segattack.study.runner import shard_ranges
from segattack.study.study_config import BUDGET_MODES, LEVELS, PAPER_TARGET, StudyConfig

__all__ = [  # StudyConfig and its levels live in study_config; imported from here too
    "BUDGET_MODES",
    "LEVELS",
    "PAPER_TARGET",
    "StudiesJob",
    "StudyConfig",
    "read_studies",
    "run_cell",
    "run_studies",
    "study_cells",
]


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
    names: tuple[str, ...] = VOC.names,
) -> list[Row]:
    """Per image and target class (named from ``names``, the studies' label space): the fraction of its
    target pixels imposed, counting only pixels whose clean prediction was another class (so classes
    already present do not look easy)."""
    rows = []
    index = index or list(range(len(targets)))
    to_change = (targets != clean_pred) & (targets != IGNORE_INDEX)
    for i in range(len(targets)):
        for c in range(len(names)):
            where = to_change[i] & (targets[i] == c)
            total = int(where.sum())
            if total:
                rows.append(
                    {
                        "attack": attack,
                        "backbone": backbone,
                        "image": index[i],
                        "class": names[c],
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
        f"compare/{study.model_id(b)}/{a.name}/{k}"
        for b in study.backbones
        for a in compared
        for k in range(len(shard_ranges(study.total, study.batch)))
    ]
    curve = [
        f"curve/{study.model_id(b)}/{a.name}/{e}/{k}"
        for b in study.backbones
        for a in compared
        if a.security_curve
        for e in range(len(study.eps_values))
        for k in range(len(shard_ranges(study.curve_total, study.batch)))
    ]
    budget = [
        f"budget/{study.model_id(b)}/{a}/{mode}/{k}"
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
    loaded = study.image_set().load(indices)
    model_key = study.model_key(backbone)
    model = cached_model(model_key)
    check_classes(model_classes(model, study.size, backbone), study.labels, backbone)
    set_key = ImageSetKey(study.images, study.size, "crop", study.seed)
    clean = {i: clean_prediction(model_key, set_key, i, study.numerics).long() for i in {*indices, *sources}}
    device = torch.device(study.device)
    truth = None if loaded.truth is None else torch.stack(loaded.truth).to(device)
    return _Inputs(
        torch.stack(loaded.images).to(device),
        torch.stack([clean[i] for i in indices]),
        torch.stack([clean[i] for i in sources]),
        truth,
        model,
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
    kind, model_id, attack, *rest = cell.split("/")
    backbone = study.model_of(model_id)
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
    truth, names = inputs.truth, study.labels.names  # the images' classes (the models', read through a label map)
    return CellRecord(
        cell,
        comparison=rows,
        transfer=transfer,
        difficulty=class_difficulty(attack, backbone, res.pred, targets, clean, indices, names),
        success_history=res.history["success"].T.tolist(),
        clean_conf=None if truth is None else confusion_matrix(clean, truth, len(names)).sum(0).tolist(),
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
            _, model_id, attack, _ = cell.cell.split("/")
            backbone = study.model_of(model_id)
            totals[(backbone, attack)] = totals.get((backbone, attack), 0.0) + cell.comparison[0]["seconds"]
    budget: list[BudgetRow] = []
    for cell in cells:
        security += cell.security
        budget += cell.budget
        if not cell.comparison:
            continue
        _, model_id, attack, _ = cell.cell.split("/")
        backbone = study.model_of(model_id)
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

    def prepare(self) -> None:
        """Load every model and check its classes against the images' before any cell runs."""
        for b in self.study.backbones:
            check_classes(
                model_classes(cached_model(self.study.model_key(b)), self.study.size, b), self.study.labels, b
            )

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
