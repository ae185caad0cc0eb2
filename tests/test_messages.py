"""Messages that name the option or the file: attack_params given as text, a full disk, Ctrl-C with the
local cluster (a stray user kernelspec: tests/test_report_survives.py)."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from segattack.cli import main
from segattack.engine import store
from segattack.engine.cluster import local_cluster
from segattack.study.config import RunConfig
from segattack.util.params import ParameterError


@pytest.mark.parametrize(
    "text",
    ['{"eps": 0.05, "mode": "linf", "targeted": true}', "{'eps': 0.05, 'mode': 'linf', 'targeted': True}"],
    ids=["json", "python"],
)
def test_attack_params_may_be_given_as_text(small_checkpoint, text):
    """papermill's -p attack_params '{...}' passes text: JSON or a Python dict literal is read as the dict."""
    cfg = RunConfig(weights=str(small_checkpoint), attack_params=text)
    assert cfg.attack_params == {"eps": 0.05, "mode": "linf", "targeted": True}
    assert (
        cfg.digest()
        == RunConfig(
            weights=str(small_checkpoint), attack_params={"eps": 0.05, "mode": "linf", "targeted": True}
        ).digest()
    )


@pytest.mark.parametrize("text", ["eps=0.05", "[0.05]", '"eps"', ""], ids=["override", "list", "string", "empty"])
def test_attack_params_text_that_is_no_dict_is_refused_by_name(small_checkpoint, text):
    with pytest.raises(ParameterError) as info:
        RunConfig(weights=str(small_checkpoint), attack_params=text)
    assert str(info.value) == (
        f"attack_params must be a dict such as {{'eps': 0.03}} or its JSON text '{{\"eps\": 0.03}}', got {text!r}"
    )


def test_report_attack_params_text_is_refused_by_name(small_checkpoint, tmp_path, capsys):
    assert (
        main(
            [
                "report",
                "--profile",
                "tiny",
                "--out",
                str(tmp_path / "R"),
                "--studies",
                "none",
                "--cluster",
                "inprocess",
                "-p",
                f"weights={small_checkpoint}",
                "-p",
                "attack_params=eps:0.1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "segattack report: error: attack_params must be a dict such as {'eps': 0.03} or its JSON text "
        "'{\"eps\": 0.03}', got 'eps:0.1'"
    ]
    assert not (tmp_path / "R").exists()


@pytest.fixture
def full_disk(monkeypatch):
    """Every file segattack writes atomically lands on /dev/full: each write fails with ENOSPC, as on a full disk."""
    real = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        os.close(fd)
        return real(os.open("/dev/full", os.O_WRONLY), mode, *args, **kwargs)

    monkeypatch.setattr(store.os, "fdopen", fdopen)


def test_a_full_disk_while_saving_a_shard_is_one_line_naming_the_file(small_checkpoint, tmp_path, capsys, full_disk):
    out = tmp_path / "run"
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
                str(out),
                "--num-images",
                "2",
                "--steps",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    (shard,) = out.glob("shards/*")
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"segattack attack: error: cannot write {shard / '00000.pt'}: no space left on its device (No space left on "
        f"device); free some space and run the same command again (finished work is kept)"
    )
    assert list(shard.iterdir()) == []  # no half-written temporary file left behind


def test_a_full_disk_while_writing_a_document_names_the_file(tmp_path, full_disk):
    target = tmp_path / "results.json"
    target.write_text("earlier")
    with pytest.raises(store.FolderError, match=f"cannot write {target}: no space left") as info:
        store.atomic_write_text(target, "x" * 100_000)
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_other_write_errors_pass_through_unchanged(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store.os, "fdopen", denied)
    with pytest.raises(PermissionError):
        store.atomic_save({"x": 1}, tmp_path / "a.pt")
    assert list(tmp_path.iterdir()) == []


def test_local_cluster_workers_ignore_ctrl_c():
    """Ctrl-C reaches the whole process group: the workers ignore it (no KeyboardInterrupt traceback of
    theirs under the command's line) and the command, which stops and shuts them down, keeps its handler."""
    before = signal.getsignal(signal.SIGINT)
    with local_cluster(workers=1, threads=1) as client:
        assert signal.getsignal(signal.SIGINT) is before
        assert list(client.run(lambda: signal.getsignal(signal.SIGINT) == signal.SIG_IGN).values()) == [True]
        (pid,) = client.run(os.getpid).values()
        os.kill(pid, signal.SIGINT)
        assert list(client.run(os.getpid).values()) == [pid]  # the same worker, alive and answering
        assert client.submit(pow, 3, 2).result() == 9


@pytest.mark.parametrize("where", ["tensors", "png"])
def test_a_full_disk_while_assembling_names_the_run_folder_and_keeps_the_shards(
    small_checkpoint, tmp_path, monkeypatch, where
):
    from PIL import Image

    from segattack.study.runner import RunJob

    cfg = RunConfig(weights=str(small_checkpoint), num_images=2, steps=1, size=48)
    job = RunJob(cfg, tmp_path / "run")
    for unit in job.units():
        job.write(unit, job.compute(unit))
    if where == "tensors":  # tensors.pt lands on /dev/full
        real = os.fdopen
        monkeypatch.setattr(
            store.os,
            "fdopen",
            lambda fd, mode="r", *a, **k: (os.close(fd), real(os.open("/dev/full", os.O_WRONLY), mode, *a, **k))[1],
        )
    else:  # PIL writes the PNGs itself

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(store.FolderError) as info:  # the message names the run folder being assembled
        job.finish()
    assert str(info.value) == (
        f"cannot write {tmp_path / 'run'}: no space left on its device (No space left on "
        f"device); free some space and run the same command again (finished work is kept)"
    )
    assert job.pending() == [] and not (job.path / "results.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left
