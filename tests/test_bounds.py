"""Bounds before work: sizes and counts have limits, and a cluster address that is not a working Dask
cluster ends in one message naming it, within a bounded wait, finished work kept."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segattack.cli import main
from segattack.engine import cluster, store
from segattack.study.config import MAX_LONG_SIDE, MAX_SCENES, MAX_SIZE, RunConfig
from segattack.study.profiles import plan
from segattack.study.runner import RunJob
from segattack.study.studies import StudyConfig
from segattack.util.params import ParameterError


def report(out: Path, ckpt: Path, *extra: str) -> list[str]:
    return [
        "report",
        "--profile",
        "tiny",
        "--out",
        str(out),
        "--backbones",
        "mobilenet_v3_large",
        "--attacks",
        "pgd",
        "--studies",
        "none",
        "-p",
        f"weights={ckpt}",
        "-p",
        "size=48",
        *extra,
    ]


def last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# --- Sizes and counts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-p", "size=100000"], f"size must be <= {MAX_SIZE} px, got 100000"),
        (["-p", "num_images=1e9"], f"num_images must be <= {MAX_SCENES:,} for the synthetic scenes, got 1000000000"),
        (["-p", "studies_size=5000", "--studies", "default"], f"studies size must be <= {MAX_SIZE} px, got 5000"),
        (
            ["-p", "studies_num_images=200000", "--studies", "default"],
            f"studies num_images must be <= {MAX_SCENES:,} for the synthetic scenes, got 200000",
        ),
    ],
    ids=["size", "num_images", "studies_size", "studies_num_images"],
)
def test_report_sizes_and_counts_are_bounded(small_checkpoint, tmp_path, capsys, argv, message):
    assert main(report(tmp_path / "R", small_checkpoint, "--cluster", "inprocess", *argv)) == 2
    assert last_line(capsys) == f"segattack report: error: {message}"
    assert not (tmp_path / "R").exists()


def test_attack_and_api_sizes_are_bounded(small_checkpoint, tmp_path, capsys):
    assert (
        main(
            [
                "attack",
                "--backbone",
                "mobilenet_v3_large",
                "--attack",
                "pgd",
                "--weights",
                str(small_checkpoint),
                "--out",
                str(tmp_path / "o"),
                "--size",
                str(MAX_SIZE + 1),
            ]
        )
        == 2
    )
    assert last_line(capsys) == f"segattack attack: error: size must be <= {MAX_SIZE} px, got {MAX_SIZE + 1}"
    assert RunConfig(weights=str(small_checkpoint), size=MAX_SIZE, num_images=MAX_SCENES).size == MAX_SIZE
    with pytest.raises(ParameterError, match="num_images must be <= 100,000"):
        RunConfig(weights=str(small_checkpoint), num_images=MAX_SCENES + 1)
    with pytest.raises(ParameterError, match="studies size must be <= 4096"):
        StudyConfig(size=MAX_SIZE + 1)


def test_resize_shorter_caps_the_longer_side(small_checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((16, 1024, 3), np.uint8)).save(folder / "b.png")  # 64:1
    cfg = RunConfig(weights=str(small_checkpoint), images=str(folder), num_images=0, resize="shorter", size=128)
    assert RunJob(cfg, tmp_path / "ok").units() == ["00000"]  # 128 * 64 = 8192: exactly at the cap
    cfg = RunConfig(weights=str(small_checkpoint), images=str(folder), num_images=0, resize="shorter", size=129)
    with pytest.raises(
        ValueError,
        match=rf"b.png is 1024x16: with resize=shorter at 129 px its longer side would be "
        rf"8256 px, over {MAX_LONG_SIDE}; use resize=crop",
    ):
        RunJob(cfg, tmp_path / "bad").units()
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--steps", "1000000000"],
            "steps must be <= 10,000 (the largest paper value is 1,000), got 1,000,000,000; pass --force "
            "(-p force=true, force=True) if you mean it",
        ),
        (
            ["--size", "1024", "--window", "16"],
            "window 16 gives 10,404 windows per pass over a 1024x1024 px image, over 64; use a larger window or a "
            "smaller size, or pass --force (-p force=true) if you mean it",
        ),
    ],
    ids=["steps", "windows"],
)
def test_unbounded_work_is_refused_before_any_work_unless_forced(small_checkpoint, tmp_path, capsys, extra, message):
    """--size 1024 --window 16 (10,404 windows a pass) and --steps 1000000000 ran until killed, without progress."""
    args = ["attack", "--backbone", "mobilenet_v3_large", "--attack", "pgd", "--weights", str(small_checkpoint)]
    assert main([*args, "--out", str(tmp_path / "o"), *extra]) == 2
    assert last_line(capsys) == f"segattack attack: error: {message}"
    assert not (tmp_path / "o").exists()
    settings = {k.lstrip("-"): v for k, v in zip(extra[::2], extra[1::2], strict=True)}
    overrides = [part for k, v in settings.items() for part in ("-p", f"{k}={v}")]
    assert main(report(tmp_path / "R", small_checkpoint, "--cluster", "inprocess", *overrides)) == 2
    assert last_line(capsys) == f"segattack report: error: {message}"
    assert not (tmp_path / "R").exists()
    assert RunConfig(weights=str(small_checkpoint), force=True, **settings).force  # a user who means it


def test_force_is_not_hashed_and_a_shorter_sides_windows_are_bounded(small_checkpoint, tmp_path):
    ok = RunConfig(weights=str(small_checkpoint), size=48, window="24")
    assert ok.digest() == RunConfig(weights=str(small_checkpoint), size=48, window="24", force=True).digest()
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "square.png")
    Image.fromarray(np.zeros((16, 160, 3), np.uint8)).save(folder / "wide.png")  # 10:1, 48 px -> 48x480
    cfg = RunConfig(
        weights=str(small_checkpoint), images=str(folder), num_images=0, resize="shorter", size=48, window="16"
    )
    with pytest.raises(ParameterError, match="window 16 gives 240 windows per pass over a 48x480 px image, over 64"):
        RunJob(cfg, tmp_path / "bad").units()
    forced = dataclasses.replace(cfg, force=True)
    assert RunJob(forced, tmp_path / "forced").units() == ["00000"]


def test_a_window_is_padded_only_to_its_own_size():
    """Each window's logits were padded to the whole image: 10,404 full-size tensors a pass."""
    from torch import nn

    from segattack.models.wrapper import _Tiled, window_boxes, wrap_model

    torch.manual_seed(0)
    model = wrap_model(nn.Conv2d(3, 5, 3, padding=1), normalize=False)
    x = torch.rand(2, 3, 40, 52, requires_grad=True)
    model.window = (16, 24)
    calls = []
    real = _Tiled.forward

    def spy(ctx, boxes, shape, *windows):
        calls.append([tuple(w.shape) for w in windows])
        return real(ctx, boxes, shape, *windows)

    _Tiled.forward = staticmethod(spy)
    try:
        out = model(x)
    finally:
        _Tiled.forward = staticmethod(real)
    assert all(shape[-2:] in ((16, 24),) for shape in calls[0])  # each window at its own size
    # the same numbers and gradient as padding every window to the image (the reference below)
    reference = torch.zeros(2, 5, 40, 52)
    count = torch.zeros(1, 1, 40, 52)
    for top, left, bottom, right in window_boxes(40, 52, (16, 24)):
        logits = model.net(x[..., top:bottom, left:right])
        reference = reference + nn.functional.pad(logits, (left, 52 - right, top, 40 - bottom))
        count[..., top:bottom, left:right] += 1
    reference = reference / count
    assert torch.allclose(out, reference, atol=1e-6)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (expected,) = torch.autograd.grad(reference.square().sum(), x)
    assert torch.allclose(grad, expected, atol=1e-5)


