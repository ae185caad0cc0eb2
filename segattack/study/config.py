"""A run's configuration: every setting that determines its numbers, checked on construction.

:class:`RunConfig` is the one home of the run defaults: the CLI's options, the notebooks'
parameters and the profiles start from its field defaults. A RunConfig that exists is valid (a bad
value fails before any folder is touched), and :meth:`RunConfig.digest` names its results.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch

from segattack.attacks import ATTACKS, DEFAULT_ATTACK, AttackSpec
from segattack.data.classes import NUM_CLASSES
from segattack.data.labels import LabelMap, LabelSpace, read_label_map
from segattack.data.sets import MAX_SIDE, MIN_SIDE, RESIZES, Resize, resolve_source, source_labels
from segattack.data.targets import TARGET_SOURCES, check_scheme
from segattack.models.backbones import resolve_weights
from segattack.models.specs import check_weights, known_labels, resolve_spec
from segattack.models.wrapper import parse_window, window_boxes, wrap_model
from segattack.study.inputs import InputFile, data_files, data_root, fingerprint, weights_files
from segattack.study.numerics import DEFAULT_DETERMINISTIC, DEFAULT_THREADS, Numerics, check_threads
from segattack.util.params import ParameterError, check_attack_params, coerce, parse_literal

# The bounds of a run, checked before any work (inputs are bounded by data.MAX_SIDE).
MAX_SIZE = 4096  # a run's or the studies' image side: one 4096 px image already takes GBs of activations
MAX_LONG_SIDE = MAX_SIDE  # resize=shorter's longer output side (the aspect ratio scales it up)
MAX_SCENES = 100_000  # images of the endless synthetic scenes in one run or study
MAX_STEPS = 10_000  # a run's attack iterations: 10x the largest paper value (ASMA's 1,000); force=True passes
MAX_WINDOWS = 64  # sliding windows per image pass (Cityscapes' reference: 9 at 1024x2048); force=True passes
UNHASHED = ("force",)  # fields that never change a number: left out of the config hash
DEFAULT_SIZE = 520  # torchvision's evaluation size: what size=0 means for weights without their own
PROBE_STEPS = 2  # the steps of a parameter probe and a warm-up: the fewest every attack takes (pdpgd, alma_prox)


def check_bounds(prefix: str, size: int, images: str, num_images: int) -> None:
    """Refuse a size above :data:`MAX_SIZE` and more than :data:`MAX_SCENES` synthetic scenes."""
    if size > MAX_SIZE:
        raise ParameterError(f"{prefix}size must be <= {MAX_SIZE} px, got {size}")
    if images == "scenes" and num_images > MAX_SCENES:
        raise ParameterError(f"{prefix}num_images must be <= {MAX_SCENES:,} for the synthetic scenes, got {num_images}")


def check_work(steps: int, window: str, side: int, height: int | None = None) -> None:
    """Refuse more than :data:`MAX_STEPS` steps and more than :data:`MAX_WINDOWS` sliding windows per
    pass over a ``side`` px square (or a ``height`` x ``side`` image), naming ``force``: work that runs
    for days without a word is far more often a typo than a plan."""
    if steps > MAX_STEPS:
        raise ParameterError(
            f"steps must be <= {MAX_STEPS:,} (the largest paper value is 1,000), got {steps:,}; pass --force "
            f"(-p force=true, force=True) if you mean it"
        )
    sliding = parse_window(window)
    if sliding is not None:
        count = len(window_boxes(height or side, side, sliding))
        if count > MAX_WINDOWS:
            raise ParameterError(
                f"window {window} gives {count:,} windows per pass over a {height or side}x{side} px image, over "
                f"{MAX_WINDOWS}; use a larger window or a smaller size, or pass --force (-p force=true) if you "
                f"mean it"
            )


class ModelKey(NamedTuple):
    """What identifies a loaded model in a process's cache (:func:`segattack.study.cache.cached_model`)."""

    backbone: str
    weights: str
    device: str
    channels_last: bool
    fold_bn: bool
    window: str = ""  # sliding-window inference ("H" or "HxW"); "": the whole image
    content: str = ""  # the weights files' digests: a replaced checkpoint is another model


