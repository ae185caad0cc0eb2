"""The report survives a bad folder, any TMPDIR, any inherited MPLBACKEND and any user kernelspec; no
failure of a notebook, a kernel or Dask reaches the terminal as a traceback unless -v asks for it."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from html import unescape
from pathlib import Path

import nbformat
import pytest

from segattack.cli import main
from segattack.engine import kernels
from segattack.engine.render import execute
from segattack.study.config import RunConfig
from segattack.study.report import load_runs
from segattack.study.runner import run


@pytest.fixture(scope="module")
def finished_run(small_checkpoint, tmp_path_factory):
    cfg = RunConfig(weights=str(small_checkpoint), num_images=2, steps=1, size=48)
    out = tmp_path_factory.mktemp("finished") / "run"
    run(cfg, out, progress=False)
    return out


BAD_RESULTS = {  # run folder -> how its results.json was damaged, and the reason the report gives
    "resnet50-pgd": (lambda text: text[: len(text) // 2], "unreadable results: "),
    "resnet50-asma": (lambda text: "[1, 2, 3]", "holds a JSON list, not a results document"),
    "mobilenet_v3_large-asma": (
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "summary"}),
        "lacks the field 'summary'",
    ),
}


def damage(finished_run: Path, runs: Path) -> None:
    for name, (edit, _) in BAD_RESULTS.items():
        shutil.copytree(finished_run, runs / name)
        results = runs / name / "results.json"
        results.write_text(edit(results.read_text()))


def test_bad_results_are_listed_as_failed(finished_run, tmp_path):
    damage(finished_run, tmp_path)
    runs, failed = load_runs(tmp_path)
    assert runs == []
    assert {f.run: f.error for f in failed}.keys() == BAD_RESULTS.keys()
    for f in failed:
        assert BAD_RESULTS[f.run][1] in f.error and f.error.startswith("unreadable results: ")


@pytest.mark.slow
def test_the_report_is_written_beside_bad_run_folders(finished_run, small_checkpoint, tmp_path, capsys):
    """Runs of an earlier report (other backbones and attacks) whose results.json is truncated, a JSON
    list or missing a field: the grid leaves them alone, the report lists them as failed with the reason."""
    out = tmp_path / "R"
    damage(finished_run, out / "runs")
    (out / ".segattack").touch()
    args = [
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
        "--cluster",
        "inprocess",
        "-p",
        f"weights={small_checkpoint}",
        "-p",
        "size=48",
    ]
    assert main(args) == 0
    assert "Traceback" not in capsys.readouterr().err
    html = unescape((out / "index.html").read_text())
    assert "1 finished run(s), 3 failed or unfinished" in html
    for name, (_, reason) in BAD_RESULTS.items():
        assert name in html and reason in html


@pytest.fixture
def stray_python3_kernelspec(tmp_path, monkeypatch):
    """A user-level kernelspec named python3 that starts another (here: no) interpreter."""
    data = tmp_path / "jupyter"
    spec = data / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["/nonexistent/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "someone else's Python",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    return spec


def probe_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import sys, tempfile, matplotlib.pyplot as plt, matplotlib\n"
            "print(sys.executable, matplotlib.get_backend())"
        )
    ]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_kernels_run_under_a_long_tmpdir_a_bad_mplbackend_and_a_stray_kernelspec(
    tmp_path, monkeypatch, stray_python3_kernelspec
):
    long = tmp_path / ("t" * 120)
    long.mkdir()
    monkeypatch.setenv("TMPDIR", str(long))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert tempfile.gettempdir() == str(long) and kernels.ipc_parent() == "/tmp"
    monkeypatch.setenv("MPLBACKEND", "nonsense")
    executed = tmp_path / "out.ipynb"
    execute(str(probe_notebook(tmp_path / "probe.ipynb")), executed, {})  # an absolute path: the notebook as is
    (cell,) = nbformat.read(executed, as_version=4).cells
    assert cell.outputs[0]["text"].split() == [sys.executable, kernels.INLINE_BACKEND]


def test_the_kernel_socket_folder_keeps_paths_short(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert kernels.ipc_parent() == str(tmp_path)  # short enough: the temporary folder itself
    monkeypatch.setattr(tempfile, "tempdir", "/" + "d" * 80)
    assert kernels.ipc_parent() == "/tmp"
    manager = kernels.IPCKernelManager()
    try:
        assert len((manager.ip + "-65535").encode()) < kernels.IPC_PATH_MAX
        assert manager.kernel_spec.argv[0] == sys.executable
    finally:
        shutil.rmtree(manager._ipc_dir)


def test_an_unexpected_failure_is_one_line_and_v_shows_its_traceback(small_checkpoint, tmp_path, capsys, monkeypatch):
    import segattack.study.runner as runner

    def broken(*args, **kwargs):
        raise KeyError("a kernel or Dask failure of a kind the CLI does not name")

    monkeypatch.setattr(runner, "run_shard", broken)
    args = [
        "attack",
        "--backbone",
        "mobilenet_v3_large",
        "--attack",
        "pgd",
        "--weights",
        str(small_checkpoint),
        "--out",
        str(tmp_path / "o"),
        "--num-images",
        "2",
        "--steps",
        "1",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "segattack attack: error: KeyError: 'a kernel or Dask failure of a kind "
        "the CLI does not name' (-v prints the traceback)"
    )
    assert main([*args, "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.strip().splitlines()[-1].startswith("segattack attack: error: KeyError:")
    assert (
        main(
            [
                "report",
                "-v",
                "--out",
                str(tmp_path / "R"),
                "--profile",
                "tiny",
                "--studies",
                "none",
                "--backbones",
                "mobilenet_v3_large",
                "--attacks",
                "pgd",
                "-p",
                f"weights={small_checkpoint}",
                "--cluster",
                "tcp://host:port",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == (
        "segattack report: error: cluster address 'tcp://host:port': the port must be a number from 1 to 65535"
    )
