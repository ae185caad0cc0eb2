"""Notebooks into results and the report: papermill executes them, nbconvert renders the HTML.

Every notebook runs from the notebooks folder on a kernel that talks over IPC and is always shut
down (:mod:`segattack.engine.kernels`). An executed notebook appears only once it has finished or failed
(a failed one shows its failing cell, and ``failed.json`` beside it says why), so a stop
mid-notebook never leaves it half-run.
"""

from __future__ import annotations

import json
import os
import re
import traceback
from pathlib import Path
from typing import Any

from segattack.engine.jobs import Job, TaskState
from segattack.engine.store import atomic_write_text, claim, locked, output_folder

FAILED_LOG = "failed.log"  # the tracebacks of a job's failed tasks, beside its failed.json


class RenderError(RuntimeError):
    """A notebook failed; the message names its error and the executed notebook that shows it."""


def notebooks_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "notebooks"


def record_failure(job: Job, message: str, notebook: Path | None = None) -> None:
    """``failed.json`` in ``job``'s folder: the error, and the executed notebook that shows it (if any)."""
    folder = claim(job.path, job.kind)
    atomic_write_text(
        folder / "failed.json", json.dumps({"error": message, "notebook": str(notebook or "")}, allow_nan=False)
    )


def record_traceback(job: Job, what: str, exc: BaseException) -> Path:
    """Append ``exc``'s traceback (a worker's, as Dask carries it back) to ``failed.log`` in ``job``'s folder."""
    log = claim(job.path, job.kind) / FAILED_LOG
    with log.open("a", encoding="utf-8") as out:
        out.write(f"--- {what}\n{''.join(traceback.format_exception(exc))}\n")
    return log


def render(job: Job) -> TaskState:
    """Execute ``job``'s notebook into its folder: DONE, or FAILED with the failure recorded. A
    notebook of an earlier failure goes first, its record last, so a stop in between leaves the
    folder to be rendered again."""
    if job.notebook is None:  # nothing to render: the report reads the results
        return TaskState.DONE
    executed = job.path / job.notebook
    executed.unlink(missing_ok=True)
    try:
        execute(job.notebook, executed, job.notebook_parameters())
    except Exception as exc:
        record_failure(job, _message(exc), executed)
        return TaskState.FAILED
    (job.path / "failed.json").unlink(missing_ok=True)
    (job.path / FAILED_LOG).unlink(missing_ok=True)
    return TaskState.DONE


def _message(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(exc, RenderError) and cause is not None and hasattr(cause, "ename"):
        return f"{cause.ename}: {getattr(cause, 'evalue', '')}"[:2000]
    return f"{type(exc).__name__}: {exc}"[:2000]


def execute(notebook: str, output: Path, parameters: dict[str, Any]) -> None:
    """Run one of the project's notebooks with papermill into ``output`` (written beside it as cells
    run, moved into place once the notebook has finished or failed)."""
    import papermill as pm

    from segattack.engine.kernels import IPCKernelManager

    partial = output.with_name(f".{output.stem}.partial{output.suffix}")
    try:
        pm.execute_notebook(
            str(notebooks_dir() / notebook),
            str(partial),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(notebooks_dir()),
            kernel_manager_class=IPCKernelManager,
        )
    except pm.PapermillExecutionError as exc:
        os.replace(partial, output)
        raise RenderError(
            f"{notebook} failed with {exc.ename}: {exc.evalue} (the executed notebook {output} shows where)"
        ) from exc
    os.replace(partial, output)


def build_report(out_dir: str | Path, profile: str) -> Path:
    """Execute ``report.ipynb`` over ``out_dir`` and render it to one self-contained HTML file."""
    out = output_folder(out_dir, "report folder", "report")
    parameters = {
        "runs_dir": str(out / "runs"),
        "studies_dir": str(out / "studies"),
        "stability_dir": str(out / "stability"),
        "profile": profile,
    }
    return static_page("report.ipynb", out, parameters)


def static_page(notebook: str, out: Path, parameters: dict[str, Any]) -> Path:
    """Execute ``notebook`` into the report folder ``out`` and render ``out/index.html``: a static
    page, tables in HTML and figures as inline PNGs, without nbconvert's scripts (CDN-loaded
    require.js, MathJax, mermaid), so the file reads the same offline."""
    import nbformat
    from nbconvert import HTMLExporter

    with locked(out):
        claim(out, "report")
        executed = out / notebook
        execute(notebook, executed, parameters)
        exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
        body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
        body = re.sub(r"<script\b[^>]*>.*?</script>", "", body, flags=re.DOTALL)
        target = out / "index.html"
        atomic_write_text(target, body)
    return target
