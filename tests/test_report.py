"""The study end to end on the tiny profile: papermill runs, resume, nbconvert HTML. The tiny report
is conftest's ``tiny_report``, built once per test run; the tests that write work on a copy."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from segattack.engine.render import build_report
from segattack.study.profiles import grid_configs
from segattack.study.profiles import run_profile as run_grid
from segattack.study.runner import RunJob
from segattack.util.params import ParameterError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_grid_runs_every_backbone_and_attack(tiny_report):
    out, status = tiny_report.out, tiny_report.states
    assert status == {
        "mobilenet_v3_large-asma": "done",
        "mobilenet_v3_large-pgd": "done",
        "resnet50-asma": "done",
        "resnet50-pgd": "done",
        "studies": "done",
    }
    studies = json.loads((out / "studies" / "studies.json").read_text())
    assert {r["attack"] for r in studies["comparison"]} == {"pgd", "asma", "dag", "segpgd", "cospgd"}
    assert len({r["eps"] for r in studies["security"]}) >= 5
    for cfg in grid_configs("tiny"):
        run_dir = out / "runs" / f"{cfg.backbone}-{cfg.attack}"
        assert RunJob(cfg, run_dir).complete()
        executed = nbformat.read(run_dir / "attack.ipynb", as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")


def test_restarted_grid_redoes_only_the_unfinished_run(tiny_report, tmp_path, monkeypatch):
    import segattack.study.runner as runner

    out = tiny_report.out
    work = tmp_path / "work"
    shutil.copytree(out, work)
    victim = work / "runs" / "resnet50-pgd"
    before = {p: p.stat().st_mtime_ns for p in (work / "runs").glob("*/results.json") if p.parent != victim}
    (victim / "results.json").unlink()  # as if killed before its results were assembled
    next(victim.glob("shards/*/00000.pt")).unlink()  # ... and before its shard was written
    computed = []
    real = runner.run_shard
    monkeypatch.setattr(
        runner, "run_shard", lambda cfg, k: computed.append((cfg.backbone, cfg.attack, k)) or real(cfg, k)
    )
    status = run_grid("tiny", work, cluster="inprocess", progress=False)
    assert status["resnet50-pgd"] == "done" and computed == [("resnet50", "pgd", 0)]
    assert [s for n, s in status.items() if n != "resnet50-pgd"] == ["skipped"] * 4  # 3 runs + the studies
    assert {p: p.stat().st_mtime_ns for p in before} == before
    ours = json.loads((victim / "results.json").read_text())
    theirs = json.loads((out / "runs" / "resnet50-pgd" / "results.json").read_text())
    assert ours["per_image"] == theirs["per_image"] and ours["history"] == theirs["history"]
    # a changed parameter invalidates the run; the old results stay until the new ones are complete
    computed.clear()
    assert run_grid(
        "tiny",
        work,
        {"steps": 1},
        backbones=("mobilenet_v3_large",),
        attacks=("pgd",),
        studies="none",
        cluster="inprocess",
        progress=False,
    ) == {"mobilenet_v3_large-pgd": "done"}
    assert computed == [("mobilenet_v3_large", "pgd", 0)]


def test_a_stop_between_results_and_notebook_reruns_only_the_notebook(tiny_report, tmp_path, monkeypatch):
    import segattack.study.runner as runner
    import segattack.study.studies as studies_module

    out = tiny_report.out
    work = tmp_path / "work"
    shutil.copytree(out, work)
    run, studies = work / "runs" / "mobilenet_v3_large-pgd", work / "studies"
    (run / "attack.ipynb").unlink()  # stopped after its results were assembled, before its notebook ran
    (studies / "failed.json").write_text('{"error": "KeyboardInterrupt", "notebook": ""}')  # or that failed
    kept = {p: p.read_bytes() for p in [run / "results.json", studies / "studies.json"]}
    monkeypatch.setattr(runner, "run_shard", lambda *a: pytest.fail("a finished shard was computed again"))
    monkeypatch.setattr(studies_module, "run_cell", lambda *a: pytest.fail("a finished cell was computed again"))
    status = run_grid("tiny", work, cluster="inprocess", progress=False)
    assert status["mobilenet_v3_large-pgd"] == status["studies"] == "done"
    assert sorted(status.values()).count("skipped") == 3
    assert {p: p.read_bytes() for p in kept} == kept and not (studies / "failed.json").exists()
    executed = nbformat.read(run / "attack.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    assert not list(work.rglob(".*.partial.ipynb"))


def test_a_failing_run_keeps_its_earlier_results_and_is_reported(tiny_report, tmp_path):
    out = tiny_report.out
    work = tmp_path / "work"
    shutil.copytree(out, work)
    earlier = (work / "runs" / "mobilenet_v3_large-asma" / "results.json").read_bytes()
    with pytest.raises(ParameterError, match="beta must be > 0"):  # refused before any work
        run_grid(
            "tiny",
            work,
            {"attack_params": {"beta": -1.0}},
            backbones=("mobilenet_v3_large",),
            attacks=("asma",),
            studies="none",
            cluster="inprocess",
            progress=False,
        )
    # a failure inside the work (here: a model whose logits are NaN) is recorded beside the earlier results
    import torch

    from segattack.models import checkpoints
    from segattack.models.backbones import embedded_weights_path

    state = checkpoints.read(embedded_weights_path("mobilenet_v3_large"))["state"]
    state["classifier.4.weight"] = torch.full_like(state["classifier.4.weight"], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    status = run_grid(
        "tiny",
        work,
        {"weights": str(tmp_path / "nan.pt")},
        backbones=("mobilenet_v3_large",),
        attacks=("asma",),
        studies="none",
        cluster="inprocess",
        progress=False,
    )
    assert status == {"mobilenet_v3_large-asma": "failed"}
    run_dir = work / "runs" / "mobilenet_v3_large-asma"
    assert "AttackDiverged" in json.loads((run_dir / "failed.json").read_text())["error"]
    assert (run_dir / "results.json").read_bytes() == earlier
    html = build_report(work, "tiny").read_text()
    assert "Failed or unfinished runs" in html and "non-finite logits" in html and "earlier results" in html


def test_html_report_holds_table_figures_and_provenance(tiny_report):
    out = tiny_report.out  # the report command wrote index.html with build_report(out, "tiny")
    html = (out / "index.html").read_text()
    assert (out / "report.ipynb").is_file()
    for row in ("ResNet ASMA", "ResNet PGD Attack", "MobileNet ASMA", "MobileNet PGD Attack"):
        assert row in html
    for paper_value in ("36.93", "15.75", "42.31", "14.88", "55.82", "3,534,895.25", "5,020.88"):
        assert paper_value in html
    for number in range(1, 7):
        assert f"Figure {number}:" in html
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64', html)) >= 10
    assert "Provenance" in html and "parameters hash" in html and "NOT the paper" in html
    assert "clean mIoU vs ground truth" in html and "one confusion matrix over 2 images" in html
    assert "What holds" in html and "0-255 pixel units" in html
    assert "cdnjs" not in html and "def figure(" not in html  # offline, code hidden
    for section in ("Attack comparison", "Security curves", "Transferability", "Per-class difficulty"):
        assert section in html


def test_committed_notebooks_carry_no_outputs():
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        book = nbformat.read(path, as_version=4)
        assert book.metadata.kernelspec.name == "python3"
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path
        assert any("parameters" in c.metadata.get("tags", []) for c in book.cells), path


def close(a: Any, b: Any) -> bool:
    """Equal JSON documents, their floats up to a relative 1e-6."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(close, a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def test_close_tells_rounding_from_a_difference():
    assert close({"m": [58.87208706974097, None]}, {"m": [58.87208098737396, None]})
    assert not close({"m": [58.872, None]}, {"m": [58.873, None]}) and not close({"m": [1.0]}, {"n": [1.0]})


