"""``segattack evaluate``: a model's clean and robust scores under the strongest attacks, in units.

:class:`EvalConfig` holds everything that determines one model's numbers; its units
(:func:`unit_names`) are ``clean/SHARD``, ``ATTACK/EPS/SHARD`` (a budget attack at the radius
``eps[EPS]``) and ``ATTACK/min/SHARD`` (a minimal-norm attack's own search), each a pure function
of the config (:func:`compute_unit`), so the grid runs every model x attack x eps x shard as one
Dask task (:class:`segattack.study.evalrun.EvalJob`), resumably, under one progress bar. Once a model's
units are in, the readings of :mod:`segattack.evaluation.robustness` are assembled into ``evaluation.json``
(:mod:`segattack.study.evalassemble`, :mod:`segattack.study.evalrecord`).
"""

from __future__ import annotations

import hashlib
import inspect
import re
import time
import typing
from dataclasses import dataclass, field
from typing import Any

import torch

from segattack.attacks import ATTACKS
from segattack.data.sets import MIN_SIDE, ImageError, Resize
from segattack.data.targets import scheme_target, target_sources
from segattack.evaluation.budget import smallest_budget
from segattack.evaluation.robustness import BREAK_SHARE, untargeted_success
from segattack.metrics import changed_pixels, confusion_matrix
from segattack.models.backbones import BACKBONES
from segattack.models.classcheck import check_classes
from segattack.models.classcheck import model_classes as loaded_classes
from segattack.models.wrapper import SegmentationModel
from segattack.study.cache import ImageSetKey, cached_model, clean_prediction, warm_up
from segattack.study.config import RunConfig, coerce_fields, digest
from segattack.study.numerics import DEFAULT_DETERMINISTIC, DEFAULT_THREADS, numerics
from segattack.study.runner import check_model, count_images, image_size, run_images, shard_ranges
from segattack.util.params import ParameterError

LINF_EPS = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255)  # SEA's and the field's L-inf radii
L2_EPS = (0.25, 0.5, 1.0, 2.0)  # L2 radii in [0,1] pixels (the minimal-norm literature's range)
DEFAULT_ATTACKS = ("sea", "apgd", "pgd", "segpgd", "cospgd", "fmn")  # the strongest set, then the smallest eps
DEFAULT_MODELS = tuple(BACKBONES)  # the two embedded backbones
DEFAULT_STEPS = 20  # per attack (SEA: per member, 3 members); SEA's own budget is 300 (see the README)
TARGETED = ("none", "single", "roll")  # or fixed:CLASS | remove:CLASS
EVAL_DOCUMENT = "evaluation.json"


class Unit(typing.NamedTuple):
    """A unit's name read back: ``clean``, a budget attack at radius index ``eps``, or a minimal-norm run."""

    attack: str  # "clean" for the clean unit
    eps: int | None  # index into EvalConfig.eps; None for clean and minimal-norm units
    shard: int


def parse_unit(name: str) -> Unit:
    parts = name.split("/")
    if parts[0] == "clean":
        return Unit("clean", None, int(parts[1]))
    return Unit(parts[0], None if parts[1] == "min" else int(parts[1]), int(parts[2]))