# --- Cluster addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, message",
    [
        ("tcp://host:port", "cluster address 'tcp://host:port': the port must be a number from 1 to 65535"),
        ("tcp://host:99999", "cluster address 'tcp://host:99999': the port must be a number from 1 to 65535"),
        ("tcp://host:0", "cluster address 'tcp://host:0': the port must be a number from 1 to 65535"),
        ("tcp://:8786", "cluster address 'tcp://:8786' names no host; use tcp://HOST:PORT"),
        ("tcp://host:8786/x?y", "cluster address 'tcp://host:8786/x?y' has a path or query; use tcp://HOST:PORT"),
        (
            "http://host:8786",
            "unknown cluster 'http://host:8786'; use local, local-cuda, inprocess or a scheduler "
            "address such as tcp://host:8786",
        ),
        (
            "host:8786",
            "unknown cluster 'host:8786'; use local, local-cuda, inprocess or a scheduler address such as "
            "tcp://host:8786",
        ),
    ],
    ids=["port-text", "port-range", "port-zero", "no-host", "path", "scheme", "no-scheme"],
)
def test_a_malformed_cluster_address_is_one_line_before_any_work(small_checkpoint, tmp_path, capsys, address, message):
    assert main(report(tmp_path / "R", small_checkpoint, "--cluster", address)) == 2
    assert last_line(capsys) == f"segattack report: error: {message}"
    assert not (tmp_path / "R").exists()