def digest(settings: Any, inputs: list[InputFile] | None = None) -> str:
    """A stable 16-hex-digit hash of a config dataclass and the content of its input files (how
    finished results are recognised: a replaced checkpoint or label map is another run)."""
    hashed = {k: v for k, v in asdict(settings).items() if k not in UNHASHED}
    blob = json.dumps(
        {**hashed, **({"input_files": [asdict(f) for f in inputs]} if inputs else {})},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dict_from_text(name: str, value: Any) -> Any:
    """``value``, or the dict its text writes (JSON or a Python literal: papermill's ``-p NAME '{...}'``
    passes text); text that writes no dict is refused with a message naming ``name``."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = parse_literal(value)
    if not isinstance(parsed, dict):
        raise ParameterError(
            f"{name} must be a dict such as {{'eps': 0.03}} or its JSON text '{{\"eps\": 0.03}}', got {value!r}"
        )
    return parsed


def coerce_fields(config: Any, prefix: str = "") -> None:
    """Convert every field of the dataclass ``config`` to its type hint, strictly (:func:`params.coerce`)."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        setattr(config, f.name, coerce(f"{prefix}{f.name}", getattr(config, f.name), hints[f.name]))


@dataclass
class RunConfig:
    """Everything that determines a run's numbers (hashed to skip finished runs and shards)."""

    backbone: str = "mobilenet_v3_large"  # a study backbone, or a model spec: torchvision:, hf:, smp:, module:
    attack: str = DEFAULT_ATTACK
    weights: str = "auto"  # auto | torchvision | embedded | a checkpoint path
    images: str = "scenes"
    label_map: str = ""  # a file of DATASET_CLASS -> MODEL_CLASS lines: the masks read in the model's classes
    num_images: int = 8  # 0: every image of a finite set (a folder, voc:, pairs:)
    size: int = 0  # 0: the embedded model's training size, else 520 (torchvision weights)
    resize: Resize = "crop"  # crop: centre square | shorter: shorter side to size | squash: both sides ([5])
    window: str = ""  # sliding-window inference, "H" or "HxW" px (Cityscapes' reference: 512x1024); "": whole image
    batch: int = 4  # images per shard, attacked together ([5]'s batch of 4)
    steps: int = 50
    target_scheme: str = "single"
    target_index: int = 1
    target_source: str = "prediction"  # prediction: the target image's clean prediction | truth: its ground truth
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # bf16 autocast for the attack's forward/backward passes (GPU path; CPU works too)
    channels_last: bool = True  # NHWC memory layout for the network (same numbers, faster)
    fold_bn: bool = True  # batch norms folded into the convolutions (same numbers, faster)
    save_images: int = 8  # adversarial tensors and PNGs are kept for the first this many images
    threads: int = DEFAULT_THREADS  # intra-op threads of the attack compute (float sums depend on it)
    deterministic: bool = DEFAULT_DETERMINISTIC  # torch's deterministic algorithms where it has them
    input_jitter: int = 0  # k > 0: every input value moved by 1 ulp, seeded by k (a stability repeat)
    attack_params: dict[str, Any] = field(default_factory=dict)
    force: bool = False  # accept steps over MAX_STEPS and windows over MAX_WINDOWS (not hashed: no number changes)

    def __post_init__(self) -> None:
        self.attack_params = dict_from_text("attack_params", self.attack_params)
        coerce_fields(self)
        try:
            self.backbone = resolve_spec(self.backbone)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        try:  # a registered name, or a family's such as ensemble:pgd,segpgd (kept in its canonical form)
            self.attack = ATTACKS.check(self.attack).name
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        for name, allowed in (
            ("resize", RESIZES),
            ("target_source", TARGET_SOURCES),
        ):
            if getattr(self, name) not in allowed:
                raise ParameterError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name, low in (
            ("num_images", 0),
            ("batch", 1),
            ("steps", 1),
            ("target_index", 0),
            ("seed", 0),
            ("save_images", 0),
            ("input_jitter", 0),
        ):
            if getattr(self, name) < low:
                raise ParameterError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.size and self.size < MIN_SIDE:
            raise ParameterError(f"size must be 0 (the weights' own) or >= {MIN_SIDE} px, got {self.size}")
        if self.seed >= 2**63:
            raise ParameterError(f"seed must be < 2**63, got {self.seed}")
        check_bounds("", self.size, self.images, self.num_images)
        try:  # paths are made absolute before hashing and before any worker sees them
            check_weights(self.backbone, str(self.weights))
            self.weights = resolve_weights(self.weights)
            self.images = resolve_source(self.images)
            check_threads(self.threads)
            parse_window(self.window)
            torch.device(self.device)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        except RuntimeError:
            raise ParameterError(f"unknown device {self.device!r}; use cpu, cuda or cuda:N") from None
        if not self.force:  # resize=shorter's own sides are checked once the files are listed (runner)
            check_work(self.steps, self.window, self.size or DEFAULT_SIZE)
        try:  # the model's classes and the images' (known from the specs where they say)
            if self.label_map:
                self.label_map = str(Path(self.label_map).expanduser().resolve())
            data_labels = self.labels
            model_labels = known_labels(self.backbone)
            if model_labels is not None:
                model_labels.check_matches(data_labels, f"model {self.backbone}", f"the images {self.images}")
            self.target_scheme = check_scheme(self.target_scheme, data_labels)
        except (ValueError, OSError) as exc:
            raise ParameterError(str(exc)) from None
        self.attack_params = check_attack_params(self.attack, self.spec.fn, self.attack_params)
        _probe(self)

    @property
    def spec(self) -> AttackSpec:
        return ATTACKS[self.attack]

    def label_mapping(self) -> LabelMap | None:
        """The run's label map (``label_map`` read from the images' classes into the model's), if any."""
        if not self.label_map:
            return None
        model_labels = known_labels(self.backbone)
        if model_labels is None:
            raise ValueError(
                f"label_map needs the model's class names from its spec (a study backbone, torchvision:, or hf: "
                f"with a named id2label); {self.backbone} says them only once loaded"
            )
        return read_label_map(self.label_map, source_labels(self.images), model_labels)

    @property
    def labels(self) -> LabelSpace:
        """The run's label space: the images' classes, or the model's where a label map reads them so."""
        mapping = self.label_mapping()
        return source_labels(self.images) if mapping is None else mapping.target

    @property
    def name(self) -> str:
        """The run's folder name in a report: ``BACKBONE-ATTACK`` (a model spec's path characters as ``_``,
        a family name's ``:`` and ``,`` as ``-``)."""
        return f"{re.sub(r'[^A-Za-z0-9_.]+', '_', self.backbone).strip('_')}-{re.sub(r'[:,]', '-', self.attack)}"

    @property
    def model_key(self) -> ModelKey:
        content = ",".join(f.sha256 for f in self.input_files() if f.role not in ("classes.txt", "label map"))
        return ModelKey(
            self.backbone, self.weights, self.device, self.channels_last, self.fold_bn, self.window, content
        )

    @property
    def numerics(self) -> Numerics:
        return Numerics(self.threads, self.deterministic)

    def attack_kwargs(self) -> dict[str, Any]:
        """The attack's keywords: its paper values for this backbone, then the run's own."""
        return {**self.spec.paper_params(self.backbone), **self.attack_params}

    def input_files(self) -> list[InputFile]:
        """The files that change this run's numbers, by content (:mod:`segattack.inputs`); read once
        per config object, so the parent and its workers hash one state of them."""
        key = (self.backbone, self.weights, self.images, self.label_map)
        cached = self.__dict__.get("_inputs")
        if cached is None or cached[0] != key:
            files = weights_files(self.backbone, self.weights) + data_files(self.images, self.label_map)
            cached = (key, fingerprint(files, data_root(self.images)))
            self.__dict__["_inputs"] = cached
        return list(cached[1])

    def digest(self) -> str:
        return digest(self, self.input_files())


def _probe(cfg: RunConfig) -> None:
    """The attack on a tiny dummy batch for ``min(steps, PROBE_STEPS)`` steps: the attack's own checks
    (eps > 0, known modes, the fewest steps it takes, ...) refuse a bad value here, before any model or
    image is loaded; an attack that needs two steps is probed with two, never refused for the probe's."""
    probe = wrap_model(torch.nn.Conv2d(3, NUM_CLASSES, 1), "probe")
    try:
        with torch.no_grad(), torch.enable_grad():
            cfg.spec(
                probe,
                torch.full((1, 3, MIN_SIDE, MIN_SIDE), 0.5),
                torch.zeros(1, MIN_SIDE, MIN_SIDE, dtype=torch.long),
                steps=min(cfg.steps, PROBE_STEPS),
                **cfg.attack_kwargs(),
            )
    except (ValueError, TypeError) as exc:
        raise ParameterError(str(exc)) from None
    except ArithmeticError:  # diverging on a dummy model says nothing about the real one
        pass
