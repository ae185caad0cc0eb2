"""The study grid: one run per backbone x attack, resumable, under a profile.

A run directory holds ``results.json`` only once the run finished (it is written last and
atomically) and records the hash of the run's parameters, so a restarted grid skips exactly the
runs whose results are complete for the same parameters and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from .attacks import ATTACKS
from .checkpoints import atomic_write_text
from .models import BACKBONES
from .runner import RESULTS_VERSION, RunConfig, config_hash

BACKBONE_ORDER = ("mobilenet_v3_large", "resnet50")
ATTACK_ORDER = ("asma", "pgd")

# Iterations per attack: [5] runs PGD 15 times; ASMA's count is in no paper (Ozbulak's code stops
# by 2,501, adv_lib runs 1,000), so the paper profile runs adv_lib's 1,000 and the report plots
# ASMA's convergence; the other attacks keep their own defaults.
PAPER_STEPS = {"pgd": 15, "asma": 1000, "dag": 200, "segpgd": 20, "cospgd": 20}

PROFILES: dict[str, dict[str, Any]] = {
    # Embedded weights on their held-out scenes at their training size: CPU-friendly.
    "default": {"weights": "embedded", "images": "scenes", "num_images": 8, "size": 0,
                "steps": {**PAPER_STEPS, "asma": 300}, "studies": "default"},
    # The paper: torchvision's COCO weights, the shipped photos at 520 px (a GPU or a patient CPU).
    "paper": {"weights": "torchvision", "images": "photos", "num_images": 4, "size": 520, "steps": PAPER_STEPS,
              "studies": "paper"},
    # Smoke test for CI: two small images, two iterations.
    "tiny": {"weights": "embedded", "images": "scenes", "num_images": 2, "size": 64, "steps": 2, "studies": "tiny"},
}
PROFILE_ONLY = ("studies",)  # profile settings that are not run parameters

# The studies notebook's settings per profile (same images for every attack and backbone).
STUDIES: dict[str, dict[str, Any]] = {
    "default": {"weights": "embedded", "images": "scenes", "num_images": 16, "size": 96, "steps": 20,
                "curve_images": 8, "curve_steps": 10},
    "paper": {"weights": "torchvision", "images": "photos", "num_images": 4, "size": 520, "steps": 20,
              "curve_images": 4, "curve_steps": 10},
    "tiny": {"weights": "embedded", "images": "scenes", "num_images": 2, "size": 48, "steps": 2,
             "curve_images": 2, "curve_steps": 1},
}
for _settings in STUDIES.values():
    _settings.update(eps=8 / 255, eps_values=[2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255])


def run_name(backbone: str, attack: str) -> str:
    return f"{backbone}-{attack}"


def grid_configs(profile: str, overrides: dict[str, Any] | None = None,
                 backbones: tuple[str, ...] = BACKBONE_ORDER,
                 attacks: tuple[str, ...] = ATTACK_ORDER) -> Iterator[RunConfig]:
    """The runs of ``profile`` (with ``overrides`` applied to every run), in report order."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    settings = {k: v for k, v in {**PROFILES[profile], **(overrides or {})}.items() if k not in PROFILE_ONLY}
    unknown = set(settings) - set(RunConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown run parameters: {', '.join(sorted(unknown))}")
    for name, allowed in (("backbone", BACKBONES), ("attack", ATTACKS)):  # names become folder names
        bad = [n for n in (backbones if name == "backbone" else attacks) if n not in allowed]
        if bad:
            raise ValueError(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
    steps = settings.pop("steps", RunConfig.steps)
    for backbone in backbones:
        for attack in attacks:
            yield replace(RunConfig(backbone=backbone, attack=attack), **settings,
                          steps=steps[attack] if isinstance(steps, dict) else steps)


def is_complete(run_dir: Path, digest: str) -> bool:
    """True when ``run_dir`` holds finished results for exactly these parameters, in the current format."""
    try:
        doc = json.loads((run_dir / "results.json").read_text())
        return doc.get("config_hash") == digest and doc.get("results_version") == RESULTS_VERSION
    except (OSError, ValueError):
        return False


def notebooks_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "notebooks"


def _execute(notebook: str, output: Path, parameters: dict[str, Any]) -> None:
    """Run one of the project's notebooks with papermill, from the notebooks folder."""
    import papermill as pm

    pm.execute_notebook(str(notebooks_dir() / notebook), str(output), parameters=parameters,
                        kernel_name="python3", progress_bar=False, cwd=str(notebooks_dir()))


def execute_run(cfg: RunConfig, run_dir: Path, profile: str) -> bool:
    """Execute ``attack.ipynb`` for one run with papermill; on failure keep its notebook, note why."""
    import papermill as pm

    run_dir.mkdir(parents=True, exist_ok=True)
    failure = run_dir / "failed.json"
    failure.unlink(missing_ok=True)
    (run_dir / "results.json").unlink(missing_ok=True)
    output = run_dir / "attack.ipynb"
    params = {**asdict(cfg), "out_dir": str(run_dir.resolve()), "profile": profile}
    try:
        _execute("attack.ipynb", output, params)
        return True
    except pm.PapermillExecutionError as exc:
        message = f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel died, notebook missing, ...
        message = f"{type(exc).__name__}: {exc}"
    atomic_write_text(failure, json.dumps({"error": message, "notebook": str(output)}))
    return False


def run_grid(profile: str, out_dir: str | Path, overrides: dict[str, Any] | None = None,
             backbones: tuple[str, ...] = BACKBONE_ORDER, attacks: tuple[str, ...] = ATTACK_ORDER,
             studies: str | None = None) -> dict[str, str]:
    """Execute every unfinished run of the grid, then the studies notebook with the settings
    ``studies`` names (None: the profile's own; "none": no studies).

    Returns run name -> 'skipped' | 'done' | 'failed' (the studies under the name 'studies').
    """
    studies = PROFILES[profile]["studies"] if studies is None and profile in PROFILES else studies
    if studies not in (*STUDIES, "none", None):
        raise ValueError(f"unknown studies {studies!r}; choose one of {', '.join((*STUDIES, 'none'))}")
    runs_dir = Path(out_dir) / "runs"
    status = {}
    configs = list(grid_configs(profile, overrides, backbones, attacks))  # validates before any work
    for cfg in tqdm(configs, desc=f"grid ({profile})", unit="run"):
        name = run_name(cfg.backbone, cfg.attack)
        if is_complete(runs_dir / name, config_hash(cfg)):
            status[name] = "skipped"
            continue
        status[name] = "done" if execute_run(cfg, runs_dir / name, profile) else "failed"
    if studies not in ("none", None):
        status["studies"] = run_study_notebook(studies, out_dir, overrides)
    return status


def run_study_notebook(studies: str, out_dir: str | Path, overrides: dict[str, Any] | None = None) -> str:
    """Execute ``studies.ipynb`` with the ``studies`` settings unless ``studies.json`` holds results
    for the same settings."""
    settings = {**STUDIES[studies], **{k: v for k, v in (overrides or {}).items() if k in ("weights", "device", "seed")}}
    study_dir = (Path(out_dir) / "studies").resolve()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    try:
        if json.loads((study_dir / "studies.json").read_text()).get("settings_hash") == digest:
            return "skipped"
    except (OSError, ValueError):
        pass
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "studies.json").unlink(missing_ok=True)
    try:
        _execute("studies.ipynb", study_dir / "studies.ipynb",
                 {**settings, "out_dir": str(study_dir), "profile": studies, "settings_hash": digest})
    except Exception as exc:  # kept notebook shows the failing cell; the report says it failed
        atomic_write_text(study_dir / "failed.json", json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]}))
        return "failed"
    (study_dir / "failed.json").unlink(missing_ok=True)
    return "done"


def build_report(out_dir: str | Path, profile: str) -> Path:
    """Execute ``report.ipynb`` over ``out_dir/runs`` and render it to one self-contained HTML file."""
    import nbformat
    from nbconvert import HTMLExporter

    out_dir = Path(out_dir).resolve()
    executed = out_dir / "report.ipynb"
    _execute("report.ipynb", executed,
             {"runs_dir": str(out_dir / "runs"), "studies_dir": str(out_dir / "studies"), "profile": profile})
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    # A static page: tables are HTML, figures inline PNGs; drop nbconvert's scripts (CDN-loaded
    # require.js, MathJax, mermaid) so the file reads the same offline.
    body = re.sub(r"<script\b[^>]*>.*?</script>", "", body, flags=re.DOTALL)
    target = out_dir / "index.html"
    atomic_write_text(target, body)
    return target
