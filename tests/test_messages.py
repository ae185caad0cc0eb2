"""Messages that name the option or the file: attack_params given as text, a full disk, Ctrl-C with the
local cluster (a stray user kernelspec: tests/test_report_survives.py)."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from segattack.cli import main
from segattack.engine import store
from segattack.engine.cluster import local_cluster
from segattack.engine.jobs import TaskState
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


@pytest.fixture(scope="module")
def segformer_dir(tmp_path_factory):
    """A tiny random SegFormer saved with save_pretrained, beside its image processor config."""
    import torch

    transformers = pytest.importorskip("transformers")
    from tests.test_zoo import TINY_HF

    where = tmp_path_factory.mktemp("segformer")
    torch.manual_seed(0)
    TINY_HF["segformer"]().save_pretrained(where)
    transformers.SegformerImageProcessor().save_pretrained(where)
    return where


@pytest.mark.parametrize(
    "file, text, message",
    [
        ("config.json", '{"model_type": "segformer",', r"config.json is not valid JSON \(Expecting"),
        ("config.json", "[1, 2]", r"config.json holds a JSON list, not an object"),
        ("preprocessor_config.json", "{'image_std': 1}", r"preprocessor_config.json is not valid JSON"),
        (
            "preprocessor_config.json",
            '{"image_std": [0, 0, 0]}',
            r"preprocessor_config.json's image_std must be 3 finite positive numbers, got \[0, 0, 0\]",
        ),
        (
            "preprocessor_config.json",
            '{"image_mean": "half"}',
            r"preprocessor_config.json's image_mean must be 3 finite numbers, got 'half'",
        ),
    ],
    ids=["config-truncated", "config-list", "processor-python", "std-zeros", "mean-text"],
)
def test_a_broken_hf_json_file_is_named(segformer_dir, tmp_path, file, text, message):
    """A bare JSON decoder error, an AttributeError, or an image_std of zeros blamed on the step size."""
    import shutil

    from segattack.models import load_model
    from segattack.models.specs import SpecError

    folder = tmp_path / "model"
    shutil.copytree(segformer_dir, folder)
    (folder / file).write_text(text)
    with pytest.raises(SpecError, match=f"^hf:{folder}: {folder}/{message}"):
        load_model(f"hf:{folder}")


def _pairs(root, mask_value: int = 0, classes: bytes | None = None):
    """A pairs: folder of two 48 px images whose masks all hold ``mask_value``."""
    import numpy as np
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((48, 48, 3), 60 * i, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.full((48, 48), mask_value, np.uint8)).save(root / "masks" / f"{i}.png")
    if classes is not None:
        (root / "classes.txt").write_bytes(classes)
    return root


def test_a_reading_no_image_defines_is_printed_as_n_a(tmp_path, capsys):
    """results.json held null for IoU to target (ignore-only truth targets) and the command printed 0.00%."""
    import json

    root = _pairs(tmp_path / "pairs", 255)
    args = ["attack", "--backbone", "mobilenet_v3_large", "--attack", "pgd", "--weights", "embedded"]
    args += ["--images", f"pairs:{root}", "--target-source", "truth", "--target-scheme", "roll", "--size", "48"]
    assert main([*args, "--out", str(tmp_path / "run"), "--steps", "1", "--num-images", "2"]) == 0
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["summary"]["iou_target"]["mean"] is None
    out = capsys.readouterr().out
    assert ", to target n/a," in out and "0.00%" not in out.split("to target")[1].split(",")[0]


@pytest.mark.parametrize("what", ["classes", "label map"])
@pytest.mark.parametrize("data", [b"\xff\xfe\x00r\x00o", b"road\x00\x01\x02"], ids=["latin", "nul"])
def test_a_binary_label_file_is_named_with_its_form(tmp_path, what, data):
    """A binary label map or classes.txt gave a bare codec error."""
    if what == "classes":
        root = _pairs(tmp_path / "pairs", 0, data)
        with pytest.raises(ParameterError) as info:
            RunConfig(backbone="module:torch.nn:Identity", images=f"pairs:{root}")
        file, form = root / "classes.txt", "one class name per line"
    else:
        file, form = tmp_path / "map.txt", "'DATASET_CLASS -> MODEL_CLASS' per line"
        file.write_bytes(data)
        with pytest.raises(ParameterError) as info:
            RunConfig(images="scenes", label_map=str(file))
    kind = "classes file" if what == "classes" else "label map"
    why = (
        "is not UTF-8 text (byte 0xff at offset 0)" if data[0] == 0xFF else "holds binary data (a NUL byte at offset 4)"
    )
    assert str(info.value) == f"{kind} {file} {why}; write it as text: {form}"


def test_a_pickled_object_in_a_checkpoint_is_named(tmp_path):
    """torch 2.14 says 'unsupported GLOBAL'; the check looked for 'Unsupported global' and passed on torch's
    'Check the documentation of torch.load...'."""
    import torch

    from segattack.models.checkpoints import CheckpointError, read

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pt"
    torch.save({"state": Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        read(path)
    assert str(info.value) == (
        f"refused to load {path}: it holds a pickled object (posix.getcwd), not only tensors and plain containers, "
        f"and weights_only=True never runs such code; save the weights alone (torch.save(model.state_dict(), PATH)) "
        f"or use a file from a source you trust to do so"
    )


def test_torchs_own_write_failure_on_a_full_disk_is_named(small_checkpoint, tmp_path, monkeypatch):
    """A full disk during assembly gave '[enforce fail at inline_container.cc:672]'."""
    import shutil

    import torch

    from segattack.study.runner import RunJob

    cfg = RunConfig(weights=str(small_checkpoint), num_images=2, steps=1, size=48)
    job = RunJob(cfg, tmp_path / "run")
    for unit in job.units():
        job.write(unit, job.compute(unit))

    def enforce(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", enforce)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(store.FolderError) as info:
        job.finish()
    assert str(info.value) == (
        f"cannot write {tmp_path / 'run'}: no space left on its device (No space left on device); free some space "
        f"and run the same command again (finished work is kept)"
    )
    assert job.pending() == [] and not (job.path / "results.json").exists()


def test_a_cluster_address_without_a_port_is_named(small_checkpoint, tmp_path, capsys):
    """--cluster tcp://127.0.0.1 said 'is not a Dask scheduler'."""
    args = ["report", "--profile", "tiny", "--out", str(tmp_path / "R"), "--studies", "none"]
    assert main([*args, "-p", f"weights={small_checkpoint}", "--cluster", "tcp://127.0.0.1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "segattack report: error: cluster address 'tcp://127.0.0.1' names no port; use tcp://127.0.0.1:PORT (a Dask "
        "scheduler listens on 8786 unless told otherwise)"
    )
    assert not (tmp_path / "R").exists()


def test_a_number_given_as_a_text_parameter_is_its_text(small_checkpoint):
    """-p window=32 was refused as 'must be text'."""
    from segattack.util.params import parse_override

    key, value = parse_override("window=32")
    cfg = RunConfig(weights=str(small_checkpoint), size=48, **{key: value})
    assert cfg.window == "32"
    with pytest.raises(ParameterError, match="window must be text, got 1.5"):
        RunConfig(weights=str(small_checkpoint), window=1.5)


def test_a_report_rerun_with_other_models_says_the_earlier_runs_stay(small_checkpoint, tmp_path, capsys, monkeypatch):
    """A re-run with other --models kept the earlier run in Table 1 while the command printed only the new one."""
    from segattack.engine import render

    monkeypatch.setattr(render, "build_report", lambda out, profile: Path(out) / "index.html")
    monkeypatch.setattr("segattack.engine.grid.render", lambda job: TaskState.DONE)
    out = tmp_path / "R"
    base = ["report", "--profile", "tiny", "--out", str(out), "--studies", "none", "--cluster", "inprocess"]
    base += ["-p", f"weights={small_checkpoint}", "-p", "size=48", "-p", "num_images=2", "-p", "steps=1"]
    assert main([*base, "--backbones", "mobilenet_v3_large", "--attacks", "pgd"]) == 0
    assert "earlier run" not in capsys.readouterr().out
    assert main([*base, "--backbones", "mobilenet_v3_large", "--attacks", "segpgd"]) == 0
    printed = capsys.readouterr().out
    assert f"the report also shows 1 earlier run(s) in {out / 'runs'}: mobilenet_v3_large-pgd (every folder" in printed
