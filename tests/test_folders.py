"""Run and studies folders follow the report folder's rules: marked, locked, never a link, assembled whole."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from segattack.cli import main
from segattack.engine import grid, store
from segattack.engine.jobs import TaskState
from segattack.study.config import RunConfig
from segattack.study.profiles import plan
from segattack.study.report import load_runs
from segattack.study.runner import RunJob


def digest(folder: Path) -> str:
    """A hash of every file's name and bytes under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def report_args(out: Path, ckpt: Path) -> list[str]:
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
        "--cluster",
        "inprocess",
        "-p",
        f"weights={ckpt}",
        "-p",
        "size=48",
    ]


def test_a_users_own_folder_in_runs_is_refused_whole(small_checkpoint, tmp_path, capsys):
    run = tmp_path / "R" / "runs" / "mobilenet_v3_large-pgd"
    run.mkdir(parents=True)
    store.claim(tmp_path / "R", "report")  # an earlier report's folder
    (run / "notes.txt").write_text("my own notes")
    before = digest(run)
    assert main(report_args(tmp_path / "R", small_checkpoint)) == 2
    err = capsys.readouterr().err
    assert "holds files segattack did not write" in err and str(run) in err
    assert digest(run) == before


@pytest.mark.parametrize("linked", ["run", "runs"])
def test_a_symlinked_job_folder_is_refused_before_any_work(small_checkpoint, tmp_path, capsys, linked):
    """A link at R/runs/<run> (or R/runs) would have the grid replace the folder it points to, outside R."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store.claim(elsewhere, "run")  # even one segattack wrote: a link out of the report is never followed
    (elsewhere / "keep.txt").write_text("precious")
    before = digest(elsewhere)
    out = tmp_path / "R"
    link = out / "runs" / "mobilenet_v3_large-pgd" if linked == "run" else out / "runs"
    link.parent.mkdir(parents=True)
    store.claim(out, "report")
    link.symlink_to(elsewhere, target_is_directory=True)
    assert main(report_args(out, small_checkpoint)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == f"segattack report: error: {link} is a symbolic link; the report's run and studies folders "
        f"must be plain folders inside {out} (remove the link)"
    )
    assert digest(elsewhere) == before and not (out / "index.html").exists()


def test_job_folders_must_lie_inside_the_report_folder(small_checkpoint, tmp_path):
    cfg = RunConfig(weights=str(small_checkpoint), num_images=2, steps=1, size=48)
    with pytest.raises(store.FolderError, match="is not inside the report folder"):
        grid.run_grid([RunJob(cfg, tmp_path / "outside")], tmp_path / "R", "inprocess", progress=False)
    with pytest.raises(store.FolderError, match="would share the folder"):
        grid.run_grid(
            [RunJob(cfg, tmp_path / "R" / "a"), RunJob(cfg, tmp_path / "R" / "a")],
            tmp_path / "R",
            "inprocess",
            progress=False,
        )
    assert not (tmp_path / "outside").exists() and not (tmp_path / "R" / "a").exists()


def test_an_attack_into_a_run_folder_mid_grid_is_refused_and_the_grid_finishes(
    small_checkpoint, tmp_path, monkeypatch, capsys
):
    """The grid holds every job's lock: `segattack attack --out R/runs/<run>` (or the notebook's run())
    during a report gets a message instead of deleting the grid's finished shards."""
    out = tmp_path / "R"
    jobs = plan(
        "tiny",
        out,
        {"weights": str(small_checkpoint), "size": 48, "num_images": 4, "batch": 1},
        ("mobilenet_v3_large",),
        ("pgd",),
        "none",
    )
    job = jobs[0]
    real, answers = type(job).compute, []

    def compute(self, unit):
        if unit == "00002":  # two shards are on disk: another command aims at the same folder
            answers.append(
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
                        str(self.path),
                        "--steps",
                        "1",
                        "--num-images",
                        "2",
                    ]
                )
            )
        return real(self, unit)

    monkeypatch.setattr(type(job), "compute", compute)
    monkeypatch.setattr(grid, "render", lambda job: TaskState.DONE)  # the notebook is not the point here
    states = grid.run_grid(jobs, out, "inprocess", progress=False)
    assert answers == [2] and f"another segattack process is writing {job.path}" in capsys.readouterr().err
    assert states == {job.name: TaskState.DONE}
    results = json.loads((job.path / "results.json").read_text())
    assert len(results["names"]) == 4 and results["shards"] == 4


