"""The grid on Dask: a LocalCluster's records equal the in-process run's exactly, and a worker or
the client killed mid-grid ends in the same report. Workers run torch single-threaded (Dask sets
OMP_NUM_THREADS=1), so the in-process reference does too: float sums depend on the thread count."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from segattack.engine.cluster import local_cluster
from segattack.study.profiles import run_profile as run_grid

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
RUNS = {"backbones": ("mobilenet_v3_large",), "attacks": ("pgd", "asma")}
# four shards per run, and the studies trimmed to one backbone and one epsilon (9 cells)
OVERRIDES = {"num_images": 4, "batch": 1, "studies_backbones": ["mobilenet_v3_large"], "studies_eps_values": [0.03]}


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(2, 1) as client:  # two processes, so that one can be killed (--cluster local
        yield client.cluster, client  # starts one process running a task per core: tested below)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("inprocess")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status = run_grid("tiny", out, OVERRIDES, **RUNS, cluster="inprocess", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert set(status.values()) == {"done"}
    return out


def records(out: Path) -> dict:
    """Every number of a report folder's runs and studies, without wall times."""
    found = {}
    for path in sorted((out / "runs").glob("*/results.json")):
        doc = json.loads(path.read_text())
        found[path.parent.name] = {k: doc[k] for k in ("per_image", "history", "pooled", "clean_truth", "iterations")}
    studies = json.loads((out / "studies" / "studies.json").read_text())
    for key in ("comparison", "security", "transfer", "difficulty", "iteration_curves", "clean_iou_truth"):
        rows = studies[key]
        found[f"studies {key}"] = (
            [{k: v for k, v in r.items() if k != "seconds"} for r in rows] if isinstance(rows, list) else rows
        )
    return found


def test_local_cluster_records_equal_the_in_process_run(reference, tmp_path):
    status = run_grid("tiny", tmp_path, OVERRIDES, **RUNS, cluster="local", progress=False)  # the default shape
    assert set(status.values()) == {"done"} and len(status) == 3
    assert records(tmp_path) == records(reference)
    assert (
        len(list(tmp_path.glob("runs/*/shards/*/*.pt"))) == 8
        and (tmp_path / "runs" / "mobilenet_v3_large-pgd" / "attack.ipynb").is_file()
    )


def test_a_worker_killed_mid_grid_has_its_task_rerun_elsewhere(cluster, reference, tmp_path):
    local, client = cluster
    pids = set(client.run(os.getpid).values())
    killed = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob("runs/*/shards/*/*.pt")) and time.monotonic() < deadline:
            time.sleep(0.02)
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    status = run_grid("tiny", tmp_path, OVERRIDES, **RUNS, cluster=local.scheduler_address, progress=False)
    killer.join()
    assert killed and set(status.values()) == {"done"}
    assert records(tmp_path) == records(reference)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the worker
    assert killed[0] not in set(client.run(os.getpid).values())


def test_a_client_killed_mid_grid_resumes_with_only_the_unfinished_tasks(cluster, reference, tmp_path):
    local, _ = cluster
    argv = [
        sys.executable,
        "-m",
        "segattack",
        "report",
        "--profile",
        "tiny",
        "--out",
        str(tmp_path),
        "--cluster",
        "local",
        "--backbones",
        *RUNS["backbones"],
        "--attacks",
        *RUNS["attacks"],
    ]
    argv += [a for k, v in OVERRIDES.items() for a in ("-p", f"{k}={v!r}")]
    proc = subprocess.Popen(
        argv, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("runs/*/shards/*/*.pt"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "grid ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the client and its local cluster
    proc.wait()
    shards = list(tmp_path.glob("runs/*/shards/*/*.pt"))
    assert 2 <= len(shards) < 8  # a run whose shards were all in may already be assembled: it is kept too
    finished = {p: p.stat().st_mtime_ns for p in [*shards, *tmp_path.glob("runs/*/results.json")]}
    status = run_grid("tiny", tmp_path, OVERRIDES, **RUNS, cluster=local.scheduler_address, progress=False)
    assert set(status.values()) <= {"done", "skipped"}  # skipped: finished before the kill
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # kept, not recomputed
    assert records(tmp_path) == records(reference)


def test_report_on_a_voc_folder_through_dask(cluster, voc_folder, tmp_path):
    from segattack.cli import main

    local, _ = cluster
    assert (
        main(
            [
                "report",
                "--profile",
                "tiny",
                "--images",
                f"voc:{voc_folder}",
                "-p",
                "num_images=0",
                "-p",
                "batch=2",
                "--studies",
                "none",
                "--backbones",
                "mobilenet_v3_large",
                "--attacks",
                "pgd",
                "--cluster",
                local.scheduler_address,
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "runs" / "mobilenet_v3_large-pgd" / "results.json").read_text())
    assert len(doc["names"]) == 5 and doc["shards"] == 3 and doc["clean_truth"]["images"] == 5
    assert "one confusion matrix over 5 images" in (tmp_path / "index.html").read_text()
