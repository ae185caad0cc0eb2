"""The studies' settings (:class:`StudyConfig`) and their levels: which models, images and budgets every
study cell shares, checked on construction, hashed to name the studies' results."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segattack.attacks import ATTACKS
from segattack.data.labels import LabelMap, LabelSpace, read_label_map
from segattack.data.sets import MIN_SIDE, ImageSet, image_set, resolve_source, source_labels
from segattack.data.targets import attacked_images
from segattack.evaluation.budget import ROUNDS
from segattack.models.backbones import BACKBONES, WEIGHT_SOURCES, resolve_weights
from segattack.models.specs import check_weights, known_labels, resolve_spec
from segattack.study.config import ModelKey, RunConfig, check_bounds, coerce_fields, digest
from segattack.study.inputs import InputFile, data_files, data_root, fingerprint, weights_files
from segattack.study.numerics import DEFAULT_DETERMINISTIC, DEFAULT_THREADS, Numerics, check_threads
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
    backbones: list[str] = field(default_factory=lambda: list(BACKBONES))  # study backbones or model specs
    label_map: str = ""  # as a run's: the masks (and the per-class table) read in the models' classes
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
        try:  # model specs in their hashed form, each with its weights and classes checked before any work
            self.backbones = list(dict.fromkeys(resolve_spec(b) for b in self.backbones))
            if not self.backbones:
                raise ValueError(f"studies need a model; choose from {', '.join(BACKBONES)} or a model spec")
            self.label_map = str(Path(self.label_map).expanduser().resolve()) if self.label_map else ""
            for b in self.backbones:
                check_weights(b, self.weights_for(b))
                if (model_labels := known_labels(b)) is not None:
                    model_labels.check_matches(self.labels, f"model {b}", f"the studies' images {self.images}")
        except (ValueError, OSError) as exc:
            raise ParameterError(f"studies: {exc}") from None

    def weights_for(self, model: str) -> str:
        """A model's weights: ``weights`` for the study backbones; a model spec takes its own (a weight
        source names the backbones' only), or a checkpoint path where ``weights`` is one."""
        return self.weights if model in BACKBONES or self.weights not in WEIGHT_SOURCES else "auto"

    def model_id(self, model: str) -> str:
        """A model's key in cell names: a study backbone's name; a spec's path-free name and the hash of
        the spec and its weights (so cells of different models or weights never share a name)."""
        if model in BACKBONES:
            return model
        tag = hashlib.sha256(f"{model}\n{self.weights_for(model)}".encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_.]+', '_', model).strip('_')[-40:]}-{tag}"

    def model_of(self, model_id: str) -> str:
        """The model whose :meth:`model_id` is ``model_id``."""
        return next(b for b in self.backbones if self.model_id(b) == model_id)

    def label_mapping(self) -> LabelMap | None:
        """The label map (the images' classes read into the models'), if any."""
        if not self.label_map:
            return None
        model_labels = known_labels(self.backbones[0])
        if model_labels is None:
            raise ValueError(f"label_map needs the model's class names from its spec; {self.backbones[0]} has none")
        return read_label_map(self.label_map, source_labels(self.images), model_labels)

    @property
    def labels(self) -> LabelSpace:
        """The studies' classes: the images', or the models' where the label map reads them so."""
        mapping = self.label_mapping()
        return source_labels(self.images) if mapping is None else mapping.target

    def image_set(self) -> ImageSet:
        """The studies' images, their masks read through the label map where there is one."""
        images, mapping = image_set(self.images, self.size, "crop", self.seed), self.label_mapping()
        return images if mapping is None else images.mapped(mapping)

    @property
    def total(self) -> int:
        return self.image_set().select(self.num_images)

    @property
    def curve_total(self) -> int:
        return min(self.curve_images or self.total, self.total)

    @property
    def budget_indices(self) -> list[int]:
        """The budget axis's images: the first ``budget_images`` other than the paper's target image."""
        return attacked_images(self.total, "single", PAPER_TARGET)[: self.budget_images] if self.budget_images else []

    def input_files(self, backbone: str | None = None) -> list[InputFile]:
        """The weights files of the studies' models (or of ``backbone``), then the images' label files
        (``classes.txt``, the label map), by content: a replaced checkpoint or class list is another
        study (:mod:`segattack.study.inputs`); read once per config object."""
        key = (tuple(self.backbones), self.weights, self.images, self.label_map)
        cached = self.__dict__.get("_inputs")
        if cached is None or cached[0] != key:
            files = {b: fingerprint(weights_files(b, self.weights_for(b))) for b in self.backbones}
            labels = fingerprint(data_files(self.images, self.label_map), data_root(self.images))
            cached = (key, files, labels)
            self.__dict__["_inputs"] = cached
        files = cached[1]
        return (
            list(files[backbone]) if backbone is not None else [f for b in self.backbones for f in files[b]] + cached[2]
        )

    def digest(self) -> str:
        return digest(self, self.input_files())

    @property
    def numerics(self) -> Numerics:
        return Numerics(self.threads, self.deterministic)

    def model_key(self, backbone: str) -> ModelKey:
        """The cache key of ``backbone``'s model (NHWC, folded BN)."""
        content = ",".join(f.sha256 for f in self.input_files(backbone)) if backbone in self.backbones else ""
        return ModelKey(backbone, self.weights_for(backbone), self.device, True, True, content=content)