def test_a_job_is_assembled_only_from_every_unit(small_checkpoint, tmp_path):
    """A shard missing at assembly fails the job with nothing written, rather than a 'done' run of fewer images."""
    cfg = RunConfig(weights=str(small_checkpoint), num_images=4, batch=1, steps=1, size=48)
    job = RunJob(cfg, tmp_path / "R" / "runs" / cfg.name)
    for unit in job.units():
        job.write(unit, job.compute(unit))
    next(job.unit_dir.glob("00001.pt")).unlink()  # deleted behind the grid's back
    before = digest(job.path)
    with pytest.raises(RuntimeError, match=r"1 of 4 units have no record .* \(first: 00001\)"):
        job.finish()
    assert digest(job.path) == before
    assert grid._finish(job, TaskState.PENDING, None) is TaskState.FAILED
    assert not (job.path / "results.json").exists()
    assert "1 of 4 units have no record" in json.loads((job.path / "failed.json").read_text())["error"]
    runs, failed = load_runs(tmp_path / "R" / "runs")
    assert runs == [] and [f.run for f in failed] == [cfg.name] and "no record" in failed[0].error


def test_hidden_staging_leftovers_never_join_a_report(small_checkpoint, tmp_path):
    cfg = RunConfig(weights=str(small_checkpoint), num_images=2, steps=1, size=48)
    runs_dir = tmp_path / "runs"
    RunJob(cfg, runs_dir / cfg.name).run_here(progress=False)
    for leftover in (f".{cfg.name}.staging-x1y2", f".{cfg.name}.old-a3b4"):  # a kill mid-swap
        shutil.copytree(runs_dir / cfg.name, runs_dir / leftover)
    shutil.copytree(runs_dir / cfg.name, runs_dir / ".studies.staging-q" / "content")
    runs, failed = load_runs(runs_dir)
    assert [r.name for r in runs] == [cfg.name] and failed == []


# --- A writable folder under a read-only parent (item 8) ----------------------------------------------


@pytest.fixture
def read_only_parent(tmp_path, monkeypatch):
    """``tmp_path/ro`` holding a writable ``scratch`` folder; the parent reads as not writable (tests run as
    root, where chmod stops nothing, so os.access says so and creating a file beside the folder fails)."""
    parent = tmp_path / "ro"
    scratch = parent / "scratch"
    scratch.mkdir(parents=True)
    real_access, real_open = os.access, os.open

    def access(path, mode, *args, **kwargs):
        if Path(path) == parent and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if Path(path).parent == parent and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "open", open_)
    return scratch


def test_a_folder_with_a_read_only_parent_is_locked_and_replaced_in_place(read_only_parent):
    scratch = read_only_parent
    assert store.lock_path(scratch) == scratch / store.INNER_LOCK
    with store.locked(scratch):
        assert (scratch / store.INNER_LOCK).is_file()
        assert store.output_folder(scratch) == scratch  # the lock alone is not "someone else's files"
        with pytest.raises(store.FolderError, match=f"another segattack process is writing {scratch}"):
            with store.locked(scratch):
                pass
        store.claim(scratch, "run")
        (scratch / "stale.png").write_bytes(b"old")
        store.replace_folder(scratch, lambda staging: (staging / "results.json").write_text("{}"))
        assert sorted(p.name for p in scratch.iterdir()) == [".segattack", store.INNER_LOCK, "results.json"]
    assert [p.name for p in scratch.parent.iterdir()] == ["scratch"]  # nothing was written beside it


