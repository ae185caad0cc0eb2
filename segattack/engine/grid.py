"""The grid: every unit of every job is a Dask task; each job is assembled and rendered once its units are in.

:func:`run_grid` takes any list of :class:`~segattack.engine.jobs.Job` (a profile's runs and studies come
from :func:`segattack.study.profiles.plan`). Each unit's record comes back to this process, which writes
it atomically (workers need no shared file system for results). As soon as a job's last unit is
in, it is assembled and papermill executes its notebook while the workers go on. A restarted grid
submits only the units not on disk for the same parameters; a worker that dies mid-task has its
task re-run elsewhere by Dask's scheduler.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from segattack.engine.cluster import as_completed, check_cluster, dask_client, worker_setup_plugin, worker_wait
from segattack.engine.jobs import Job, TaskState
from segattack.engine.render import record_failure, record_traceback, render
from segattack.engine.store import FolderError, claim, locked, output_folder


@dataclass(frozen=True)
class Task:
    """One unit of one job."""

    job: Job
    unit: str

    @property
    def key(self) -> str:
        return f"{self.job.name}-{self.job.digest}-{self.unit}"


def execute(
    tasks: list[Task], cluster: str, done: Callable[[Task, Any], None], progress: bool = True
) -> dict[str, str]:
    """Run ``tasks`` on ``cluster`` with one progress bar, handing each record to ``done`` as it arrives.

    Returns job name -> the first error of its failed tasks; the other tasks go on."""
    errors: dict[str, str] = {}
    if not tasks:
        return errors
    setups = list({task.job.model_specs(): task.job.prepare_worker for task in tasks}.values())  # one per model set
    bar = tqdm(total=len(tasks), desc="grid", unit="task", disable=not progress)

    def finished(task: Task, result: Any = None, exc: BaseException | None = None) -> None:
        if exc is None:
            done(task, result)
        else:  # one line naming the run and the cause; the traceback in the run's folder
            cause = f"{type(exc).__name__}: {(str(exc).strip() or '-').splitlines()[0]}"
            errors.setdefault(task.job.name, cause[:2000])
            log = record_traceback(task.job, f"task {task.unit}", exc)
            bar.write(f"failed: {task.job.name} task {task.unit}: {cause} (traceback: {log})", file=sys.stderr)
        bar.update(1)

    try:
        if cluster == "inprocess":
            for task in tasks:
                try:
                    result = task.job.compute(task.unit)
                except Exception as exc:  # recorded for the job it belongs to; the others go on
                    finished(task, exc=exc)
                else:
                    finished(task, result)
            return errors
        with dask_client(cluster) as client:
            bar.write(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            client.register_plugin(worker_setup_plugin(setups))  # before any task thread runs
            futures = {client.submit(t.job.compute, t.unit, key=t.key, pure=False): t for t in tasks}
            for future in as_completed(client, futures):
                try:
                    result = future.result()
                except Exception as exc:
                    finished(futures[future], exc=exc)
                else:
                    finished(futures[future], result)
                future.release()
    finally:
        bar.close()
    return errors


def run_grid(
    jobs: list[Job], out_dir: str | Path, cluster: str = "local", progress: bool = True
) -> dict[str, TaskState]:
    """Compute every unit of ``jobs`` not on disk on ``cluster``; assemble and render each job as soon
    as its last unit is in. Returns job name -> SKIPPED | DONE | FAILED."""
    check_cluster(cluster)
    if cluster != "inprocess":
        worker_wait()
    out = output_folder(out_dir, "report folder", "report")
    check_job_folders(jobs, out)
    with locked(out), ExitStack() as held:
        for job in jobs:  # every job's own lock too: `segattack attack --out` on a job folder waits its turn
            held.enter_context(locked(job.path))
        claim(out, "report")
        states = {job.name: job.state() for job in jobs}
        by_name = {job.name: job for job in jobs}
        tasks = [Task(job, unit) for job in jobs if states[job.name] is TaskState.PENDING for unit in job.pending()]
        left = {job.name: 0 for job in jobs}
        for task in tasks:
            left[task.job.name] += 1

        def finish(job: Job, error: str | None = None) -> None:
            states[job.name] = _finish(job, states[job.name], error)

        def done(task: Task, record: Any) -> None:
            task.job.write(task.unit, record)
            left[task.job.name] -= 1
            if left[task.job.name] == 0:
                finish(task.job)

        errors = execute(tasks, cluster, done, progress)
        for name in [n for n, s in states.items() if s in (TaskState.PENDING, TaskState.RENDER)]:
            finish(by_name[name], errors.get(name))  # failed, or nothing left to compute
    return states


def check_job_folders(jobs: list[Job], out: Path) -> None:
    """Refuse, before any work, a job folder that is a symbolic link or lies outside the report
    folder ``out`` (a link there would have the grid replace a folder elsewhere), or two jobs
    sharing one folder."""
    seen: dict[Path, str] = {}
    for job in jobs:
        link = next(
            (
                p
                for p in (job.given, *job.given.parents)  # a link that lives inside the report folder
                if p.is_symlink() and p.parent.resolve().is_relative_to(out)
            ),
            None,
        )
        if link is not None:
            raise FolderError(
                f"{link} is a symbolic link; the report's run and studies folders must be plain "
                f"folders inside {out} (remove the link)"
            )
        if not job.path.is_relative_to(out) or job.path == out:
            raise FolderError(f"{job.name}'s folder {job.path} is not inside the report folder {out}")
        if job.path in seen:
            raise FolderError(f"{job.name} and {seen[job.path]} would share the folder {job.path}")
        seen[job.path] = job.name


def _finish(job: Job, state: TaskState, error: str | None) -> TaskState:
    """Assemble a job whose units are all in (unless its results are there) and render it; a failure
    (a missing unit record among them) keeps the earlier results (if any) and is recorded beside them."""
    if error is None and state is TaskState.PENDING:
        try:
            job.finish()
        except (OSError, RuntimeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
    if error is not None:
        record_failure(job, error)
        return TaskState.FAILED
    return render(job)
