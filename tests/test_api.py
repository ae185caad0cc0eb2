"""The public API is written down once (docs/architecture.md, "Public API") and holds: every path
named there imports, `segattack.__all__` is what it was, and the entry points, the console script
and the notebooks' parameters are where the documentation says."""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import tomllib

import segattack
from segattack.attacks import ENTRY_POINT_GROUP
from segattack.study.config import RunConfig
from segattack.study.studies import StudyConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_notebooks import parameters

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"

ALL = [
    "ATTACKS",
    "AttackDiverged",
    "AttackResult",
    "WeightsUnavailable",
    "asma",
    "attack_metrics",
    "cospgd",
    "dag",
    "fold_batchnorm",
    "load_model",
    "mean_iou",
    "perturbation_norm",
    "pgd",
    "pixel_accuracy",
    "predict_classes",
    "segpgd",
    "targeted_pgd",
    "targeted_success",
    "wrap_model",
]
# the paths the README, the notebooks and plugins name: each must stay documented
PINNED = {
    "segattack.attacks.register",
    "segattack.attacks.AttackSpec",
    "segattack.attacks.ENTRY_POINT_GROUP",
    "segattack.models.load_model",
    "segattack.models.wrap_model",
    "segattack.data.image_set",
    "segattack.evaluation.budget.smallest_budget",
    "segattack.study.config.RunConfig",
    "segattack.study.runner.run",
    "segattack.study.results.read_run",
    "segattack.study.records",
    "segattack.study.studies.run_studies",
    "segattack.cli.main",  # the function main (the package re-exports it)
}


def documented() -> set[str]:
    """The dotted ``segattack.`` paths in backticks in the "Public API" section."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Public API", 1)[1].split("\n## ", 1)[0]
    return {p.rstrip(".") for p in re.findall(r"`(segattack(?:\.\w+)+)`", section)}


def resolve(path: str) -> object:
    """The module or attribute a dotted path names (imported, not guessed)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(path)


def test_the_top_level_api_is_pinned() -> None:
    assert sorted(segattack.__all__) == ALL
    for name in ALL:
        assert getattr(segattack, name) is not None


@pytest.mark.parametrize("path", sorted(documented()))
def test_every_documented_path_imports(path: str) -> None:
    resolve(path)


def test_the_pinned_paths_are_documented() -> None:
    assert documented() >= PINNED, sorted(PINNED - documented())


def test_the_entry_points_and_the_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert ENTRY_POINT_GROUP == "segattack.attacks"
    module, _, name = project["scripts"]["segattack"].partition(":")
    assert (module, name) == ("segattack.cli", "main")
    assert resolve(f"{module}.{name}") is resolve("segattack.cli.app.main")
    plugin = (ROOT / "tests" / "plugin" / "toy_attack-1.0.dist-info" / "entry_points.txt").read_text()
    assert f"[{ENTRY_POINT_GROUP}]" in plugin


def test_the_notebooks_parameters_are_the_documented_ones() -> None:
    assert set(parameters("attack.ipynb")) == {f.name for f in fields(RunConfig)} | {"out_dir", "profile", "compute"}
    assert set(parameters("studies.ipynb")) == {"settings", "out_dir", "compute"}
    assert set(parameters("report.ipynb")) == {"runs_dir", "studies_dir", "stability_dir", "profile"}
    assert StudyConfig(**parameters("studies.ipynb")["settings"]) == StudyConfig()


def test_a_path_that_moved_away_does_not_resolve() -> None:
    """The check can fail: a name or a module that is not there."""
    with pytest.raises(AttributeError):
        resolve("segattack.study.runner.no_such_function")
    with pytest.raises(AttributeError):
        resolve("segattack.no_such_module.run")
