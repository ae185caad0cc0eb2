"""The report's profiles, and the jobs a profile plans: its backbone x attack runs and its studies.

A profile sets run parameters (any :class:`~segattack.study.config.RunConfig` field, the rest keeping
the config's defaults) and the studies' (``studies``: none | default | full; ``studies_*``: any
:class:`~segattack.study.studies.StudyConfig` field). ``steps`` may name an iteration plan instead of a
number: ``"paper"`` gives every attack its registered ``paper_steps`` ([5]'s 15 for PGD, adv_lib's
1,000 for ASMA), ``"default"`` its ``default_steps`` (ASMA 300).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from segattack.attacks import ATTACKS
from segattack.engine.grid import run_grid
from segattack.engine.jobs import Job, TaskState
from segattack.engine.store import output_folder
from segattack.models.backbones import BACKBONES
from segattack.study.config import RunConfig
from segattack.study.runner import RepeatJob, RunJob, check_model
from segattack.study.studies import LEVELS, StudiesJob, StudyConfig
from segattack.util.params import ParameterError, coerce

BACKBONE_ORDER = ("mobilenet_v3_large", "resnet50")

PROFILES: dict[str, dict[str, Any]] = {
    # Embedded weights on their held-out scenes at their training size: CPU-friendly.
    "default": {
        "weights": "embedded",
        "images": "scenes",
        "num_images": 8,
        "size": 0,
        "steps": "default",
        "stability": "combined",
        "stability_images": 4,
        "studies": "default",
        "studies_images": "scenes",
        "studies_num_images": 16,
        "studies_size": 96,
    },
    # The paper: torchvision's COCO weights, the shipped photos squashed to 520 x 520 as [5] resizes, [5]'s
    # batch of 4, targets from image 1's clean prediction (the photos have no ground truth; with voc:PATH,
    # -p target_source=truth is [5]'s target). A GPU or a patient CPU: -p studies=none trims the studies.
    "paper": {
        "weights": "torchvision",
        "images": "photos",
        "num_images": 4,
        "size": 520,
        "resize": "squash",
        "target_source": "prediction",
        "steps": "paper",
        "stability": "each",
        "stability_images": 4,
        "studies": "default",
        "studies_images": "photos",
        "studies_num_images": 4,
        "studies_size": 520,
    },
    # Smoke test for CI: two small images, two iterations.
    "tiny": {
        "weights": "embedded",
        "images": "scenes",
        "num_images": 2,
        "size": 64,
        "steps": 2,
        "stability": "off",
        "studies": "default",
        "studies_images": "scenes",
        "studies_num_images": 2,
        "studies_size": 48,
        "studies_steps": 2,
        "studies_curve_steps": 1,
        "studies_curve_images": 2,
        "studies_budget_images": 1,
        "studies_budget_steps": 1,
        "studies_budget_rounds": 2,
        "studies_budget_run_steps": 2,
    },
}


def paper_attacks() -> tuple[str, ...]:
    """The grid's default attacks: the paper's Table 1 attacks in the registry."""
    return ATTACKS.in_paper()


def _settings(profile: str, overrides: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run parameters, studies settings) of ``profile`` with ``overrides``, unknown names refused."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    merged: dict[str, Any] = {**PROFILES[profile], **(overrides or {})}
    run = {k: v for k, v in merged.items() if not k.startswith(("studies", "stability"))}
    study = {k.removeprefix("studies_"): v for k, v in merged.items() if k.startswith("studies_")}
    study["level"] = merged.get("studies", "none")
    for name in ("backbone", "attack"):  # names become folder names: they come from --backbones/--attacks
        if name in run:
            raise ParameterError(f"-p {name}=... is not a grid parameter; use --{name}s")
    unknown = sorted(set(run) - set(RunConfig.__dataclass_fields__))
    if unknown:
        raise ParameterError(f"unknown run parameters: {', '.join(unknown)}")
    return run, study


def grid_configs(
    profile: str,
    overrides: dict[str, Any] | None = None,
    backbones: tuple[str, ...] = BACKBONE_ORDER,
    attacks: tuple[str, ...] | None = None,
) -> list[RunConfig]:
    """The runs of ``profile`` (with ``overrides`` applied to every run), in report order, each
    checked on construction; duplicate names run once. ``attacks`` defaults to the paper's."""
    settings, _ = _settings(profile, overrides)
    attacks = paper_attacks() if attacks is None else attacks
    try:  # models are checked by RunConfig, which reads any spec
        attacks = tuple(ATTACKS.check(a).name for a in attacks)
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    steps = settings.pop("steps", RunConfig.steps)

    def steps_of(attack: str) -> Any:
        return ATTACKS[attack].steps_for(steps) if steps in ("paper", "default") else steps

    def settings_of(model: str) -> dict[str, Any]:
        """A model spec takes its own weights (hf:, smp:, module:) or its published ones (torchvision:),
        not the profile's: the embedded weights exist for the study's backbones only. A ``weights``
        override applies to every model (and is checked against each)."""
        own = model not in BACKBONES and "weights" not in (overrides or {})
        return {**settings, "weights": "auto"} if own else settings

    return [
        RunConfig(backbone=b, attack=a, **settings_of(b), steps=steps_of(a))
        for b in dict.fromkeys(backbones)
        for a in dict.fromkeys(attacks)
    ]


