"""Notebook kernels that stay quiet and never outlive the command that started them.

papermill starts every kernel through :class:`IPCKernelManager`: the kernel talks over IPC sockets
in a private temporary folder, so no TCP port is opened and ipykernel's "running over TCP without
encryption" warning does not apply. Each kernel started is registered; :func:`stopping` turns
SIGTERM and SIGHUP (a batch scheduler's time limit, ``timeout``, a closed terminal) into the same
clean stop as Ctrl-C and, whatever ends the command, kills the kernels still alive. jupyter_client
starts kernels in their own session, so a signal to the command's process group never reaches
them: without this they run on for as long as their cell lasts.

Kernels run this process's own interpreter whatever kernelspec named ``python3`` a user has
installed, with matplotlib's inline backend whatever ``MPLBACKEND`` the command inherited, and
their sockets in a folder short enough for an IPC path (107 bytes) whatever ``TMPDIR`` is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

_live: set[int] = set()  # process ids (= process group ids) of the kernels this process started
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
IPC_PATH_MAX = 107  # bytes of a Unix socket path (sun_path less its terminating NUL)
_IPC_NAME = "/segattack-kernel-XXXXXXXX/kernel-65535"  # the longest a socket under the chosen folder gets


def ipc_parent() -> str:
    """A writable folder for kernel sockets whose paths stay under :data:`IPC_PATH_MAX` bytes: the
    temporary folder, else ``/tmp`` or ``/dev/shm``."""
    for folder in (tempfile.gettempdir(), "/tmp", "/dev/shm"):
        if (
            len(os.fsencode(folder)) + len(_IPC_NAME) < IPC_PATH_MAX
            and os.path.isdir(folder)
            and os.access(folder, os.W_OK | os.X_OK)
        ):
            return folder
    raise RuntimeError(
        f"no folder for notebook kernel sockets: TMPDIR {tempfile.gettempdir()!r} is too long for a "
        f"socket path ({IPC_PATH_MAX} bytes) and /tmp and /dev/shm are not writable; set a shorter "
        f"TMPDIR"
    )


def kernel_spec() -> KernelSpec:
    """The kernel every notebook runs on: ipykernel on this interpreter, figures inline."""
    return KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="Python (segattack)",
        language="python",
        env={"MPLBACKEND": INLINE_BACKEND},
    )


class Stopped(KeyboardInterrupt):
    """The command was asked to stop (Ctrl-C, SIGTERM, SIGHUP); ``signum`` says by which signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class IPCKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels use IPC transport and are registered until shut down; its
    kernel is always :func:`kernel_spec` (the notebook's ``python3`` never resolves to another Python)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ipc_dir = tempfile.mkdtemp(prefix="segattack-kernel-", dir=ipc_parent())
        self.transport = "ipc"
        self.ip = os.path.join(self._ipc_dir, "kernel")

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            self._kernel_spec = kernel_spec()
        return self._kernel_spec

    async def start_kernel(self, **kwargs: Any) -> None:  # type: ignore[override]
        await super().start_kernel(**kwargs)
        pid = getattr(self.provisioner, "pid", None)
        if pid:
            _live.add(pid)

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:  # type: ignore[override]
        pid = getattr(self.provisioner, "pid", None)
        try:
            await super().shutdown_kernel(now=now, restart=restart)
        finally:
            _live.discard(pid)
            if not restart:
                shutil.rmtree(self._ipc_dir, ignore_errors=True)


def kill_kernels() -> None:
    """Kill every kernel this process started that is still alive (with its own child processes)."""
    for pid in list(_live):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _live.discard(pid)


@contextmanager
def stopping() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Stopped` (SIGINT too), ignore repeated signals while
    cleaning up, and kill every kernel still alive on the way out, whatever ends the block."""

    received = []

    def handler(signum: int, frame: Any) -> None:
        for sig in STOP_SIGNALS:  # a second signal must not interrupt the clean-up
            signal.signal(sig, signal.SIG_IGN)
        received.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        kill_kernels()
        if not received:  # once stopping, further signals stay ignored until the command has said so and exited
            for sig, old in previous.items():
                signal.signal(sig, old)