@dataclass
class EvalConfig:
    """Everything that determines one model's evaluation (hashed to skip finished units)."""

    model: str = "mobilenet_v3_large"
    weights: str = "auto"
    images: str = "scenes"
    label_map: str = ""
    num_images: int = 4  # the default run: 2 embedded backbones x 4 scenes within 10 min on 2 cores (README)
    size: int = 0
    resize: Resize = "crop"
    window: str = ""
    batch: int = 4
    steps: int = DEFAULT_STEPS
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    eps: list[float] = field(default_factory=list)  # []: the norm's default radii
    norm: str = "linf"
    targeted: str = "none"
    target_index: int = 1
    break_share: float = BREAK_SHARE
    seed: int = 0
    device: str = "cpu"
    threads: int = DEFAULT_THREADS
    deterministic: bool = DEFAULT_DETERMINISTIC
    save_images: int = 4  # images whose adversarial examples are kept for the report

    def __post_init__(self) -> None:
        coerce_fields(self)
        if self.norm not in ("linf", "l2"):
            raise ParameterError(f"norm must be linf or l2, got {self.norm!r}")
        self.eps = list(self.eps) or list(LINF_EPS if self.norm == "linf" else L2_EPS)
        if any(not 0 < e <= (1 if self.norm == "linf" else 1e3) for e in self.eps):
            raise ParameterError(f"eps must be radii in [0,1] pixels (e.g. 4/255), got {self.eps}")
        if sorted(set(self.eps)) != self.eps:
            self.eps = sorted(set(self.eps))
        if not 0 < self.break_share <= 1:
            raise ParameterError(f"break_share must be in (0, 1], got {self.break_share}")
        if not self.attacks:
            raise ParameterError("attacks: name at least one attack")
        self.attacks = [self._attack(a) for a in dict.fromkeys(self.attacks)]
        self.run_config(self.attacks[0])  # model, images, label map, window, target scheme: checked now

    def _attack(self, name: str) -> str:
        try:
            spec = ATTACKS.check(name)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        keywords = inspect.signature(spec.fn).parameters
        if spec.kind != "minimal_norm" and spec.budget is None:
            raise ParameterError(f"attack {spec.name} has no radius to set (no budget rule), so it cannot be evaluated")
        if "targeted" not in keywords and self.targeted == "none":
            raise ParameterError(f"attack {spec.name} has no untargeted form; use --targeted or another attack")
        if self.norm == "l2" and "norm" not in keywords and "mode" not in keywords:
            raise ParameterError(f"attack {spec.name} has no L2 form")
        return spec.name

    def run_config(self, attack: str) -> RunConfig:
        """The RunConfig of one attack on this model (its checks are the run's: model spec, images,
        label map, window, target scheme)."""
        return RunConfig(
            backbone=self.model,
            attack=attack,
            weights=self.weights,
            images=self.images,
            label_map=self.label_map,
            num_images=self.num_images,
            size=self.size,
            resize=self.resize,
            window=self.window,
            batch=self.batch,
            steps=self.steps,
            target_scheme="single" if self.targeted == "none" else self.targeted,
            target_index=self.target_index,
            seed=self.seed,
            device=self.device,
            threads=self.threads,
            deterministic=self.deterministic,
            save_images=0,
        )

    @property
    def name(self) -> str:
        """The model's folder name in DIR: its spec with path characters as ``_``."""
        return re.sub(r"[^A-Za-z0-9_.]+", "_", self.model).strip("_")

    def attack_kwargs(self, attack: str, eps: float | None) -> dict[str, Any]:
        """An attack's keywords at radius ``eps`` (None: a minimal-norm attack's own), in this norm and mode."""
        spec = ATTACKS[attack]
        keywords = inspect.signature(spec.fn).parameters
        kwargs = {**spec.paper_params(self.model)}
        if eps is not None:
            kwargs.update(spec.budget_params(eps, self.steps, self.model))
        if "targeted" in keywords:
            kwargs["targeted"] = self.targeted != "none"
        if "norm" in keywords:
            kwargs["norm"] = self.norm
        elif "mode" in keywords:
            kwargs["mode"] = self.norm
        kwargs.pop("steps", None)
        return kwargs

    def digest(self) -> str:
        return digest(self)


def weights_sha256(model: SegmentationModel) -> str:
    """A hash of the loaded network's tensors in order (what ran, whatever file it came from)."""
    h = hashlib.sha256()
    for name, tensor in model.net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


class _Inputs(typing.NamedTuple):
    indices: list[int]
    names: list[str]
    images: list[torch.Tensor]
    truth: list[torch.Tensor]
    clean: list[torch.Tensor]
    labels: list[torch.Tensor]  # what the attack reads: the truth (untargeted) or the target masks


