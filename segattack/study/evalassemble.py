"""An evaluation's unit records assembled into its :class:`~segattack.study.evalrecord.Evaluation`.

Every score is read from confusion counts pooled over the whole dataset
(:func:`segattack.evaluation.robustness.pooled_scores`); the worst case is taken per image over the budget
attacks at each radius (:func:`segattack.evaluation.robustness.worst_case`); smallest breaking radii come from
the radius grid (budget attacks) or from the minimal-norm attacks' own search.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from segattack import __version__
from segattack.attacks import ATTACKS
from segattack.engine.store import atomic_save
from segattack.evaluation.robustness import (
    converged,
    image_accuracy,
    objective_change,
    pooled_scores,
    robust_share,
    smallest_breaking,
    targeted_scores,
    untargeted_success,
    worst_case,
)
from segattack.study.evalrecord import (
    EVALUATION_VERSION,
    AttackCard,
    Cell,
    Evaluation,
    ModelCard,
    Protocol,
    Smallest,
    Worst,
)
from segattack.study.evaluate import EvalConfig, model_classes, parse_unit
from segattack.util.params import RUN_OWNED

Units = dict[str, dict[str, Any]]


def _cat(units: Units, prefix: str, key: str) -> torch.Tensor:
    """``key`` of every unit named ``prefix/SHARD``, in shard order, joined along images."""
    parts = [units[u][key] for u in sorted(units) if u.rsplit("/", 1)[0] == prefix]
    return torch.cat([torch.as_tensor(p) for p in parts])


def _floats(values: torch.Tensor) -> list[float | None]:
    return [None if not torch.isfinite(v) else float(v) for v in values.double()]


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """An attack's keywords as JSON values (anything else as its text)."""
    out = {}
    for key, value in params.items():
        try:
            json.dumps(value, allow_nan=False)
            out[key] = value
        except (TypeError, ValueError):
            out[key] = repr(value)
    return out


def _defaults(fn: Any) -> dict[str, Any]:
    """An attack function's keyword defaults (its losses, schedules, ...), the run's own keywords left out."""
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and name not in RUN_OWNED
        and p.default is not inspect.Parameter.empty
    }


def protocol(cfg: EvalConfig) -> Protocol:
    """The protocol card of ``cfg``: each attack with its keywords and radius schedule, and the settings."""
    cards = []
    for name in cfg.attacks:
        spec = ATTACKS[name]
        minimal = spec.kind == "minimal_norm"
        given = cfg.attack_kwargs(name, None if minimal else cfg.eps[0])
        params = {k: v for k, v in {**_defaults(spec.fn), **given}.items() if k != "eps"}
        radius = (
            f"its own search for the smallest {cfg.norm} radius breaking {cfg.break_share:.0%} of the pixels"
            if minimal
            else f"each radius of eps ({cfg.norm}), projected"
        )
        cards.append(AttackCard(name, spec.label, spec.kind, cfg.steps, _jsonable(params), radius))
    run = cfg.run_config(cfg.attacks[0])
    return Protocol(
        attacks=cards,
        norm=cfg.norm,  # type: ignore[arg-type]
        eps=list(cfg.eps),
        targeted=run.target_scheme if cfg.targeted != "none" else "none",
        images=run.images,
        num_images=cfg.num_images,
        size=cfg.size,
        resize=cfg.resize,
        window=cfg.window,
        label_map=cfg.label_map,
        labels=run.labels.name,
        break_share=cfg.break_share,
        seed=cfg.seed,
        device=cfg.device,
        threads=cfg.threads,
        deterministic=cfg.deterministic,
        segattack_version=__version__,
    )


def _cell(cfg: EvalConfig, units: Units, attack: str, prefix: str, eps: float | None) -> tuple[Cell, torch.Tensor]:
    conf = _cat(units, prefix, "conf")
    targeted = None
    if cfg.targeted != "none":
        targeted = targeted_scores(
            _cat(units, prefix, "hits"), _cat(units, prefix, "todo"), _cat(units, prefix, "conf_target")
        )
    names = [u for u in units if u.rsplit("/", 1)[0] == prefix]
    n = len(conf)
    seconds = sum(float(units[u]["seconds"]) for u in names)
    losses = [units[u]["loss"] for u in sorted(names) if units[u]["loss"].numel()]
    change = max((objective_change(loss) for loss in losses), default=0.0)
    cell = Cell(
        attack=attack,
        eps=eps,
        scores=None if eps is None else pooled_scores(conf),
        targeted=None if eps is None else targeted,
        image_accuracy=[None] * n if eps is None else _floats(image_accuracy(conf)),
        success=[float(v) for v in _cat(units, prefix, "success")],
        passes_per_image=float(_cat(units, prefix, "passes").double().sum()) / n,
        seconds_per_image=seconds / n,
        converged=all(converged(loss) for loss in losses),
        objective_change=change,
    )
    return cell, conf


