"""Running ``segattack evaluate``: every model's :class:`~segattack.evaluate.EvalJob` on the grid, then
the report ``DIR/index.html`` from ``notebooks/evaluate.ipynb`` over their records."""

from __future__ import annotations

import re
from pathlib import Path

from .evaluate import EvalConfig, EvalJob
from .grid import run_grid
from .jobs import TaskState
from .render import execute
from .store import atomic_write_text, claim, locked, output_folder


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
    import nbformat
    from nbconvert import HTMLExporter

    out = output_folder(out_dir, "evaluation folder")
    with locked(out):
        claim(out)
        executed = out / "evaluate.ipynb"
        execute("evaluate.ipynb", executed, {"out_dir": str(out)})
        exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
        body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
        body = re.sub(r"<script\b[^>]*>.*?</script>", "", body, flags=re.DOTALL)
        target = out / "index.html"
        atomic_write_text(target, body)
    return target