def _inputs(cfg: EvalConfig, model: SegmentationModel, shard: int) -> _Inputs:
    run = cfg.run_config(cfg.attacks[0])
    size = image_size(run, model)
    images_set = run_images(run, size)
    check_classes(loaded_classes(model, size, cfg.model), images_set.labels, cfg.model)
    total = images_set.select(cfg.num_images)
    indices = list(shard_ranges(total, cfg.batch)[shard])
    loaded = images_set.load(indices)
    if loaded.truth is None:
        raise ValueError(f"{cfg.images} has no ground truth; evaluate needs masks")
    key = ImageSetKey(run.images, size, run.resize, run.seed)
    device = torch.device(cfg.device)
    clean = {i: clean_prediction(run.model_key, key, i, run.numerics).long().to(device) for i in indices}
    truth = [t.to(device) for t in loaded.truth]
    if cfg.targeted == "none":
        labels = truth
    else:
        sources = target_sources(indices, total, run.target_scheme, run.target_index)
        masks = {
            s: clean[s] if s in clean else clean_prediction(run.model_key, key, s, run.numerics).long() for s in sources
        }
        labels = [scheme_target(masks[s].to(device), run.target_scheme, images_set.labels) for s in sources]
    images = [x.to(device) for x in loaded.images]
    return _Inputs(indices, loaded.names, images, truth, [clean[i] for i in indices], labels)


def _groups(images: list[torch.Tensor]) -> list[list[int]]:
    """Same-shape images attacked together."""
    out: dict[tuple[int, ...], list[int]] = {}
    for p, x in enumerate(images):
        out.setdefault(tuple(x.shape), []).append(p)
    return list(out.values())


def compute_unit(cfg: EvalConfig, unit: str) -> dict[str, Any]:
    """One unit's record (plain tensors and numbers): what :func:`segattack.study.evalassemble.assemble` reads."""
    run = cfg.run_config(cfg.attacks[0])
    with numerics(run.numerics):
        model = cached_model(run.model_key)
        which = parse_unit(unit)
        inp = _inputs(cfg, model, which.shard)
        n = len(model_classes(cfg))
        keep = [p for p, i in enumerate(inp.indices) if i < cfg.save_images]
        if which.attack == "clean":
            preds = inp.clean
        else:
            preds, extra = _attack(cfg, model, inp, which)
        conf = torch.stack([confusion_matrix(p[None], t[None], n)[0] for p, t in zip(preds, inp.truth)]).cpu()
        record: dict[str, Any] = {"indices": inp.indices, "names": inp.names, "conf": conf}
        if cfg.targeted != "none":
            todo = [changed_pixels(t[None], c[None])[0] for t, c in zip(inp.labels, inp.clean)]
            record["todo"] = torch.tensor([int(m.sum()) for m in todo])
            record["hits"] = torch.tensor([int(((p == t) & m).sum()) for p, t, m in zip(preds, inp.labels, todo)])
            record["conf_target"] = torch.stack(
                [confusion_matrix(p[None], t[None], n)[0] for p, t in zip(preds, inp.labels)]
            ).cpu()
        record["preds"] = [preds[p].to(torch.uint8).cpu() for p in keep]
        if which.attack == "clean":
            record["images"] = [_u8(inp.images[p]) for p in keep]
            record["truth"] = [inp.truth[p].to(torch.uint8).cpu() for p in keep]
            record["weights"] = model.info.as_dict() | {"sha256": weights_sha256(model) if which.shard == 0 else ""}
        else:
            adv = extra.pop("adv_all")
            record.update(extra, adv=[adv[p] for p in keep])
        return record


def model_classes(cfg: EvalConfig) -> tuple[str, ...]:
    return cfg.run_config(cfg.attacks[0]).labels.names


