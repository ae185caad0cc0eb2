"""The grid engine's cost: a profile's tasks through Dask against a plain loop in one process.

    .venv/bin/python benchmarks/cluster.py [--profile default] [--rounds 1] [--configs ...]

The work is exactly what ``segattack report`` submits for the profile (every shard of its four
runs and every studies cell), without notebooks. Each configuration runs it all from nothing, its
start-up (cluster, worker processes, model loading) included:

- ``loop``: the tasks one after another in this process (``--cluster inprocess``), torch using
  every core: the attack compute the report contains;
- ``2x1``: a LocalCluster of 2 single-threaded worker processes (Dask's own default shape);
- ``1x2``: one worker process running 2 tasks at once in threads, torch single-threaded
  (what ``--cluster local`` starts on 2 cores);
- ``1x1t2``: one worker process running one task at a time with torch on 2 threads (the loop's
  shape behind the engine);
- ``1x1``: one single-threaded worker (what one worker of many does).

Configurations alternate within each round; a configuration's time is its median over rounds.
Images per second count every image a task attacked (a run's shard or a studies cell).
Writes ``results/cluster.json`` and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe

# (worker processes, tasks at once per worker, torch threads per task)
CONFIGS = {"loop": None, "2x1": (2, 1, 1), "1x2": (1, 2, 1), "1x1t2": (1, 1, 2), "1x1": (1, 1, 1)}


def tasks_of(profile: str, out: str) -> tuple[list, int]:
    """The grid's tasks for ``profile`` (jobs planned into ``out``; records discarded) and the images they attack."""
    from segattack.engine.grid import Task
    from segattack.study.profiles import plan
    from segattack.study.runner import RunJob, count_images, shard_ranges
    from segattack.study.studies import StudiesJob

    tasks, images = [], 0
    for job in plan(profile, out):
        tasks += [Task(job, unit) for unit in job.units()]
        if isinstance(job, RunJob):
            images += count_images(job.cfg)
        elif isinstance(job, StudiesJob):
            study = job.study
            for cell in job.units():
                total = study.total if cell.startswith("compare/") else study.curve_total
                images += len(shard_ranges(total, study.batch)[int(cell.split("/")[-1])])
    return tasks, images


def timed(config: str, profile: str) -> float:
    """Seconds to run every task of ``profile`` under ``config``, from a fresh start."""
    from segattack.engine.grid import execute

    with tempfile.TemporaryDirectory() as out:
        tasks, _ = tasks_of(profile, out)
        started = time.perf_counter()
        if CONFIGS[config] is None:
            errors = execute(tasks, "inprocess", lambda task, record: None, progress=False)
        else:
            from distributed import as_completed

            from segattack.engine.cluster import local_cluster

            with local_cluster(*CONFIGS[config]) as client:
                futures = [client.submit(t.job.compute, t.unit, key=t.key, pure=False) for t in tasks]
            errors = {f.key: str(f.exception()) for f in as_completed(futures) if f.status == "error"}
    if errors:
        raise RuntimeError(f"tasks failed: {errors}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cluster.json"))
    args = parser.parse_args()
    if args.child:  # one configuration in a fresh process: no model or kernel cache carries over
        print(json.dumps({"seconds": timed(args.child, args.profile)}))
        return
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as out:
        _, images = tasks_of(args.profile, out)
    seconds: dict[str, list[float]] = {c: [] for c in args.configs}
    for round_ in range(args.rounds):
        for config in args.configs:
            done = subprocess.run(
                [sys.executable, __file__, "--child", config, "--profile", args.profile],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds[config].append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
            print(f"round {round_ + 1}: {config} {seconds[config][-1]:.1f} s", flush=True)
            write(Path(args.out), args.profile, images, round_ + 1, seconds)  # a stopped run keeps what it has
    median = {c: statistics.median(v) for c, v in seconds.items()}
    print("\n| configuration | seconds (median) | images / s | / plain loop |\n|---|---|---|---|")
    for c, s in median.items():
        ratio = f"{s / median['loop']:.2f}" if "loop" in median else "-"
        print(f"| {c} | {s:.1f} | {images / s:.2f} | {ratio} |")


def write(out: Path, profile: str, images: int, rounds: int, seconds: dict[str, list[float]]) -> None:
    median = {c: statistics.median(v) for c, v in seconds.items() if v}
    result = {
        "profile": profile,
        "images": images,
        "rounds": rounds,
        "seconds": seconds,
        "median_s": median,
        "images_per_s": {c: images / s for c, s in median.items()},
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if "loop" in median:
        result["over_loop"] = {c: s / median["loop"] for c, s in median.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