def test_an_attack_into_a_folder_with_a_read_only_parent(read_only_parent, small_checkpoint, capsys):
    scratch = read_only_parent
    args = [
        "attack",
        "--backbone",
        "mobilenet_v3_large",
        "--attack",
        "pgd",
        "--weights",
        str(small_checkpoint),
        "--out",
        str(scratch),
        "--steps",
        "1",
        "--num-images",
        "2",
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert main([*args, "--num-images", "3"]) == 0, capsys.readouterr().err  # replaced whole, in place
    assert len(json.loads((scratch / "results.json").read_text())["names"]) == 3
    assert len(list(scratch.glob("shards/*"))) == 1 and not list(scratch.glob(".*staging*"))
    assert [p.name for p in scratch.parent.iterdir()] == ["scratch"]


def attack_args(out: Path, ckpt: Path) -> list[str]:
    return [
        "attack",
        "--backbone",
        "mobilenet_v3_large",
        "--attack",
        "pgd",
        "--weights",
        str(ckpt),
        "--out",
        str(out),
        "--steps",
        "1",
        "--num-images",
        "2",
        "--size",
        "48",
    ]


@pytest.mark.parametrize("marker", ["report", ""], ids=["marked", "marked-before-kinds"])
def test_an_attack_never_replaces_a_report_folder(small_checkpoint, tmp_path, capsys, marker):
    """`attack --out REPORT` once swapped the report (index.html, report.ipynb, runs/) for one run's files."""
    report = tmp_path / "R"
    (report / "runs" / "mobilenet_v3_large-pgd").mkdir(parents=True)
    (report / store.MARKER).write_text(marker)
    (report / "index.html").write_text("<html>the report</html>")
    (report / "report.ipynb").write_text("{}")
    (report / "runs" / "mobilenet_v3_large-pgd" / "results.json").write_text("{}")
    before = digest(report)
    assert main(attack_args(report, small_checkpoint)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"segattack attack: error: output folder {report} is a report folder (segattack report wrote it), not a run "
        f"folder; nothing was changed: choose a new or empty folder"
    ]
    assert digest(report) == before and sorted(p.name for p in tmp_path.iterdir()) == ["R"]


def test_a_report_never_writes_into_a_run_folder(small_checkpoint, tmp_path, capsys):
    """`report --out RUN` once wrote a report (runs/, index.html) beside the run's results.json."""
    run = tmp_path / "run"
    assert main(attack_args(run, small_checkpoint)) == 0
    assert (run / store.MARKER).read_text().strip() == "run"
    capsys.readouterr()
    before = digest(run)
    assert main(report_args(run, small_checkpoint)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"segattack report: error: report folder {run} is a run folder (segattack attack wrote it), not a report "
        f"folder; nothing was changed: choose a new or empty folder"
    ]
    assert digest(run) == before and not (run / "runs").exists()


def test_markers_name_their_owner_and_a_re_run_keeps_the_kind(small_checkpoint, tmp_path):
    out = tmp_path / "R"
    jobs = plan(
        "tiny",
        out,
        {"weights": str(small_checkpoint), "size": 48, "num_images": 2},
        ("mobilenet_v3_large",),
        ("pgd",),
        "none",
    )
    grid.run_grid(jobs, out, "inprocess", progress=False)
    assert (out / store.MARKER).read_text().strip() == "report"
    assert (jobs[0].path / store.MARKER).read_text().strip() == "run"
    assert store.folder_kind(out) == "report" and store.folder_kind(jobs[0].path) == "run"
    with pytest.raises(store.FolderError, match="is a run folder"):
        store.output_folder(jobs[0].path, "report folder", "report")


def _other_checkpoint(path: Path, seed: int) -> None:
    """An untrained MobileNetV3 checkpoint at ``path`` with its own random weights (``seed``)."""
    import torch

    from segattack.models import checkpoints
    from segattack.models.backbones import build_network

    torch.manual_seed(seed)
    state = build_network("mobilenet_v3_large").state_dict()
    meta = {"image_size": 48, "description": f"seed {seed}"}
    store.atomic_save(checkpoints.pack(state, "mobilenet_v3_large", meta, int8=True), path)


def test_a_replaced_checkpoint_is_another_run(tmp_path):
    """A replaced --weights file was matched by its path: the re-run exited 0 with the old numbers."""
    ckpt = tmp_path / "w.pt"
    _other_checkpoint(ckpt, 1)
    out = tmp_path / "run"
    args = attack_args(out, ckpt)
    assert main(args) == 0
    first = json.loads((out / "results.json").read_text())
    _other_checkpoint(ckpt, 2)
    assert main(args) == 0
    second = json.loads((out / "results.json").read_text())
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert first["config"] == second["config"] and first["config_hash"] != second["config_hash"]
    assert second["input_files"] == [{"role": "weights", "path": ".../w.pt", "sha256": sha}]
    assert (first["weights"]["description"], second["weights"]["description"]) == ("seed 1", "seed 2")
    assert second["weights"]["extra"]["sha256"] == sha


def test_a_resume_after_a_replaced_checkpoint_never_mixes_shards(tmp_path):
    """Ctrl-C, replace the checkpoint, resume: one run was assembled from shards of two models."""
    ckpt = tmp_path / "w.pt"
    _other_checkpoint(ckpt, 1)
    settings = {"weights": str(ckpt), "size": 48, "num_images": 2, "batch": 1, "steps": 1}
    job = RunJob(RunConfig(**settings), tmp_path / "run")
    job.write("00000", job.compute("00000"))  # one shard finished, then stopped
    _other_checkpoint(ckpt, 2)
    resumed = RunJob(RunConfig(**settings), tmp_path / "run")
    assert resumed.digest != job.digest and resumed.pending() == ["00000", "00001"]
    resumed.run_here(progress=False)
    fresh = RunJob(RunConfig(**settings), tmp_path / "fresh")
    fresh.run_here(progress=False)
    ours, theirs = (json.loads((j.path / "results.json").read_text()) for j in (resumed, fresh))
    assert ours["per_image"] == theirs["per_image"] and ours["config_hash"] == theirs["config_hash"]
    assert [p.name for p in (resumed.path / "shards").iterdir()] == [resumed.digest]  # the old shard is gone


def test_label_files_enter_the_config_hash_and_provenance_holds_no_absolute_path(tmp_path):
    """A replaced --label-map or classes.txt reused the old results; provenance named the machine's paths."""
    from PIL import Image

    root = tmp_path / "pairs"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (48, 48), (40 * i, 90, 10)).save(root / "images" / f"{i}.png")
        Image.new("L", (48, 48), i).save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("sky\nsea\n")
    (tmp_path / "map.txt").write_text("sky -> background\nsea -> boat\n")
    cfg = dict(images=f"pairs:{root}", label_map=str(tmp_path / "map.txt"), weights="embedded", size=48)
    before = RunConfig(**cfg)
    assert [(f.role, f.path) for f in before.input_files()] == [
        ("embedded weights", "data/weights/mobilenet_v3_large.pt"),
        ("classes.txt", "<images>/classes.txt"),
        ("label map", ".../map.txt"),
    ]
    (tmp_path / "map.txt").write_text("sky -> background\nsea -> bird\n")
    mapped = RunConfig(**cfg)
    assert mapped.digest() != before.digest()
    (root / "classes.txt").write_text("SKY\nsea\n")
    assert RunConfig(**cfg).digest() != mapped.digest()
    results, _ = __import__("segattack.study.runner", fromlist=["run"]).run(
        RunConfig(**cfg, num_images=2, steps=1), tmp_path / "run", progress=False
    )
    doc = json.loads(results.to_json())
    for section in ("weights", "input_files"):
        assert str(tmp_path) not in json.dumps(doc[section]) and "/root" not in json.dumps(doc[section])
    assert doc["weights"]["extra"]["file"] == "data/weights/mobilenet_v3_large.pt"