def _attack(
    cfg: EvalConfig, model: SegmentationModel, inp: _Inputs, which: Unit
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Run one attack over a shard's images; the predictions on its adversarial images and its record."""
    spec = ATTACKS[which.attack]
    eps = None if which.eps is None else cfg.eps[which.eps]
    kwargs = cfg.attack_kwargs(which.attack, eps)
    count = len(inp.images)
    preds: list[torch.Tensor] = [torch.empty(0)] * count
    adv: list[torch.Tensor] = [torch.empty(0)] * count
    passes = torch.zeros(count, dtype=torch.long)
    success = torch.zeros(count, dtype=torch.float64)
    linf = torch.full((count,), float("inf"), dtype=torch.float64)
    losses: list[torch.Tensor] = []
    seconds = 0.0
    for group in _groups(inp.images):
        x = torch.stack([inp.images[p] for p in group])
        y = torch.stack([inp.labels[p] for p in group])
        if "generator" in inspect.signature(spec.fn).parameters:
            kwargs["generator"] = torch.Generator().manual_seed(cfg.seed * 1_000_003 + which.shard)
        if eps is None:
            params = {k: v for k, v in kwargs.items() if k not in ("targeted",)}
            started = time.perf_counter()
            budgets = smallest_budget(
                model, x, y, which.attack, targeted=cfg.targeted != "none", steps=cfg.steps,
                adv_threshold=cfg.break_share, backbone=cfg.model, params=params,
            )  # fmt: skip
            seconds += time.perf_counter() - started
            found = budgets.linf if cfg.norm == "linf" else budgets.l2
            for j, p in enumerate(group):
                linf[p], passes[p] = found[j], budgets.passes[j]
                success[p] = float(bool(torch.isfinite(found[j])))
                preds[p], adv[p] = inp.clean[p], _u8(inp.images[p])  # its own run's image is not the budget's
            continue
        warm_up(model, spec, x, y, kwargs)
        started = time.perf_counter()
        result = spec(model, x, y, steps=cfg.steps, **kwargs)
        seconds += time.perf_counter() - started
        its = torch.as_tensor(result.params.get("iterations", [cfg.steps] * len(group)), dtype=torch.long)
        losses.append(result.history["loss"].float().cpu())
        for j, p in enumerate(group):
            preds[p], adv[p], passes[p] = result.pred[j].long(), _u8(result.adv[j]), its[j]
    if eps is not None:
        conf = torch.stack(
            [confusion_matrix(p[None], t[None], len(model_classes(cfg)))[0] for p, t in zip(preds, inp.truth)]
        )
        if cfg.targeted == "none":
            success = untargeted_success(conf.cpu())
        else:
            for p in range(count):
                todo = changed_pixels(inp.labels[p][None], inp.clean[p][None])[0]
                hit = ((preds[p] == inp.labels[p]) & todo).sum()
                success[p] = float(hit) / max(1, int(todo.sum()))
    loss = torch.cat(losses, 1) if losses else torch.zeros(0, count)
    extra = {"passes": passes, "seconds": seconds, "success": success, "smallest": linf, "loss": loss, "adv_all": adv}
    return preds, extra


def unit_names(cfg: EvalConfig) -> list[str]:
    """Every unit of ``cfg``'s evaluation, in order; the images counted, their headers read and their
    ground truth required, so bad input is refused before any work."""
    run = cfg.run_config(cfg.attacks[0])
    if not run_images(run, max(run.size, MIN_SIDE)).has_truth:
        raise ImageError(f"{run.images} has no ground truth: the evaluation scores predictions against masks")
    check_model(run)  # the model's classes against the images', before any work
    shards = len(shard_ranges(count_images(run), cfg.batch))
    units = [f"clean/{k:05d}" for k in range(shards)]
    for attack in cfg.attacks:
        if ATTACKS[attack].kind == "minimal_norm":
            units += [f"{attack}/min/{k:05d}" for k in range(shards)]
        else:
            units += [f"{attack}/{e:02d}/{k:05d}" for e in range(len(cfg.eps)) for k in range(shards)]
    return units


def load_checked(cfg: EvalConfig) -> None:
    """Load the model once (in this process's cache) and check its classes against the images'."""
    check_model(cfg.run_config(cfg.attacks[0]))


def eval_configs(models: list[str], **settings: Any) -> list[EvalConfig]:
    """One checked config per model (the same settings for each); two models sharing a folder name
    are refused."""
    configs = [EvalConfig(model=m, **settings) for m in (models or list(DEFAULT_MODELS))]
    names = [c.name for c in configs]
    for name in names:
        if names.count(name) > 1:
            raise ParameterError(f"two models would share the folder {name!r}; name each model once")
    return configs
