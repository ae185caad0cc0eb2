"""The records that cross modules, typed, and the results format they are stored in.

A **run folder** (``R/runs/BACKBONE-ATTACK/``) holds:

- ``results.json``: one :class:`Results` document, written strictly (``null`` where a value is
  undefined). Its fields, in order: ``config`` (the :class:`~segattack.study.config.RunConfig`),
  ``config_hash``, ``results_version``, ``image_size`` (px), ``names`` and ``notes`` (per image, input
  notes such as EXIF rotation), ``skipped`` (files of the set that were not images), ``weights``
  (:class:`~segattack.models.wrapper.WeightsInfo`), ``attack_params`` (the attack's resolved hyperparameters),
  ``iterations`` (forward/backward passes per image), ``shards``, ``seconds`` and
  ``seconds_per_iteration`` (attack compute), ``attacked`` (the images Table 1 averages),
  ``summary`` / ``summary_all`` (per metric: mean and 95% normal half-width over the attacked / all
  images), ``pooled`` (``attacked`` / ``all`` -> reference -> [5]'s pooled IoU and accuracy with
  bootstrap intervals), ``clean_truth`` (clean mIoU against ground truth from one confusion matrix,
  or null), ``per_image`` (per metric, one value per image), ``history`` (per quantity, the per
  iteration mean and half-width over the attacked images), ``environment`` (versions, device) and
  ``input_files`` (each file that changes the numbers: role, path relative to the project or the
  data root, SHA-256; :mod:`segattack.inputs`);
- ``tensors.pt``: :class:`SavedImages` of the first ``save_images`` images;
- ``NN_adv.png``, ``NN_pred_clean.png``, ``NN_pred_adv.png`` per saved image (clamped for display);
- ``shards/<config hash>/NNNNN.pt``: the :class:`ShardRecord` each shard produced.

The **studies folder** (``R/studies/``) holds ``studies.json`` (:class:`StudiesResults`) and
``cells/<config hash>/*.pt`` (:class:`CellRecord`); the budget axis's rows are :class:`BudgetRow`.
A folder whose ``config_hash`` or ``results_version`` differs from the current parameters is
recomputed; ``CHANGELOG.md`` lists each version's changes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from segattack.models.wrapper import WeightsInfo
from segattack.study.config import RunConfig
from segattack.study.inputs import InputFile

RESULTS_VERSION = 5  # bumped when a results document gains or changes fields the report reads
Row = dict[str, Any]  # one row of a studies table (plain numbers and names, for pandas)
T = TypeVar("T")


class RecordError(ValueError):
    """A stored record that cannot be read back as its type: truncated, the wrong shape, a field missing."""


def build(kind: type[T], value: Any, where: str = "") -> T:
    """``value`` (parsed JSON) as ``kind``: dataclasses field by field, containers element-wise."""
    return typing.cast(T, _build(kind, value, where or getattr(kind, "__name__", "record")))


def _build(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise RecordError(f"{where} must be an object, got {type(value).__name__}")
        hints = typing.get_type_hints(hint)
        known = {f.name for f in dataclasses.fields(hint) if f.init}
        missing = [
            f.name
            for f in dataclasses.fields(hint)
            if f.init
            and f.name not in value
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise RecordError(f"{where} lacks the field {missing[0]!r}")
        try:
            return hint(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise RecordError(f"{where}: {exc}") from None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _build(options[0], value, where) if len(options) == 1 else value
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where} must be an object, got {type(value).__name__}")
        return {k: _build(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else value
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{where} must be a list, got {type(value).__name__}")
        return [_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise RecordError(f"{where} must be a number, got {value!r}")
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise RecordError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def read_document(kind: type[T], path: Path) -> T:
    """The JSON document at ``path`` as ``kind``; :class:`RecordError` says what is wrong with a bad one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path} cannot be read ({exc})") from None
    if not isinstance(value, dict):
        raise RecordError(f"{path} holds a JSON {type(value).__name__}, not a results document")
    if value.get("results_version") != RESULTS_VERSION:
        raise RecordError(
            f"{path} is from results version {value.get('results_version')}, not {RESULTS_VERSION}: run the grid again"
        )
    return build(kind, value, path.name)


def shallow_dict(record: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict without copying its tensors (``dataclasses.asdict`` deep-copies)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


@dataclass
class Stat:
    """Mean over the images where the reading is defined, its 95% normal half-width (None: undefined,
    e.g. one image) and how many images that is (a reading such as success over changed pixels is
    undefined for an image with nothing to change)."""

    mean: float | None
    ci95: float | None
    images: int | None = None


@dataclass
class Score:
    """A pooled score and its 95% bootstrap interval over images (None for one image)."""

    value: float | None
    ci95: list[float] | None = None


@dataclass
class Pooled:
    """Reference [5]'s ``IoUAcc`` over a set of images: IoU and pixel accuracy."""

    iou: Score
    acc: Score


@dataclass
class CleanTruth:
    """The clean model against ground truth over a run's images, from one confusion matrix."""

    miou: float | None
    pixel_accuracy: float | None
    images: int
    resize: str
    class_iou: list[float | None]


@dataclass
class Curve:
    """A quantity per iteration: mean and 95% half-width over the attacked images."""

    mean: list[float | None]
    ci95: list[float | None]


@dataclass
class Results:
    """A run's ``results.json`` (see the module docstring for each field)."""

    config: RunConfig
    config_hash: str
    results_version: int
    image_size: int
    names: list[str]
    notes: list[str]
    skipped: list[str]
    weights: WeightsInfo
    attack_params: dict[str, Any]
    iterations: list[int]
    shards: int
    seconds: float
    seconds_per_iteration: float
    attacked: list[int]
    summary: dict[str, Stat]
    summary_all: dict[str, Stat]
    pooled: dict[str, dict[str, Pooled]]
    clean_truth: CleanTruth | None
    per_image: dict[str, list[float | None]]
    history: dict[str, Curve]
    environment: dict[str, str]
    input_files: list[InputFile] = field(default_factory=list)

    def mean(self, metric: str) -> float | None:
        return self.summary[metric].mean

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, allow_nan=False)

    @classmethod
    def read(cls, path: Path) -> Results:
        return read_document(cls, path)


