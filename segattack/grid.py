"""The study grid on Dask: every shard of every run and every studies cell is a Dask task.

A unit of work (one shard of a backbone x attack run, one studies cell) is a Dask task that calls
:func:`segattack.runner.run_shard` or :func:`segattack.studies.run_cell` and returns its record to
this process, which writes it atomically (workers need no shared file system for results). As
soon as a run's last shard is in, it is assembled and papermill executes its notebook (which
reads the saved records) while the workers go on; the studies likewise; :func:`build_report`
then renders the report. A restarted grid submits only the shards and cells not on disk for the
same parameters.

Clusters: ``"local"`` (a ``LocalCluster`` sized to this machine), ``"local-cuda"`` (dask-cuda's
``LocalCUDACluster``, one worker per GPU), a scheduler address such as ``"tcp://host:8786"`` (an
existing cluster, e.g. started by dask-jobqueue or dask-kubernetes), or ``"inprocess"`` (no Dask:
the same functions in a plain loop here).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm.auto import tqdm

from .attacks import ATTACKS
from .models import BACKBONES
from .params import ParameterError
from .runner import RunConfig, RunFolder, count_images, run_shard
from .store import atomic_write_text, claim, locked, output_folder
from .studies import LEVELS, StudyConfig, StudyFolder, run_cell

BACKBONE_ORDER = ("mobilenet_v3_large", "resnet50")
ATTACK_ORDER = ("asma", "pgd")

# Iterations per attack: [5] runs PGD 15 times; ASMA's count is in no paper (Ozbulak's code stops
# by 2,501, adv_lib runs 1,000), so the paper profile runs adv_lib's 1,000 and the report plots
# ASMA's convergence; the other attacks keep their own defaults.
PAPER_STEPS = {"pgd": 15, "asma": 1000, "dag": 200, "segpgd": 20, "cospgd": 20}

# Run parameters per profile, and the studies' (``studies``: none | default | full, ``studies_*``:
# any setting of StudyConfig, e.g. studies_num_images or studies_size).
PROFILES: dict[str, dict[str, Any]] = {
    # Embedded weights on their held-out scenes at their training size: CPU-friendly.
    "default": {"weights": "embedded", "images": "scenes", "num_images": 8, "size": 0,
                "steps": {**PAPER_STEPS, "asma": 300}, "studies": "default", "studies_images": "scenes",
                "studies_num_images": 16, "studies_size": 96},
    # The paper: torchvision's COCO weights, the shipped photos at 520 px, [5]'s batch of 4 (a GPU or a
    # patient CPU: -p studies=none or -p studies_size=128 trims the studies there).
    "paper": {"weights": "torchvision", "images": "photos", "num_images": 4, "size": 520, "steps": PAPER_STEPS,
              "studies": "default", "studies_images": "photos", "studies_num_images": 4, "studies_size": 520},
    # Smoke test for CI: two small images, two iterations.
    "tiny": {"weights": "embedded", "images": "scenes", "num_images": 2, "size": 64, "steps": 2,
             "studies": "default", "studies_images": "scenes", "studies_num_images": 2, "studies_size": 48,
             "studies_steps": 2, "studies_curve_steps": 1, "studies_curve_images": 2},
}
CLUSTERS = ("local", "local-cuda", "inprocess")  # or a scheduler address


def run_name(backbone: str, attack: str) -> str:
    return f"{backbone}-{attack}"


def _settings(profile: str, overrides: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run parameters, studies settings) of ``profile`` with ``overrides``, unknown names refused."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    merged = {**PROFILES[profile], **(overrides or {})}
    run = {k: v for k, v in merged.items() if not k.startswith("studies")}
    study = {k.removeprefix("studies_"): v for k, v in merged.items() if k.startswith("studies_")}
    study["level"] = merged.get("studies", "none")
    for name in ("backbone", "attack"):  # names become folder names: they come from --backbones/--attacks
        if name in run:
            raise ParameterError(f"-p {name}=... is not a grid parameter; use --{name}s")
    unknown = sorted(set(run) - set(RunConfig.__dataclass_fields__))
    if unknown:
        raise ParameterError(f"unknown run parameters: {', '.join(unknown)}")
    return run, study


def grid_configs(profile: str, overrides: dict[str, Any] | None = None,
                 backbones: tuple[str, ...] = BACKBONE_ORDER,
                 attacks: tuple[str, ...] = ATTACK_ORDER) -> list[RunConfig]:
    """The runs of ``profile`` (with ``overrides`` applied to every run), in report order, each
    checked on construction; duplicate names run once."""
    settings, _ = _settings(profile, overrides)
    for name, chosen, allowed in (("backbone", backbones, BACKBONES), ("attack", attacks, ATTACKS)):
        bad = [n for n in chosen if n not in allowed]
        if bad:
            raise ParameterError(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
    steps = settings.pop("steps", RunConfig.steps)
    return [RunConfig(backbone=b, attack=a, **settings, steps=steps[a] if isinstance(steps, dict) else steps)
            for b in dict.fromkeys(backbones) for a in dict.fromkeys(attacks)]


def study_config(profile: str, overrides: dict[str, Any] | None = None) -> StudyConfig | None:
    """The studies' settings of ``profile`` (None when its ``studies`` level is ``none``; the
    settings are checked all the same); the run parameters ``weights``, ``device`` and ``seed``
    apply to the studies too."""
    run, study = _settings(profile, overrides)
    level = study.pop("level")
    if level not in (*LEVELS, "none"):
        raise ParameterError(f"unknown studies {level!r}; choose one of none, {', '.join(LEVELS)}")
    shared = {k: run[k] for k in ("weights", "device", "seed") if k in run}
    unknown = sorted(set(study) - set(StudyConfig.__dataclass_fields__))
    if unknown:
        raise ParameterError(f"unknown studies settings: {', '.join('studies_' + k for k in unknown)}")
    config = StudyConfig(**{**LEVELS[level if level in LEVELS else "default"], **shared, **study})
    return None if level == "none" else config


def check_cluster(cluster: str) -> str:
    """``cluster`` if it names a kind of cluster or a scheduler address."""
    if cluster in CLUSTERS or re.match(r"^(tcp|tls|ucx|inproc)://\S+$", cluster):
        return cluster
    raise ParameterError(f"unknown cluster {cluster!r}; use {', '.join(CLUSTERS)} or a scheduler address such as "
                         f"tcp://host:8786")


@dataclass
class Task:
    """One unit of work: ``fn(*args)`` returns a record that ``done`` writes."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: Callable[[Any], None]
    owner: str  # the run (or 'studies') that fails if the task fails


