"""Notebook kernels that stay quiet and never outlive the command that started them.

papermill starts every kernel through :class:`IPCKernelManager`: the kernel talks over IPC sockets
in a private temporary folder, so no TCP port is opened and ipykernel's "running over TCP without
encryption" warning does not apply. Each kernel started is registered; :func:`stopping` turns
SIGTERM and SIGHUP (a batch scheduler's time limit, ``timeout``, a closed terminal) into the same
clean stop as Ctrl-C and, whatever ends the command, kills the kernels still alive. jupyter_client
starts kernels in their own session, so a signal to the command's process group never reaches
them: without this they run on for as long as their cell lasts.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

from jupyter_client.manager import AsyncKernelManager

_live: set[int] = set()  # process ids (= process group ids) of the kernels this process started
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """The command was asked to stop (Ctrl-C, SIGTERM, SIGHUP); ``signum`` says by which signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class IPCKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels use IPC transport and are registered until shut down."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ipc_dir = tempfile.mkdtemp(prefix="segattack-kernel-")
        self.transport = "ipc"
        self.ip = os.path.join(self._ipc_dir, "kernel")

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
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
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