@dataclass
class SavedImages:
    """The first ``save_images`` images of a run, as tensors (``tensors.pt``)."""

    index: list[int]
    images: list[torch.Tensor]
    adv: list[torch.Tensor]
    clean_pred: list[torch.Tensor]
    adv_pred: list[torch.Tensor]
    targets: list[torch.Tensor]
    truth: list[torch.Tensor] | None

    @classmethod
    def read(cls, path: Path) -> SavedImages:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))

    @classmethod
    def join(cls, parts: list[SavedImages]) -> SavedImages:
        """The saved images of consecutive shards, in order."""

        def cat(name: str) -> list[Any]:
            return [x for p in parts for x in getattr(p, name)]

        truth = None if parts[0].truth is None else cat("truth")
        return cls(cat("index"), cat("images"), cat("adv"), cat("clean_pred"), cat("adv_pred"), cat("targets"), truth)


@dataclass
class ShardRecord:
    """What one shard of a run produced: per-image metrics, confusion counts, histories and images."""

    config_hash: str
    shard: int
    indices: list[int]
    size: int
    names: list[str]
    notes: list[str]
    sizes: list[list[int]]
    metrics: dict[str, torch.Tensor]  # per metric, (images,)
    conf: dict[str, torch.Tensor]  # per reference, (images, C, C) confusion counts over its labelled pixels
    void: dict[str, torch.Tensor]  # per reference, (images, C) predictions per class at its void pixels ([5])
    pixels: torch.Tensor  # (images,) pixel counts
    history: dict[str, torch.Tensor]  # per quantity, (steps, images)
    iterations: list[int]
    seconds: float
    passes: int
    attack_params: dict[str, Any]
    weights: WeightsInfo
    saved: SavedImages

    def to_dict(self) -> dict[str, Any]:
        """Plain containers for ``torch.save`` (read back with ``weights_only=True``)."""
        return {**shallow_dict(self), "weights": dataclasses.asdict(self.weights), "saved": shallow_dict(self.saved)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ShardRecord:
        return cls(**{**value, "weights": WeightsInfo(**value["weights"]), "saved": SavedImages(**value["saved"])})


@dataclass
class BudgetRow:
    """One image's smallest budget under one attack, backbone and mode (targeted or untargeted):
    L-inf and L2 in [0,1] pixels (None: not broken within the search or the run), the
    forward+backward passes and seconds (its share of its cell's wall time) spent finding it, how
    it was found (``segattack.evaluation.budget.How``), the share of pixels its perturbation
    reached (where not broken: at the largest radius tried) and whether every run that did not
    break it had stopped moving (``segattack.evaluation.budget.Budgets``)."""

    backbone: str
    attack: str
    mode: str
    image: int
    linf: float | None
    l2: float | None
    passes: int
    seconds: float
    how: str
    success: float
    converged: bool


@dataclass
class CellRecord:
    """What one studies cell produced: table rows and, for a comparison cell, what the report draws."""

    cell: str
    security: list[Row] = field(default_factory=list)
    comparison: list[Row] = field(default_factory=list)
    transfer: list[Row] = field(default_factory=list)
    difficulty: list[Row] = field(default_factory=list)
    success_history: list[list[float]] = field(default_factory=list)  # per image, success per iteration
    clean_conf: list[list[int]] | None = None  # clean prediction vs ground truth, summed over the cell's images
    weights: WeightsInfo | None = None
    budget: list[BudgetRow] = field(default_factory=list)  # per image, the smallest budget that breaks it

    def to_dict(self) -> dict[str, Any]:
        return {
            **shallow_dict(self),
            "weights": None if self.weights is None else dataclasses.asdict(self.weights),
            "budget": [dataclasses.asdict(r) for r in self.budget],
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> CellRecord:
        return build(cls, value, value.get("cell", "cell"))


@dataclass
class StudiesResults:
    """``studies.json``: the studies' rows, per backbone the weights and clean quality, and curves."""

    config_hash: str
    results_version: int
    params: dict[str, Any]
    weights: dict[str, WeightsInfo]
    clean_iou_truth: dict[str, float | None]
    comparison: list[Row]
    security: list[Row]
    transfer: list[Row]
    difficulty: list[Row]
    iteration_curves: dict[str, dict[str, list[list[float]]]]  # backbone -> attack -> (steps, images)
    seconds: float
    budget: list[BudgetRow] = field(default_factory=list)  # the budget axis, one row per image, attack and mode

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, allow_nan=False)

    @classmethod
    def read(cls, path: Path) -> StudiesResults:
        return read_document(cls, path)
