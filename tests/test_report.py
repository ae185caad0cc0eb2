"""The study end to end on the tiny profile: papermill runs, resume, nbconvert HTML."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from segattack.grid import build_report, config_hash, grid_configs, is_complete, run_grid

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    status = run_grid("tiny", out)
    return out, status


def test_grid_runs_every_backbone_and_attack(tiny_study):
    out, status = tiny_study
    assert status == {"mobilenet_v3_large-asma": "done", "mobilenet_v3_large-pgd": "done",
                      "resnet50-asma": "done", "resnet50-pgd": "done", "studies": "done"}
    studies = json.loads((out / "studies" / "studies.json").read_text())
    assert {r["attack"] for r in studies["comparison"]} == {"pgd", "asma", "dag", "segpgd", "cospgd"}
    assert len({r["eps"] for r in studies["security"]}) >= 5
    for cfg in grid_configs("tiny"):
        run_dir = out / "runs" / f"{cfg.backbone}-{cfg.attack}"
        assert is_complete(run_dir, config_hash(cfg))
        executed = nbformat.read(run_dir / "attack.ipynb", as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")


def test_restarted_grid_redoes_only_the_unfinished_run(tiny_study, tmp_path):
    out, _ = tiny_study
    victim = out / "runs" / "resnet50-pgd"
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.json") if p.parent != victim}
    (victim / "results.json").unlink()  # as if killed before its results were written
    status = run_grid("tiny", out)
    assert status["resnet50-pgd"] == "done"
    assert [s for n, s in status.items() if n != "resnet50-pgd"] == ["skipped"] * 4  # 3 runs + the studies
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # a changed parameter invalidates the run (checked on a copy: the study stays as it was)
    shutil.copytree(out, tmp_path / "copy")
    assert run_grid("tiny", tmp_path / "copy", {"steps": 1}, backbones=("mobilenet_v3_large",),
                    attacks=("pgd",), studies="none") == {"mobilenet_v3_large-pgd": "done"}


def test_failing_run_keeps_its_notebook_and_is_reported(tmp_path):
    status = run_grid("tiny", tmp_path, {"attack_params": {"beta": -1.0}}, backbones=("mobilenet_v3_large",),
                      attacks=("asma",), studies="none")
    assert status == {"mobilenet_v3_large-asma": "failed"}
    failure = json.loads((tmp_path / "runs" / "mobilenet_v3_large-asma" / "failed.json").read_text())
    assert "beta must be > 0" in failure["error"] and Path(failure["notebook"]).is_file()
    html = build_report(tmp_path, "tiny").read_text()
    assert "Failed or unfinished runs" in html and "beta must be &gt; 0" in html


def test_html_report_holds_table_figures_and_provenance(tiny_study):
    out, _ = tiny_study
    html = build_report(out, "tiny").read_text()
    assert (out / "report.ipynb").is_file()
    for row in ("ResNet ASMA", "ResNet PGD Attack", "MobileNet ASMA", "MobileNet PGD Attack"):
        assert row in html
    for paper_value in ("36.93", "15.75", "42.31", "14.88", "55.82", "3,534,895.25", "5,020.88"):
        assert paper_value in html
    for number in range(1, 7):
        assert f"Figure {number}:" in html
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64', html)) >= 10
    assert "Provenance" in html and "parameters hash" in html and "NOT the paper" in html
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


def test_sigkill_mid_grid_then_restart_redoes_only_the_interrupted_run(tiny_study, tmp_path):
    reference, _ = tiny_study
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "segattack", "report", "--profile", "tiny", "--out", str(tmp_path)],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = runs / "mobilenet_v3_large-asma" / "results.json"
    deadline = time.monotonic() + 300
    while not (first.is_file() and (runs / "mobilenet_v3_large-pgd").is_dir()):
        assert proc.poll() is None and time.monotonic() < deadline, "grid ended before it could be killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # an orphaned kernel notices its parent is gone and exits
    finished = first.stat().st_mtime_ns
    assert not (runs / "mobilenet_v3_large-pgd" / "results.json").is_file()
    status = run_grid("tiny", tmp_path)
    assert status["mobilenet_v3_large-asma"] == "skipped"
    assert status["mobilenet_v3_large-pgd"] == "done"
    assert first.stat().st_mtime_ns == finished
    for name in (n for n in status if n != "studies"):  # the same numbers as the uninterrupted grid
        ours = json.loads((runs / name / "results.json").read_text())
        theirs = json.loads((reference / "runs" / name / "results.json").read_text())
        assert ours["per_image"] == theirs["per_image"] and ours["history"] == theirs["history"], name
    assert "MobileNet PGD Attack" in build_report(tmp_path, "tiny").read_text()


def test_user_text_is_escaped_in_the_report(tiny_study, tmp_path):
    out, _ = tiny_study
    shutil.copytree(out / "runs", tmp_path / "runs")
    results = tmp_path / "runs" / "mobilenet_v3_large-pgd" / "results.json"
    doc = json.loads(results.read_text())
    doc["weights"]["description"] = "<script>alert('weights')</script>"  # e.g. from a crafted checkpoint
    doc["attack_params"]["note"] = "<img src=x onerror=alert(1)>"
    results.write_text(json.dumps(doc))
    html = build_report(tmp_path, "<b>tiny</b>").read_text()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>tiny</b>" not in html
    assert "&lt;script&gt;alert" in html and "&lt;b&gt;tiny&lt;/b&gt;" in html


def test_run_names_cannot_leave_the_output_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown attack '../../evil'"):
        run_grid("tiny", tmp_path / "out", attacks=("../../evil",))
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil").exists()
