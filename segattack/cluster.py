"""Where the grid's tasks run: a Dask client for a local cluster, dask-cuda's GPUs or a scheduler address.

``"local"``: a ``LocalCluster`` of one worker process running a single-threaded task per core
(on the default profile it was 1.03x a plain loop against 1.06x for a single-threaded process per
core, ``benchmarks/cluster.py`` on a 2-core CPU; its tasks share one copy of each model and one
cache of clean predictions); ``"local-cuda"``: dask-cuda's ``LocalCUDACluster``, one worker per
GPU; a scheduler address such as ``"tcp://host:8786"`` (an existing cluster, e.g. started by
dask-jobqueue or dask-kubernetes); ``"inprocess"``: no Dask, the tasks in a loop in this process.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from typing import Any, Iterator

from .params import ParameterError

CLUSTERS = ("local", "local-cuda", "inprocess")  # or a scheduler address


def check_cluster(cluster: str) -> str:
    """``cluster`` if it names a kind of cluster or a scheduler address."""
    if cluster in CLUSTERS or re.match(r"^(tcp|tls|ucx|inproc)://\S+$", cluster):
        return cluster
    raise ParameterError(f"unknown cluster {cluster!r}; use {', '.join(CLUSTERS)} or a scheduler address such as "
                         f"tcp://host:8786")


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
        with local_cluster(cuda=cluster == "local-cuda") as client:
            yield client
    else:
        with Client(check_cluster(cluster), timeout=30) as client:
            yield client