@contextmanager
def local_cluster(workers: int = 1, threads: int | None = None, torch_threads: int = 1,
                  cuda: bool = False) -> Iterator[Any]:
    """A client of a new local cluster, shut down on exit: ``workers`` processes running ``threads``
    tasks at once each (default: one process, a task per core), each task with ``torch_threads``
    intra-op threads; with ``cuda``, dask-cuda's one worker per GPU.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then hands freed memory
    back to the system at once and torch's large activation buffers are faulted in again every
    iteration (an attack shard ran 1.35x slower here), so the workers start without it."""
    import dask
    from distributed import Client, LocalCluster

    environ = {name: torch_threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        if cuda:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise ParameterError("--cluster local-cuda needs dask-cuda: pip install dask-cuda") from None
            cluster = LocalCUDACluster(dashboard_address=":0", silence_logs=logging.ERROR)
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads or os.cpu_count() or 1,
                                   processes=True, dashboard_address=":0", silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:
        yield client


@contextmanager
def dask_client(cluster: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster``, closed (and a local cluster shut down) on exit."""
    from distributed import Client

    if cluster in ("local", "local-cuda"):
        # local: one worker process running a single-threaded task per core. On the default profile
        # it was 1.03x a plain loop against 1.06x for a single-threaded process per core
        # (benchmarks/cluster.py, 2-core CPU); its tasks share one copy of each model and one cache
        # of clean predictions.
        with local_cluster(cuda=cluster == "local-cuda") as client:
            yield client
    else:
        with Client(check_cluster(cluster), timeout=30) as client:
            yield client


def execute(tasks: list[Task], cluster: str, progress: bool = True) -> dict[str, str]:
    """Run ``tasks`` on ``cluster`` with one progress bar; write each record as it arrives.

    Returns owner -> the first error of a failed task. A worker that dies mid-task has the task
    re-run elsewhere by Dask's scheduler; finished records are on disk, so an interrupted grid
    loses only the tasks in flight."""
    errors: dict[str, str] = {}
    if not tasks:
        return errors
    bar = tqdm(total=len(tasks), desc="grid", unit="task", disable=not progress)

    def finished(task: Task, result: Any = None, exc: BaseException | None = None) -> None:
        if exc is None:
            task.done(result)
        else:
            errors.setdefault(task.owner, f"{type(exc).__name__}: {exc}"[:2000])
        bar.update(1)

    try:
        if cluster == "inprocess":
            for task in tasks:
                try:
                    result = task.fn(*task.args)
                except Exception as exc:  # recorded for the run it belongs to; the others go on
                    finished(task, exc=exc)
                else:
                    finished(task, result)
            return errors
        from distributed import as_completed

        with dask_client(cluster) as client:
            bar.write(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            futures = {client.submit(t.fn, *t.args, key=t.key, pure=False): t for t in tasks}
            for future in as_completed(futures):
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


def run_grid(profile: str, out_dir: str | Path, overrides: dict[str, Any] | None = None,
             backbones: tuple[str, ...] = BACKBONE_ORDER, attacks: tuple[str, ...] = ATTACK_ORDER,
             studies: str | None = None, cluster: str = "local", progress: bool = True) -> dict[str, str]:
    """Compute every unfinished shard of the grid and every missing studies cell on ``cluster``;
    as soon as a run's (or the studies') last record is in, assemble it and execute its notebook
    with papermill while the workers go on.

    ``studies`` (none | default | full) overrides the profile's level. Every parameter is checked
    before any folder is touched. Returns run name -> 'skipped' | 'done' | 'failed' (the studies
    under the name 'studies')."""
    overrides = {**(overrides or {}), **({"studies": studies} if studies else {})}
    configs = grid_configs(profile, overrides, backbones, attacks)
    study = study_config(profile, overrides)
    check_cluster(cluster)
    totals = {run_name(c.backbone, c.attack): count_images(c) for c in configs}
    out = output_folder(out_dir, "report folder")
    with locked(out):
        claim(out)
        folders = {run_name(c.backbone, c.attack): RunFolder(out / "runs" / run_name(c.backbone, c.attack), c)
                   for c in configs}
        status = {name: _state(f.complete(), f.path / "attack.ipynb") for name, f in folders.items()}
        study_folder = StudyFolder(out / "studies", study) if study else None
        if study_folder is not None:
            status["studies"] = _state(study_folder.complete(), study_folder.path / "studies.ipynb")
        started = time.perf_counter()

        def finish(name: str, error: str | None = None) -> None:
            assemble = status[name] == "pending"  # else the results are there, only the notebook is not
            if name == "studies":
                status[name] = _finish_studies(study_folder, error, time.perf_counter() - started, assemble)
            else:
                status[name] = _finish(folders[name], error, profile, assemble)

        # A run (or the studies) is assembled and its notebook executed as soon as its last record
        # is in, while the workers go on with the rest.
        tasks = []
        for name, folder in folders.items():
            if status[name] == "pending":
                pending = folder.pending(totals[name])
                done = _collect(folder.write_shard, len(pending), lambda n=name: finish(n))
                tasks += [Task(f"{name}-{folder.digest}-{k}", run_shard, (folder.cfg, k), done, name) for k in pending]
        if study_folder is not None and status["studies"] == "pending":
            cells = study_folder.pending()
            done = _collect(study_folder.write_cell, len(cells), lambda: finish("studies"))
            tasks += [Task(f"studies-{study_folder.digest}-{c}", run_cell, (study, c), done, "studies") for c in cells]
        errors = execute(tasks, cluster, progress)
        for name in [n for n, state in status.items() if state in ("pending", "render")]:  # failed, or nothing
            finish(name, errors.get(name))                                                # left to compute
    return status


def _state(complete: bool, notebook: Path) -> str:
    """'skipped' (results and executed notebook there), 'render' (results there, notebook missing or
    failed: a stop between the two) or 'pending'. A notebook is written only once it has run
    (:func:`_execute`), and a failed one has ``failed.json`` beside it."""
    if not complete:
        return "pending"
    return "skipped" if notebook.is_file() and not (notebook.parent / "failed.json").is_file() else "render"


def _collect(write: Callable[[Any], None], count: int, finish: Callable[[], None]) -> Callable[[Any], None]:
    """A task's ``done``: ``write`` its record, and ``finish`` once ``count`` records are in."""
    left = [count]

    def done(record: Any) -> None:
        write(record)
        left[0] -= 1
        if left[0] == 0:
            finish()

    return done


def _record_failure(folder: Path, message: str, notebook: Path | None = None) -> None:
    claim(folder)
    atomic_write_text(folder / "failed.json", json.dumps({"error": message, "notebook": str(notebook or "")},
                                                         allow_nan=False))


def _finish(folder: RunFolder, error: str | None, profile: str, assemble: bool = True) -> str:
    """Assemble a run whose shards are all in (``assemble``) and execute its notebook; a failure
    keeps the earlier results (if any) and is recorded beside them."""
    if error is not None:
        _record_failure(folder.path, error)
        return "failed"
    if assemble:
        folder.finish()
    return _render("attack.ipynb", folder.path, {**asdict(folder.cfg), "out_dir": str(folder.path), "profile": profile})


def _finish_studies(folder: StudyFolder, error: str | None, seconds: float, assemble: bool = True) -> str:
    if error is not None:
        _record_failure(folder.path, error)
        return "failed"
    if assemble:
        folder.finish(seconds)
    return _render("studies.ipynb", folder.path, {"settings": asdict(folder.study), "out_dir": str(folder.path)})


def _render(notebook: str, folder: Path, parameters: dict[str, Any]) -> str:
    """Execute ``notebook`` into ``folder``: 'done', or 'failed' with the failure recorded (the kept
    notebook shows the failing cell). A notebook of an earlier failure goes first, its record
    last, so a stop in between leaves the folder to be rendered again."""
    executed = folder / notebook
    executed.unlink(missing_ok=True)
    try:
        _execute(notebook, executed, parameters)
    except Exception as exc:
        _record_failure(folder, _message(exc), executed)
        return "failed"
    (folder / "failed.json").unlink(missing_ok=True)
    return "done"


def _message(exc: BaseException) -> str:
    import papermill as pm

    if isinstance(exc, pm.PapermillExecutionError):
        return f"{exc.ename}: {exc.evalue}"[:2000]
    return f"{type(exc).__name__}: {exc}"[:2000]


def notebooks_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "notebooks"


def _execute(notebook: str, output: Path, parameters: dict[str, Any]) -> None:
    """Run one of the project's notebooks with papermill, from the notebooks folder, on a kernel
    that talks over IPC and is always shut down (see :mod:`segattack.kernels`). Papermill writes
    beside ``output`` as cells run; ``output`` appears only once the notebook has finished or failed
    (a failed one shows its failing cell), so a stop mid-notebook never leaves it half-run."""
    import papermill as pm

    from .kernels import IPCKernelManager

    partial = output.with_name(f".{output.stem}.partial{output.suffix}")
    try:
        pm.execute_notebook(str(notebooks_dir() / notebook), str(partial), parameters=parameters,
                            kernel_name="python3", progress_bar=False, cwd=str(notebooks_dir()),
                            kernel_manager_class=IPCKernelManager)
    except pm.PapermillExecutionError:
        os.replace(partial, output)
        raise
    os.replace(partial, output)


def build_report(out_dir: str | Path, profile: str) -> Path:
    """Execute ``report.ipynb`` over ``out_dir/runs`` and render it to one self-contained HTML file."""
    import nbformat
    from nbconvert import HTMLExporter

    out = output_folder(out_dir, "report folder")
    with locked(out):
        claim(out)
        executed = out / "report.ipynb"
        _execute("report.ipynb", executed,
                 {"runs_dir": str(out / "runs"), "studies_dir": str(out / "studies"), "profile": profile})
        exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
        body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
        # A static page: tables are HTML, figures inline PNGs; drop nbconvert's scripts (CDN-loaded
        # require.js, MathJax, mermaid) so the file reads the same offline.
        body = re.sub(r"<script\b[^>]*>.*?</script>", "", body, flags=re.DOTALL)
        target = out / "index.html"
        atomic_write_text(target, body)
    return target