def study_config(profile: str, overrides: dict[str, Any] | None = None) -> StudyConfig | None:
    """The studies' settings of ``profile`` (None when its ``studies`` level is ``none``; the
    settings are checked all the same); the run parameters ``weights``, ``device``, ``seed`` and the numerics
    apply to the studies too."""
    run, study = _settings(profile, overrides)
    level = study.pop("level")
    if level not in (*LEVELS, "none"):
        raise ParameterError(f"unknown studies {level!r}; choose one of none, {', '.join(LEVELS)}")
    shared: dict[str, Any] = {k: run[k] for k in ("weights", "device", "seed", "threads", "deterministic") if k in run}
    unknown = sorted(set(study) - set(StudyConfig.__dataclass_fields__))
    if unknown:
        raise ParameterError(f"unknown studies settings: {', '.join('studies_' + k for k in unknown)}")
    if run.get("steps") in ("paper", "default"):  # ASMA's budget run: its Table 1 iterations of this plan
        shared["budget_plan"] = run["steps"]
    settings: dict[str, Any] = {**LEVELS[level if level in LEVELS else "default"], **shared, **study}
    config = StudyConfig(**settings)
    return None if level == "none" else config


Stability = Literal["off", "combined", "each"]
STABILITY: tuple[str, ...] = ("off", "combined", "each")


def stability_repeats(profile: str, overrides: dict[str, Any] | None = None) -> tuple[Stability, int]:
    """The stability repeats of a profile: ``stability`` (off; combined: one repeat under both
    perturbations at once; each: one repeat per perturbation) and how many images they attack."""
    merged: dict[str, Any] = {**PROFILES[profile], **(overrides or {})}
    unknown = sorted(k for k in merged if k.startswith("stability") and k not in ("stability", "stability_images"))
    if unknown:
        raise ParameterError(f"unknown stability settings: {', '.join(unknown)}")
    mode = coerce("stability", merged.get("stability", "off"), Stability)
    images = coerce("stability_images", merged.get("stability_images", 4), int)
    if images < 1:
        raise ParameterError(f"stability_images must be >= 1, got {images}")
    return mode, images


def repeats(cfg: RunConfig, images: int, mode: Stability = "each") -> dict[str, RunConfig]:
    """The run ``cfg`` repeated on its first ``images`` images (rounded up to whole batches) under
    numerical perturbations: another intra-op thread count, and every input value jittered by one
    ulp, one repeat each (``each``) or both in one repeat (``combined``, half the cost). The first
    images keep their targets and their batches ([5]'s batch-mean loss couples a batch's images), so
    each repeated image is compared with the same image of the run."""
    count = images if cfg.target_scheme != "single" else max(images, cfg.target_index + 1)
    count = -(-count // cfg.batch) * cfg.batch
    if cfg.num_images:
        count = min(count, cfg.num_images)
    base: dict[str, Any] = {"num_images": count, "save_images": 0}
    threads: dict[str, Any] = {"threads": 2 if cfg.threads == 1 else 1}
    if mode == "combined":
        return {"threads+jitter": replace(cfg, **base, **threads, input_jitter=1)}
    if mode == "each":
        return {"threads": replace(cfg, **base, **threads), "jitter": replace(cfg, **base, input_jitter=1)}
    return {}


def plan(
    profile: str,
    out_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    backbones: tuple[str, ...] = BACKBONE_ORDER,
    attacks: tuple[str, ...] | None = None,
    studies: str | None = None,
) -> list[Job]:
    """The jobs of a report in ``out_dir``: ``runs/BACKBONE-ATTACK`` per run, then ``studies`` (whose
    level ``studies`` overrides the profile's). Every parameter and input is checked here, before
    any folder is written."""
    overrides = {**(overrides or {}), **({"studies": studies} if studies else {})}
    configs = grid_configs(profile, overrides, backbones, attacks)
    study = study_config(profile, overrides)
    out = Path(out_dir).expanduser().resolve()
    jobs: list[Job] = [RunJob(cfg, out / "runs" / cfg.name, profile) for cfg in configs]
    mode, images = stability_repeats(profile, overrides)  # repeats under other numerics, as shards of their own
    jobs += [
        RepeatJob(variant, out / "stability" / f"{cfg.name}-{name}")
        for cfg in configs
        for name, variant in repeats(cfg, images, mode).items()
    ]
    if study is not None:
        jobs.append(StudiesJob(study, out / "studies"))
    for cfg in {(c.backbone, c.size, c.window, c.labels.names): c for c in configs}.values():
        check_model(cfg)  # every spec resolved, its classes read and checked, before any cluster starts
    for job in jobs:
        job.units()  # lists every image set and checks its files' headers
    return jobs


def run_profile(
    profile: str,
    out_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    backbones: tuple[str, ...] = BACKBONE_ORDER,
    attacks: tuple[str, ...] | None = None,
    studies: str | None = None,
    cluster: str = "local",
    progress: bool = True,
) -> dict[str, TaskState]:
    """:func:`plan` the profile's jobs and run them on ``cluster`` (:func:`segattack.engine.grid.run_grid`)."""
    output_folder(out_dir, "report folder", "report")  # a run's folder is refused before anything else
    jobs = plan(profile, out_dir, overrides, backbones, attacks, studies)
    return run_grid(jobs, out_dir, cluster, progress)
