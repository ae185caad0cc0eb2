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
import time
from pathlib import Path

from machine import describe

# (worker processes, tasks at once per worker, torch threads per task)
CONFIGS = {"loop": None, "2x1": (2, 1, 1), "1x2": (1, 2, 1), "1x1t2": (1, 1, 2), "1x1": (1, 1, 1)}


def tasks_of(profile: str) -> tuple[list, int]:
    """The grid's tasks for ``profile`` (records discarded) and the images they attack."""
    from segattack.grid import Task, grid_configs, run_name, study_config
    from segattack.runner import count_images, run_shard, shard_ranges
    from segattack.studies import run_cell, study_cells

    tasks, images = [], 0
    for cfg in grid_configs(profile):
        shards = shard_ranges(count_images(cfg), cfg.batch)
        images += sum(len(s) for s in shards)
        tasks += [Task(f"{run_name(cfg.backbone, cfg.attack)}-{k}", run_shard, (cfg, k), _drop, "run")
                  for k in range(len(shards))]
    study = study_config(profile)
    if study is not None:
        for cell in study_cells(study):
            shard = int(cell.split("/")[-1])
            total = study.total if cell.startswith("compare/") else study.curve_total
            images += len(shard_ranges(total, study.batch)[shard])
            tasks.append(Task(f"studies-{cell}", run_cell, (study, cell), _drop, "studies"))
    return tasks, images


def _drop(record) -> None:
    pass


def timed(config: str, profile: str) -> float:
    """Seconds to run every task of ``profile`` under ``config``, from a fresh start."""
    from segattack.grid import execute

    tasks, _ = tasks_of(profile)
    started = time.perf_counter()
    if CONFIGS[config] is None:
        errors = execute(tasks, "inprocess", progress=False)
    else:
        from distributed import as_completed

        from segattack.grid import local_cluster

        with local_cluster(*CONFIGS[config]) as client:
            futures = [client.submit(t.fn, *t.args, key=t.key, pure=False) for t in tasks]
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

    _, images = tasks_of(args.profile)
    seconds: dict[str, list[float]] = {c: [] for c in args.configs}
    for round_ in range(args.rounds):
        for config in args.configs:
            done = subprocess.run([sys.executable, __file__, "--child", config, "--profile", args.profile],
                                  capture_output=True, text=True, check=True)
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
    result = {"profile": profile, "images": images, "rounds": rounds, "seconds": seconds, "median_s": median,
              "images_per_s": {c: images / s for c, s in median.items()}, "machine": describe(),
              "date": time.strftime("%Y-%m-%d")}
    if "loop" in median:
        result["over_loop"] = {c: s / median["loop"] for c, s in median.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))

if __name__ == "__main__":
    main()
