"""Where the grid's tasks run: a Dask client for a local cluster, dask-cuda's GPUs or a scheduler address.

``"local"``: a ``LocalCluster`` of one worker process running a single-threaded task per core
(on the default profile it was 1.03x a plain loop against 1.06x for a single-threaded process per
core, ``benchmarks/cluster.py`` on a 2-core CPU; its tasks share one copy of each model and one
cache of clean predictions); ``"local-cuda"``: dask-cuda's ``LocalCUDACluster``, one worker per
GPU; a scheduler address such as ``"tcp://host:8786"`` (an existing cluster, e.g. started by
dask-jobqueue or dask-kubernetes); ``"inprocess"``: no Dask, the tasks in a loop in this process.

An address is checked before any work (scheme, host, port) and asked who it is with a bounded
wait before a client is made, so a silent service, a web server or one that sends other bytes
ends in one message naming the address; a cluster left without workers for
``SEGATTACK_WORKER_WAIT`` seconds (default 600: batch queues take time to start workers) stops the
grid the same way, every finished task kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from segattack.util.params import ParameterError

CLUSTERS = ("local", "local-cuda", "inprocess")  # or a scheduler address
SCHEMES = ("tcp", "tls", "ucx", "inproc")
CONNECT_TIMEOUT = 30.0  # seconds a scheduler address has to answer


def check_cluster(cluster: str) -> str:
    """``cluster`` if it names a kind of cluster or a well-formed scheduler address
    (``SCHEME://HOST[:PORT]``, the port 1-65535)."""
    if cluster in CLUSTERS:
        return cluster
    scheme, sep, rest = str(cluster).partition("://")
    if not sep or scheme not in SCHEMES:
        raise ParameterError(
            f"unknown cluster {cluster!r}; use {', '.join(CLUSTERS)} or a scheduler address such as tcp://host:8786"
        )
    if scheme == "inproc":
        if rest.strip():
            return cluster
        raise ParameterError(f"cluster address {cluster!r} names no scheduler")
    try:
        parts = urlsplit(cluster)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ParameterError(f"cluster address {cluster!r}: the port must be a number from 1 to 65535") from None
    if not host or any(c.isspace() for c in cluster) or parts.username or parts.password:
        raise ParameterError(f"cluster address {cluster!r} names no host; use {scheme}://HOST:PORT")
    if port is None:
        raise ParameterError(
            f"cluster address {cluster!r} names no port; use {scheme}://{host}:PORT (a Dask scheduler listens on "
            f"8786 unless told otherwise)"
        )
    if port == 0:
        raise ParameterError(f"cluster address {cluster!r}: the port must be a number from 1 to 65535")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ParameterError(f"cluster address {cluster!r} has a path or query; use {scheme}://HOST:PORT")
    return cluster


async def _identity(address: str, timeout: float) -> Any:
    from distributed.comm import connect
    from distributed.security import Security

    args = Security().get_connection_args("client")  # TLS settings from Dask's configuration, as a Client's
    comm = await asyncio.wait_for(connect(address, timeout=timeout, **args), timeout)
    try:
        await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
        return await asyncio.wait_for(comm.read(), timeout)
    finally:
        comm.abort()


def probe_scheduler(address: str, timeout: float | None = None) -> None:
    """Ask ``address`` who it is, within about ``timeout`` seconds (:data:`CONNECT_TIMEOUT`); anything
    but a Dask scheduler's answer (nothing listening, silence, a web server, other bytes) is one
    :class:`RuntimeError` naming it."""
    address = check_cluster(address)
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    with ThreadPoolExecutor(1) as pool:  # a loop of its own: a notebook's running loop is left alone
        try:
            reply = pool.submit(asyncio.run, _identity(address, timeout)).result()
        except (TimeoutError, asyncio.TimeoutError):
            raise RuntimeError(
                f"no Dask scheduler answered at {address} within {timeout:.0f} s (nothing listening, "
                f"or a service that says nothing); check --cluster"
            ) from None
        except (OSError, ValueError, TypeError, MemoryError, EOFError, RuntimeError) as exc:
            raise RuntimeError(
                f"{address} is not a Dask scheduler (it answered with what Dask cannot read: "
                f"{type(exc).__name__}); check --cluster"
            ) from None
    kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
    if kind != "Scheduler":
        raise RuntimeError(f"{address} is not a Dask scheduler (it answered as {kind}); check --cluster")


def worker_wait() -> float:
    """Seconds a cluster may stay without workers before the grid stops (``SEGATTACK_WORKER_WAIT``)."""
    text = os.environ.get("SEGATTACK_WORKER_WAIT", "600")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ParameterError(f"SEGATTACK_WORKER_WAIT must be a number of seconds > 0, got {text!r}")
    return value


def as_completed(
    client: Any, futures: Iterable[Any], patience: float | None = None, poll: float = 1.0
) -> Iterator[Any]:
    """``futures`` as each finishes, like ``distributed.as_completed``, but a cluster that has had no
    worker for ``patience`` seconds (:func:`worker_wait`) raises :class:`RuntimeError` instead of
    waiting forever."""
    from distributed import wait

    patience = worker_wait() if patience is None else patience
    pending, since = set(futures), None
    while pending:
        try:
            done, pending = wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        yield from done
        if done or client.nthreads():
            since = None
            continue
        since = since or time.monotonic()
        if time.monotonic() - since >= patience:
            raise RuntimeError(
                f"the Dask cluster at {client.scheduler.address} has had no workers for "
                f"{patience:.0f} s; every finished task is kept: start workers and run the same "
                f"command again"
            )


@contextmanager
def local_cluster(
    workers: int = 1, threads: int | None = None, torch_threads: int = 1, cuda: bool = False
) -> Iterator[Any]:
    """A client of a new local cluster, shut down on exit: ``workers`` processes running ``threads``
    tasks at once each (default: one process, a task per core), each task with ``torch_threads``
    intra-op threads; with ``cuda``, dask-cuda's one worker per GPU.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then hands freed memory
    back to the system at once and torch's large activation buffers are faulted in again every
    iteration (an attack shard ran 1.35x slower here), so the workers start without it. The
    workers ignore Ctrl-C (:func:`_workers_ignore_ctrl_c`)."""
    import dask
    from distributed import Client, LocalCluster

    environ = {name: torch_threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), _workers_ignore_ctrl_c():
        if cuda:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise ParameterError("--cluster local-cuda needs dask-cuda: pip install dask-cuda") from None
            cluster = LocalCUDACluster(dashboard_address=":0", silence_logs=logging.ERROR)
        else:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads or os.cpu_count() or 1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
    with cluster, Client(cluster) as client:
        yield client


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Ignore SIGINT while the workers start, so they inherit it ignored: Ctrl-C reaches the whole
    process group, and a worker would print its KeyboardInterrupt traceback under the command's one
    line. The command itself stops and shuts the cluster down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def dask_client(cluster: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster``, closed (and a local cluster shut down) on exit."""
    from distributed import Client

    if cluster in ("local", "local-cuda"):
        with local_cluster(cuda=cluster == "local-cuda") as client:
            yield client
    else:
        probe_scheduler(cluster)
        try:
            client = Client(cluster, timeout=CONNECT_TIMEOUT)
        except (OSError, ValueError, MemoryError) as exc:  # a scheduler that went away since the probe
            raise RuntimeError(f"cannot connect to the Dask scheduler at {cluster}: {exc}") from None
        with client:
            yield client


def worker_setup_plugin(setups: list[Callable[[], None]]) -> Any:
    """A Dask worker plugin that runs ``setups`` (the jobs' ``prepare_worker``: importing the model
    backends their units load) as a worker starts, before its task threads run."""
    from distributed import WorkerPlugin

    class WorkerSetup(WorkerPlugin):
        name = "segattack-worker-setup"

        def setup(self, worker: Any) -> None:
            for setup in setups:
                setup()
            quiet_task_failures()

    return WorkerSetup()


class _NoComputeFailed(logging.Filter):
    """Drops the worker's multi-line "Compute Failed" record: the grid prints one line per failed task
    and writes its traceback into the job's folder."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def quiet_task_failures() -> None:
    """Keep a worker from printing a failed task's traceback (once per process)."""
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _NoComputeFailed) for f in log.filters):
        log.addFilter(_NoComputeFailed())