def serve(kind: str) -> tuple[socket.socket, int]:
    """A local TCP service that is not a Dask scheduler: silent, HTTP, or random bytes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)  # kept open: a silent service never hangs up
            try:
                if kind == "http":
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                elif kind == "random":
                    conn.sendall(np.random.default_rng(0).bytes(4096))
            except OSError:
                pass

    threading.Thread(target=loop, daemon=True).start()
    return server, server.getsockname()[1]


def bounded(fn, *args):
    """``fn(*args)``; a hang fails the test (an alarm after 120 s) instead of stalling the suite."""

    def hang(signum, frame):
        raise AssertionError("did not end")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(120)
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    "kind, message",
    [
        (
            "silent",
            "no Dask scheduler answered at {} within 2 s (nothing listening, or a service that says nothing); "
            "check --cluster",
        ),
        ("http", "{} is not a Dask scheduler (it answered with what Dask cannot read: MemoryError); check --cluster"),
        ("random", "{} is not a Dask scheduler (it answered with what Dask cannot read: "),
    ],
    ids=["silent", "http", "random"],
)
def test_a_service_that_is_not_a_scheduler_is_one_line(small_checkpoint, tmp_path, capsys, monkeypatch, kind, message):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 2.0)
    server, port = serve(kind)
    address = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "R"
    (job,) = plan(
        "tiny",
        out,
        {"weights": str(small_checkpoint), "size": 48, "batch": 1},
        ("mobilenet_v3_large",),
        ("pgd",),
        "none",
    )  # the report's own run
    store.claim(out, "report")
    job.write("00000", job.compute("00000"))  # finished before: kept
    try:
        assert bounded(main, report(out, small_checkpoint, "-p", "batch=1", "--cluster", address)) == 2
    finally:
        server.close()
    assert last_line(capsys).startswith("segattack report: error: " + message.format(address))
    assert job.pending() == ["00001"]


def test_a_cluster_without_workers_stops_with_one_line(small_checkpoint, tmp_path, capsys, monkeypatch):
    from distributed import LocalCluster

    monkeypatch.setenv("SEGATTACK_WORKER_WAIT", "2")
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", dashboard_address=":0") as empty:
        address = empty.scheduler_address
        assert bounded(main, report(tmp_path / "R", small_checkpoint, "--cluster", address)) == 2
    assert last_line(capsys) == (
        f"segattack report: error: the Dask cluster at {address} has had no workers for 2 s; "
        f"every finished task is kept: start workers and run the same command again"
    )


def test_as_completed_yields_every_future_while_workers_are_there():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as local,
        Client(local) as client,
    ):
        futures = [client.submit(pow, k, 2) for k in range(5)]
        assert sorted(f.result() for f in cluster.as_completed(client, futures, patience=1, poll=0.05)) == [
            0,
            1,
            4,
            9,
            16,
        ]
        local.scale(0)
        while client.nthreads():
            time.sleep(0.05)
        with pytest.raises(RuntimeError, match="has had no workers for 1 s"):
            list(cluster.as_completed(client, [client.submit(pow, 7, 2)], patience=1, poll=0.05))


def test_the_worker_wait_is_checked(monkeypatch):
    monkeypatch.setenv("SEGATTACK_WORKER_WAIT", "soon")
    with pytest.raises(ParameterError, match="SEGATTACK_WORKER_WAIT must be a number of seconds > 0, got 'soon'"):
        cluster.worker_wait()
    monkeypatch.delenv("SEGATTACK_WORKER_WAIT")
    assert cluster.worker_wait() == 600 and os.environ.get("SEGATTACK_WORKER_WAIT") is None
