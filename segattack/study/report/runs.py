"""The report's inputs: the runs, their repeats and the studies read back from an output folder,
and the labels and number formats every table shares.
"""

from __future__ import annotations

import html
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from segattack.attacks import ATTACKS
from segattack.study.records import RecordError, Results, SavedImages, Score, Stat, StudiesResults
from segattack.util.paths import data_dir

BACKBONE_LABEL = {"mobilenet_v3_large": "MobileNet", "resnet50": "ResNet"}


def paper_table() -> pd.DataFrame:
    """The paper's Table 1 (shipped copy in ``data/paper/table1.csv``)."""
    return pd.read_csv(data_dir() / "paper" / "table1.csv").set_index(["backbone", "attack"])


@dataclass
class Run:
    """One finished run: its results and the folder they live in."""

    name: str
    path: Path
    results: Results

    @property
    def backbone(self) -> str:
        return self.results.config.backbone

    @property
    def attack(self) -> str:
        return self.results.config.attack

    @property
    def label(self) -> str:
        return f"{BACKBONE_LABEL.get(self.backbone, self.backbone)} {attack_label(self.attack)}"

    def tensors(self) -> SavedImages:
        return SavedImages.read(self.path / "tensors.pt")

    def mean(self, metric: str) -> float:
        value = self.results.mean(metric)
        return math.nan if value is None else value


def attack_label(name: str) -> str:
    """The report's name for an attack (its registered label; the name itself if it is not registered)."""
    return ATTACKS[name].label if name in ATTACKS else name


class Failure(typing.NamedTuple):
    """A run that failed or did not finish: why, and the notebook that shows it."""

    run: str
    error: str
    notebook: str
    kept: str = ""


def load_runs(runs_dir: str | Path) -> tuple[list[Run], list[Failure]]:
    """Finished runs (in the paper's Table 1 order first) and failed ones.

    A run whose latest attempt failed but whose earlier results are complete is listed in both:
    its earlier results stay in the tables until a successor is complete. A folder whose results
    cannot be read is listed as failed with the reason, and the report goes on."""
    runs, failed = [], []
    folders = (
        sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
        if Path(runs_dir).is_dir()
        else []
    )  # hidden: staging and replaced folders mid-swap
    for folder in folders:
        results, failure = folder / "results.json", folder / "failed.json"
        notebook = str(folder / "attack.ipynb") if (folder / "attack.ipynb").is_file() else ""  # only one that is there
        finished = False
        if results.is_file():
            try:
                runs.append(Run(folder.name, folder, Results.read(results)))
                finished = True
            except (RecordError, ValueError, TypeError, KeyError) as exc:
                failed.append(Failure(folder.name, f"unreadable results: {exc}", notebook))
        if failure.is_file():
            try:
                error = str(json.loads(failure.read_text())["error"])
            except (ValueError, KeyError, TypeError):
                error = "the run failed (its failed.json is unreadable)"
            failed.append(Failure(folder.name, error, notebook, "earlier results shown" if finished else ""))
        elif not results.is_file():
            failed.append(Failure(folder.name, "interrupted: no results were written", notebook))
    order = {key: i for i, key in enumerate(paper_table().index)}
    runs.sort(key=lambda r: (order.get((r.backbone, r.attack), len(order)), r.name))
    return runs, failed


def load_repeats(stability_dir: str | Path) -> dict[str, list[Run]]:
    """The stability repeats of each run (folder ``BACKBONE-ATTACK-VARIANT``), by run name."""
    repeats: dict[str, list[Run]] = {}
    for run in load_runs(stability_dir)[0]:
        repeats.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return repeats


def load_studies(studies_dir: str | Path) -> StudiesResults | str | None:
    """The studies' saved results; None when there are none, the reason when they cannot be read."""
    path = Path(studies_dir) / "studies.json"
    if not path.is_file():
        return None
    try:
        return StudiesResults.read(path)
    except RecordError as exc:
        return str(exc)


def escape(text: Any) -> str:
    """HTML-escape user-supplied text (run names, parameters) before it enters the report."""
    return html.escape(str(text))


def _fmt(summary: Stat, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± half-width' (the half-width left out where undefined: one image)."""
    if summary.mean is None:
        return "–"
    ci = f" ± {summary.ci95 * scale:,.{digits}f}" if summary.ci95 is not None else ""
    return f"{summary.mean * scale:,.{digits}f}{ci}"


def _fmt_pooled(score: Score, scale: float = 100.0, digits: int = 2) -> str:
    """'value [low, high]' for a pooled score and its bootstrap interval."""
    if score.value is None or not math.isfinite(score.value):
        return "–"
    ci = score.ci95
    return f"{score.value * scale:.{digits}f}" + (
        f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]" if ci else ""
    )
