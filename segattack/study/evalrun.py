"""Running ``segattack evaluate``: every model's :class:`EvalJob` (its units those of
:func:`segattack.study.evaluate.unit_names`) on the grid, then the report ``DIR/index.html`` from
``notebooks/evaluate.ipynb`` over their records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from segattack.engine.grid import run_grid
from segattack.engine.jobs import Job, TaskState
from segattack.engine.render import static_page
from segattack.engine.store import output_folder
from segattack.study.evalassemble import assemble, write_worst
from segattack.study.evalrecord import EVALUATION_VERSION, write_evaluation
from segattack.study.evaluate import EVAL_DOCUMENT, EvalConfig, compute_unit, load_checked, unit_names


class EvalJob(Job):
    """One model's evaluation: its units are clean, attack x eps and minimal-norm shards; its document
    ``evaluation.json``."""

    notebook: ClassVar[str | None] = None  # the report (evaluate.ipynb) reads every model's record at once
    document = EVAL_DOCUMENT
    unit_folder = "units"
    results_version = EVALUATION_VERSION

    def __init__(self, cfg: EvalConfig, path: str | os.PathLike) -> None:
        super().__init__(cfg.name, path, cfg.digest())
        self.cfg = cfg

    def list_units(self) -> list[str]:
        return unit_names(self.cfg)

    def prepare(self) -> None:
        load_checked(self.cfg)

    def compute(self, unit: str) -> _Stored:
        return _Stored(compute_unit(self.cfg, unit))

    def decode(self, stored: dict[str, Any]) -> _Stored:
        return _Stored(stored)

    def write_outputs(self, records: list[_Stored], staging: Path) -> None:
        units = {u: r.value for u, r in zip(self.units(), records)}
        record = assemble(self.cfg, self.digest, units)
        write_evaluation(record, staging / EVAL_DOCUMENT)
        write_worst(self.cfg, record, units, staging / "worst.pt")

    def notebook_parameters(self) -> dict[str, Any]:
        return {}


@dataclass
class _Stored:
    """A unit's record as stored: plain tensors, lists and numbers."""

    value: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.value


def evaluation_jobs(configs: list[EvalConfig], out: str | Path) -> list[EvalJob]:
    """One job per model in ``out/<model>``; every job's units listed (its images counted and their
    headers read), so a bad input is refused before any work."""
    root = Path(out).expanduser().absolute()
    jobs = [EvalJob(cfg, root / cfg.name) for cfg in configs]
    for job in jobs:
        job.units()
    return jobs


def run_evaluation(
    configs: list[EvalConfig], out: str | Path, cluster: str = "local", progress: bool = True
) -> dict[str, TaskState]:
    """Evaluate every model of ``configs`` into ``out`` (one Dask task per model x attack x eps x
    shard, finished units kept) and render the report; returns model folder -> state."""
    jobs = evaluation_jobs(configs, out)
    states = run_grid(list(jobs), out, cluster, progress)
    if all(state is not TaskState.FAILED for state in states.values()):
        build_evaluation_report(out)
    return states


def build_evaluation_report(out_dir: str | Path) -> Path:
    """Execute ``evaluate.ipynb`` over the records in ``out_dir`` and render ``out_dir/index.html``
    (a static page: tables in HTML, figures as inline PNGs, no scripts)."""
    out = output_folder(out_dir, "evaluation folder", kind="report")
    return static_page("evaluate.ipynb", out, {"out_dir": str(out)})
