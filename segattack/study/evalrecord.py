"""``evaluation.json``: one strict JSON record per evaluated model (typed, no NaN, checked on reading).

The record holds every number of ``segattack evaluate`` for one model (clean and robust scores per
attack and radius, the per-image worst case, smallest breaking radii, cost, convergence) and its
protocol card, so a paper's table can be rebuilt and compared (``segattack leaderboard``) from the
file alone. Undefined numbers (a class absent from the data, an image never broken) are ``null``;
a record with a NaN, a wrong type, a missing field or lists of the wrong length is refused with one
:class:`~segattack.study.records.RecordError` naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from segattack.engine.store import atomic_write_text
from segattack.evaluation.robustness import Scores, TargetedScores
from segattack.study.records import RecordError, build

EVALUATION_VERSION = 1  # bumped when evaluation.json gains or changes fields
Norm = Literal["linf", "l2"]


@dataclass(frozen=True)
class AttackCard:
    """One attack as it ran: name, label, kind, iterations, its keywords (radius excepted) and how its
    radius was set."""

    name: str
    label: str
    kind: str  # "budget" (run at each radius) | "minimal_norm" (finds each image's smallest radius)
    steps: int
    params: dict[str, Any]
    radius: str  # the radius schedule in words


@dataclass(frozen=True)
class Protocol:
    """Everything that determines the numbers besides the model: what a leaderboard must hold equal."""

    attacks: list[AttackCard]
    norm: Norm
    eps: list[float]  # radii in [0,1] pixels, ascending
    targeted: str  # none | single | roll | fixed:CLASS | remove:CLASS
    images: str
    num_images: int
    size: int
    resize: str
    window: str
    label_map: str
    labels: str  # the label space's name
    break_share: float
    seed: int
    device: str
    threads: int
    deterministic: bool
    segattack_version: str

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be linf or l2, got {self.norm!r}")
        if any(not e > 0 for e in self.eps) or sorted(set(self.eps)) != list(self.eps):
            raise ValueError(f"eps must be positive and strictly increasing, got {self.eps}")

    def differences(self, other: Protocol) -> list[str]:
        """The fields (attacks by name and settings) in which ``other`` differs from this protocol."""
        mine, theirs = asdict(self), asdict(other)
        return [k for k in mine if k not in ("device", "threads", "segattack_version") and mine[k] != theirs[k]]


@dataclass(frozen=True)
class ModelCard:
    """The model: its spec, weights and where they came from."""

    spec: str
    weights: str  # weights source as loaded (embedded, torchvision, a checkpoint, hf, ...)
    description: str
    weights_sha256: str  # of the loaded state dict's tensors, in order


@dataclass(frozen=True)
class Cell:
    """One attack at one radius (``eps`` null for a minimal-norm attack's own run)."""

    attack: str
    eps: float | None
    scores: Scores | None  # against the ground truth, pooled over the dataset; None for a minimal-norm run
    targeted: TargetedScores | None
    image_accuracy: list[float | None]  # per image, against the ground truth
    success: list[float]  # per image: share won (off label, or at the target over pixels to change)
    passes_per_image: float  # forward+backward passes
    seconds_per_image: float
    converged: bool
    objective_change: float  # relative change of the objective over the last iterations

    def __post_init__(self) -> None:
        if len(self.success) != len(self.image_accuracy):
            raise ValueError(f"{self.attack}: per-image lists differ in length")


@dataclass(frozen=True)
class Worst:
    """The per-image worst case over the budget attacks at one radius (SEA's rule)."""

    eps: float
    scores: Scores
    targeted: TargetedScores | None
    attack: list[str]  # per image, the attack chosen
    image_accuracy: list[float | None]


@dataclass(frozen=True)
class Smallest:
    """Per image, the smallest breaking radius of one attack (or ``worst``), null where none broke it."""

    attack: str
    eps: list[float | None]
    robust_share: list[float]  # share of images not broken at each radius of the protocol's eps


@dataclass(frozen=True)
class Evaluation:
    """``DIR/<model>/evaluation.json``."""

    results_version: int
    config_hash: str
    model: ModelCard
    protocol: Protocol
    images: list[str]
    class_names: list[str]
    clean: Scores
    cells: list[Cell]
    worst: list[Worst]
    smallest: list[Smallest]

    def __post_init__(self) -> None:
        n, c = len(self.images), len(self.class_names)
        if self.results_version != EVALUATION_VERSION:
            raise ValueError(f"results_version {self.results_version} is not {EVALUATION_VERSION}: evaluate again")
        for scores, where in [(self.clean, "clean")] + [
            (x.scores, f"{x.attack} at {x.eps}") for x in self.cells if x.scores
        ]:
            if len(scores.class_iou) != c:
                raise ValueError(f"{where}: {len(scores.class_iou)} class IoUs for {c} classes")
        for cell in self.cells:
            if len(cell.success) != n:
                raise ValueError(f"{cell.attack} at {cell.eps}: {len(cell.success)} images, not {n}")
        for worst in self.worst:
            if len(worst.attack) != n or len(worst.image_accuracy) != n:
                raise ValueError(f"the worst case at {worst.eps}: per-image lists are not {n} long")
        for small in self.smallest:
            if len(small.eps) != n or len(small.robust_share) != len(self.protocol.eps):
                raise ValueError(f"smallest eps of {small.attack}: wrong lengths")

    def cell(self, attack: str, eps: float) -> Cell:
        return next(c for c in self.cells if c.attack == attack and c.eps == eps)

    def worst_at(self, eps: float) -> Worst:
        """The worst case at radius ``eps`` (a radius of the protocol, matched to 1e-9)."""
        for worst in self.worst:
            if math.isclose(worst.eps, eps, rel_tol=0, abs_tol=1e-9):
                return worst
        raise KeyError(f"{self.model.spec} was not evaluated at eps {eps:.6g} (its radii: {self.protocol.eps})")


def to_json(record: Evaluation) -> str:
    """Strict JSON text (a NaN or inf anywhere is a ValueError, never written)."""
    return json.dumps(asdict(record), allow_nan=False, indent=1)


def write_evaluation(record: Evaluation, path: Path) -> None:
    atomic_write_text(path, to_json(record))


def read_evaluation(path: str | Path) -> Evaluation:
    """``path`` as an :class:`Evaluation`; :class:`RecordError` names what is wrong with a bad one."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(), parse_constant=_no_constant)
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path} is not a readable evaluation record ({exc})") from None
    return from_value(value, str(path))


def from_value(value: Any, where: str = "evaluation") -> Evaluation:
    """Parsed JSON as an :class:`Evaluation`, refused (:class:`RecordError`) unless it is one."""
    if not isinstance(value, dict):
        raise RecordError(f"{where} holds a JSON {type(value).__name__}, not an evaluation record")
    if value.get("results_version") != EVALUATION_VERSION:
        raise RecordError(f"{where} is not an evaluation record of version {EVALUATION_VERSION}")
    _check_numbers(value, where)
    return build(Evaluation, value, where)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (undefined numbers are null)")


def _check_numbers(value: Any, where: str) -> None:
    """Refuse a non-finite float or a bool where a number is expected, anywhere in ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"{where} is {value}; undefined numbers are null")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{where}[{i}]")