def test_sigkill_mid_grid_then_restart_redoes_only_the_unfinished_shards(tiny_report, tmp_path):
    reference = tiny_report.out
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segattack",
            "report",
            "--profile",
            "tiny",
            "--out",
            str(tmp_path),
            "--cluster",
            "inprocess",
            "--studies",
            "none",
        ],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list(runs.glob("*/shards/*/*.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "grid ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # a run is assembled as soon as its shards are in, so the kill may find some runs finished
    finished = {p: p.stat().st_mtime_ns for p in [*runs.glob("*/shards/*/*.pt"), *runs.glob("*/results.json")]}
    status = run_grid("tiny", tmp_path, studies="none", cluster="inprocess", progress=False)
    assert finished and len(list(runs.glob("*/results.json"))) > sum(p.name == "results.json" for p in finished)
    assert set(status.values()) <= {"done", "skipped"}  # skipped: finished before the kill
    for name in status:  # the uninterrupted grid's numbers, up to float32 rounding: the killed command
        # ran in another process, whose oneDNN kernels may sum in another order (1e-7 relative seen)
        ours = json.loads((runs / name / "results.json").read_text())
        theirs = json.loads((reference / "runs" / name / "results.json").read_text())
        assert close(ours["per_image"], theirs["per_image"]) and close(ours["history"], theirs["history"]), name
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished shards were kept, not recomputed
    assert "MobileNet PGD Attack" in build_report(tmp_path, "tiny").read_text()


def test_user_text_is_escaped_in_the_report(tiny_report, tmp_path):
    out = tiny_report.out
    work = tmp_path / "work"
    shutil.copytree(out, work)
    results = work / "runs" / "mobilenet_v3_large-pgd" / "results.json"
    doc = json.loads(results.read_text())
    doc["weights"]["description"] = "<script>alert('weights')</script>"  # e.g. from a crafted checkpoint
    doc["attack_params"]["note"] = "<img src=x onerror=alert(1)>"
    results.write_text(json.dumps(doc))
    html = build_report(work, "<b>tiny</b>").read_text()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>tiny</b>" not in html
    assert "&lt;script&gt;alert" in html and "&lt;b&gt;tiny&lt;/b&gt;" in html


def test_run_names_cannot_leave_the_output_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown attack '../../evil'"):
        run_grid("tiny", tmp_path / "out", attacks=("../../evil",), cluster="inprocess")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize(
    "signals",
    [[signal.SIGTERM], [signal.SIGHUP], [signal.SIGINT, signal.SIGTERM, signal.SIGTERM]],
    ids=["SIGTERM", "SIGHUP", "repeated"],
)
def test_a_stopped_report_leaves_no_kernel_running(tmp_path, signals):
    """jupyter_client starts kernels in their own session: a signal to the command's process group
    (a batch scheduler's time limit, `timeout`, a closed terminal) never reaches them."""
    import psutil

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segattack",
            "report",
            "--profile",
            "tiny",
            "--out",
            str(tmp_path),
            "--cluster",
            "inprocess",
            "--studies",
            "none",
            "--backbones",
            "mobilenet_v3_large",
            "--attacks",
            "pgd",
        ],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent, kernels, deadline = psutil.Process(proc.pid), [], time.monotonic() + 300
    while not kernels:  # wait until a notebook kernel is running
        assert proc.poll() is None and time.monotonic() < deadline, "no kernel was started"
        try:
            kernels = [p for p in parent.children(recursive=True) if "ipykernel_launcher" in " ".join(p.cmdline())]
        except psutil.Error:
            pass
        time.sleep(0.05)
    for sig in signals:
        os.killpg(proc.pid, sig)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signals[0]
    name = "Ctrl-C" if signals[0] == signal.SIGINT else signals[0].name
    assert err.strip().splitlines()[-1].startswith(f"segattack report: stopped ({name})")
    assert "Traceback" not in err and "without encryption" not in err
    time.sleep(1)
    alive = [k for k in kernels if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"kernels still running: {[k.pid for k in alive]}"


def test_the_report_command_prints_nothing_that_asks_nothing(local_cluster_report):
    """conftest's ``local_cluster_report``: one report command on the default local Dask cluster."""
    err = local_cluster_report.stderr
    assert local_cluster_report.returncode == 0, err[-2000:]
    assert "Dask dashboard: http" in err and "grid: 100%" in err
    noise = [line for line in err.splitlines() if "WARNING" in line or "Warning" in line]
    assert not noise and "without encryption" not in err, noise


def test_a_bad_report_parameter_leaves_every_earlier_result_intact(tiny_report, tmp_path, capsys):
    from segattack.cli import main

    out = tiny_report.out
    work = tmp_path / "work"
    shutil.copytree(out, work)
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    assert main(["report", "--profile", "tiny", "--out", str(work), "-p", "steps=abc"]) == 2
    assert "steps must be an integer, got 'abc'" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before