def assemble(cfg: EvalConfig, digest: str, units: Units) -> Evaluation:
    """Every reading of one model's evaluation from its unit records (unit name -> record)."""
    card = protocol(cfg)
    clean_conf = _cat(units, "clean", "conf")
    budget = [a for a in cfg.attacks if ATTACKS[a].kind != "minimal_norm"]
    cells: list[Cell] = []
    worst: list[Worst] = []
    success: dict[str, list[torch.Tensor]] = {a: [] for a in budget}
    for e, eps in enumerate(cfg.eps):
        confs = []
        for attack in budget:
            cell, conf = _cell(cfg, units, attack, f"{attack}/{e:02d}", eps)
            cells.append(cell)
            confs.append(conf)
            success[attack].append(torch.tensor(cell.success))
        if confs:
            choice, chosen = worst_case(torch.stack(confs))
            targeted = None
            if cfg.targeted != "none":
                hits = torch.stack([_cat(units, f"{a}/{e:02d}", "hits") for a in budget])
                todo = _cat(units, f"{budget[0]}/{e:02d}", "todo")
                conf_t = torch.stack([_cat(units, f"{a}/{e:02d}", "conf_target") for a in budget])
                pick = torch.arange(len(choice))
                targeted = targeted_scores(hits[choice, pick], todo, conf_t[choice, pick])
            worst.append(
                Worst(
                    eps,
                    pooled_scores(chosen),
                    targeted,
                    [budget[int(c)] for c in choice],
                    _floats(image_accuracy(chosen)),
                )
            )
    smallest: list[Smallest] = []
    if cfg.targeted == "none":
        broken_clean = untargeted_success(clean_conf) >= cfg.break_share
    else:  # the clean image is at none of the pixels that had to change
        broken_clean = torch.zeros(len(clean_conf), dtype=torch.bool)
    per_attack: list[torch.Tensor] = []
    for attack in cfg.attacks:
        if ATTACKS[attack].kind == "minimal_norm":
            cell, _ = _cell(cfg, units, attack, f"{attack}/min", None)
            cells.append(cell)
            found = _cat(units, f"{attack}/min", "smallest").double()
        else:
            found = smallest_breaking(torch.stack(success[attack]), cfg.eps, cfg.break_share)
            found = torch.where(broken_clean, 0.0, found)  # already broken without an attack
        per_attack.append(found)
        smallest.append(Smallest(attack, _floats(found), robust_share(found, cfg.eps)))
    overall = torch.stack(per_attack).amin(0)
    smallest.append(Smallest("worst", _floats(overall), robust_share(overall, cfg.eps)))
    weights = units["clean/00000"]["weights"]
    model = ModelCard(cfg.model, str(weights["source"]), str(weights["description"]), str(weights["sha256"]))
    return Evaluation(
        results_version=EVALUATION_VERSION,
        config_hash=digest,
        model=model,
        protocol=card,
        images=[str(n) for u in sorted(units) if u.startswith("clean/") for n in units[u]["names"]],
        class_names=list(model_classes(cfg)),
        clean=pooled_scores(clean_conf),
        cells=cells,
        worst=worst,
        smallest=smallest,
    )


def write_worst(cfg: EvalConfig, record: Evaluation, units: Units, path: Path) -> None:
    """The saved images at the largest radius, worst first: image, the worst case's adversarial
    image, the clean and adversarial predictions and the truth (uint8 tensors), for the report."""
    if not record.worst:
        atomic_save({"items": []}, path)
        return
    e = len(cfg.eps) - 1
    worst = record.worst[e]
    clean = [u for u in sorted(units) if u.startswith("clean/")]
    saved = [(units[u], units[u]["indices"][: len(units[u]["images"])]) for u in clean]
    items = []
    for rec, indices in saved:
        for j, index in enumerate(indices):
            attack = worst.attack[index]
            shard = parse_unit(next(u for u in clean if units[u] is rec)).shard
            adv_rec = units[f"{attack}/{e:02d}/{shard:05d}"]
            items.append(
                {
                    "index": index,
                    "name": record.images[index],
                    "attack": attack,
                    "accuracy": worst.image_accuracy[index],
                    "image": rec["images"][j],
                    "adv": adv_rec["adv"][j],
                    "clean_pred": rec["preds"][j],
                    "adv_pred": adv_rec["preds"][j],
                    "truth": rec["truth"][j],
                }
            )
    items.sort(key=lambda item: 2.0 if item["accuracy"] is None else item["accuracy"])
    atomic_save({"eps": cfg.eps[e], "items": items}, path)
