"""segattack evaluate end to end on tiny inputs: a model that ignores its input is as robust as it is
clean at every eps; the record's scores are pooled over the dataset whatever the shards; the record
round-trips and a malformed one is refused; the leaderboard ranks and refuses mixed protocols;
bad input is refused before any folder is touched."""

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segattack.evaluation.robustness import pooled_scores
from segattack.study.evalrecord import read_evaluation, to_json, write_evaluation
from segattack.study.evalrun import EvalJob, evaluation_jobs
from segattack.study.evaluate import EvalConfig, eval_configs
from segattack.study.leaderboard import leaderboard
from segattack.study.records import RecordError
from segattack.util.params import ParameterError

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = Path(__file__).resolve().parent / "plugin"
TINY = {"images": "scenes", "num_images": 3, "size": 32, "steps": 2, "eps": [1 / 255, 8 / 255]}


@pytest.fixture
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))


def _evaluate(tmp_path, name="run", **settings):
    cfg = EvalConfig(**{**TINY, **settings})
    job = EvalJob(cfg, tmp_path / name / cfg.name)
    job.run_here(progress=False)
    return read_evaluation(job.path / "evaluation.json"), job


@pytest.mark.parametrize("norm, eps", [("linf", [1 / 255, 8 / 255]), ("l2", [0.25, 1.0])])
def test_a_model_that_ignores_its_input_is_as_robust_as_clean(tmp_path, plugin_path, norm, eps):
    attacks = ["pgd", "apgd", "fmn"]
    record, _ = _evaluate(tmp_path, model="module:eval_models:blind", attacks=attacks, norm=norm, eps=eps)
    assert record.protocol.norm == norm and record.protocol.eps == eps
    assert {a.name: a.params.get("norm", a.params.get("mode")) for a in record.protocol.attacks} == dict.fromkeys(
        attacks, norm
    )
    assert record.clean.miou is not None
    for cell in record.cells:
        if cell.eps is not None:
            assert cell.scores == record.clean and set(cell.success) <= {1 - a for a in cell.image_accuracy}
    assert [w.scores for w in record.worst] == [record.clean] * 2
    clean_broken = [1 - a >= 0.99 for a in record.cells[0].image_accuracy]  # wrong before any attack
    for small in record.smallest:
        assert [e == 0 if b else e is None for e, b in zip(small.eps, clean_broken)] == [True] * 3
        assert small.robust_share == [1 - sum(clean_broken) / 3] * 2


def test_targeted_reads_success_over_the_pixels_that_had_to_change(tmp_path, plugin_path):
    blind, _ = _evaluate(tmp_path, "blind", model="module:eval_models:blind", attacks=["pgd"], targeted="fixed:15")
    assert blind.protocol.targeted == "fixed:person"
    assert all(c.targeted is not None and c.targeted.success_changed == 0 for c in blind.cells)  # nothing moves
    settings = {"model": "mobilenet_v3_large", "weights": "embedded", "attacks": ["pgd"], "targeted": "roll"}
    record, job = _evaluate(tmp_path, "net", **settings)
    stored = torch.load(job.path / "units" / job.digest / "pgd-01-00000.pt", weights_only=True)
    cell = record.cell("pgd", 8 / 255)
    assert cell.targeted.success_changed == pytest.approx(float(stored["hits"].sum() / stored["todo"].sum()))
    assert cell.targeted.target_miou == pooled_scores(stored["conf_target"]).miou
    assert cell.success == pytest.approx((stored["hits"] / stored["todo"].clamp_min(1)).tolist())
    assert record.worst[1].targeted.success_changed == cell.targeted.success_changed  # one attack: its own


def test_scores_are_pooled_over_the_dataset_whatever_the_shards(tmp_path):
    settings = {"model": "mobilenet_v3_large", "weights": "embedded", "attacks": ["pgd"], "num_images": 3}
    one, job = _evaluate(tmp_path, "a", batch=1, **settings)
    three, _ = _evaluate(tmp_path, "b", batch=3, **settings)
    assert one.clean == three.clean and one.worst == three.worst
    stored = [torch.load(f, weights_only=True) for f in sorted((job.path / "units" / job.digest).glob("pgd-01-*.pt"))]
    conf = torch.cat([s["conf"] for s in stored])
    assert len(stored) == 3 and one.cell("pgd", 8 / 255).scores == pooled_scores(conf)
    per_image = sum(pooled_scores(c).miou or 0 for c in conf) / 3
    assert abs(per_image - one.cell("pgd", 8 / 255).scores.miou) > 1e-6  # pooled is not the per-image mean
    assert one.worst[1].scores.aacc <= one.clean.aacc
    assert one.cells[0].passes_per_image == 2 and one.cells[0].seconds_per_image > 0
    written = (job.path / "evaluation.json").stat().st_mtime_ns
    assert job.complete() and (job.run_here(progress=False) or True)  # a finished evaluation is not redone
    assert (job.path / "evaluation.json").stat().st_mtime_ns == written
    clean = torch.load(job.path / "units" / job.digest / "clean-00000.pt", weights_only=True)["images"][0]
    for e, eps in enumerate((1, 8)):  # the radii act in [0,1] pixels: at most eps/255 (+1 for rounding) in uint8
        adv = torch.load(job.path / "units" / job.digest / f"pgd-0{e}-00000.pt", weights_only=True)["adv"][0]
        assert 1 <= (adv.int() - clean.int()).abs().max() <= eps + 1


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ev")
    cfg = EvalConfig(**{**TINY, "model": "mobilenet_v3_large", "weights": "embedded", "attacks": ["pgd", "segpgd"]})
    job = EvalJob(cfg, tmp / cfg.name)
    job.run_here(progress=False)
    return read_evaluation(job.path / "evaluation.json")


def test_the_report_renders_the_records_with_their_protocol(record, tmp_path):
    from segattack.engine.store import claim
    from segattack.study.evalrun import build_evaluation_report

    claim(tmp_path / "report", "report")  # the folder segattack evaluate made
    folder = _variant(record, tmp_path / "report", "a", 0.2).parent  # a record alone: no worst.pt beside it
    page = build_evaluation_report(folder).read_text()
    assert "Clean and robust scores" in page and "worst-case mIoU" in page and "weights sha256" in page
    assert page.count("<img") >= 2 and "Traceback" not in page


def test_the_record_round_trips_and_is_strict_json(record, tmp_path):
    path = tmp_path / "evaluation.json"
    write_evaluation(record, path)
    assert read_evaluation(path) == record
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert record.protocol.eps == [1 / 255, 8 / 255] and record.model.weights_sha256
    assert len(record.images) == 3 and record.class_names[0] == "background"


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda d: d["clean"].update(miou=float("nan")), "NaN"),
        (lambda d: d["clean"].update(miou="high"), "must be a number"),
        (lambda d: d.pop("protocol"), "lacks the field 'protocol'"),
        (lambda d: d["cells"][0]["success"].pop(), "per-image lists"),
        (lambda d: d["protocol"].update(eps=[8 / 255, 1 / 255]), "increasing"),
        (lambda d: d.update(results_version=0), "version"),
        (lambda d: d["cells"][0].update(converged="yes"), "must be bool"),
    ],
)
def test_a_malformed_record_is_refused(record, tmp_path, spoil, message):
    doc = json.loads(to_json(record))
    spoil(doc)
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordError, match=message):
        read_evaluation(path)


def _variant(record, tmp_path, name, miou, **protocol):
    worst = [dataclasses.replace(w, scores=dataclasses.replace(w.scores, miou=miou)) for w in record.worst]
    changed = dataclasses.replace(
        record,
        model=dataclasses.replace(record.model, spec=name),
        protocol=dataclasses.replace(record.protocol, **protocol),
        worst=worst,
    )
    (tmp_path / name).mkdir()
    write_evaluation(changed, tmp_path / name / "evaluation.json")
    return tmp_path / name


def test_the_leaderboard_ranks_by_worst_case_robust_miou(record, tmp_path):
    low, high = _variant(record, tmp_path, "low", 0.1), _variant(record, tmp_path, "high", 0.3)
    ranked = leaderboard([tmp_path], tmp_path / "board.csv", eps=8 / 255)
    assert [r.model for r in ranked] == ["high", "low"] and [r.rank for r in ranked] == [1, 2]
    lines = (tmp_path / "board.csv").read_text().splitlines()
    assert lines[0].startswith("rank,model") and lines[1].startswith("1,high") and ",30.00," in lines[1]
    leaderboard([low, high], tmp_path / "board.md")
    assert "| 1 | high |" in (tmp_path / "board.md").read_text()
    leaderboard([low / "evaluation.json"], tmp_path / "board.html")
    assert "<table>" in (tmp_path / "board.html").read_text()


def test_the_leaderboard_refuses_mixed_protocols_naming_what_differs(record, tmp_path):
    _variant(record, tmp_path, "a", 0.2)
    _variant(record, tmp_path, "b", 0.2, num_images=50, resize="squash")
    with pytest.raises(ParameterError, match="num_images, resize"):
        leaderboard([tmp_path], tmp_path / "board.csv")
    assert not (tmp_path / "board.csv").exists()
    assert len(leaderboard([tmp_path], tmp_path / "board.csv", mixed=True)) == 2
    with pytest.raises(ParameterError, match="was not evaluated at eps"):
        leaderboard([tmp_path / "a"], tmp_path / "x.csv", eps=3 / 255)
    with pytest.raises(ParameterError, match=".html, .md, .csv"):
        leaderboard([tmp_path / "a"], tmp_path / "board.txt")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"eps": [4]}, "radii in \\[0,1\\]"),
        ({"attacks": ["nope"]}, "unknown attack"),
        ({"attacks": ["asma"]}, "no budget rule|no untargeted"),
        ({"norm": "l3"}, "norm"),
        ({"targeted": "fixed:unicorn"}, "no class"),
        ({"model": "nonsense"}, "unknown backbone"),
        ({"break_share": 0}, "break_share"),
    ],
)
def test_bad_settings_are_refused_before_any_work(settings, message):
    with pytest.raises((ParameterError, ValueError), match=message):
        rest = {k: v for k, v in settings.items() if k != "model"}
        eval_configs([settings.get("model", "mobilenet_v3_large")], **rest)


@pytest.mark.parametrize(
    "images, message", [("voc:/nowhere", "nowhere"), ("photos", "no ground truth"), ("scenes", "holds|must be > 0")]
)
def test_images_are_checked_before_any_folder_is_touched(tmp_path, images, message):
    configs = eval_configs(["mobilenet_v3_large"], images=images, num_images=0 if images == "scenes" else 2)
    with pytest.raises(ValueError, match=message):
        evaluation_jobs(configs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_two_models_sharing_a_folder_are_refused():
    with pytest.raises(ParameterError, match="share the folder"):
        eval_configs(["mobilenet_v3_large", "mobilenet_v3_large"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eps", "4/0"], "fractions"),
        (["--eps", "8"], "radii in \\[0,1\\]"),
        (["-p", "colour=red"], "unknown setting"),
        (["--attacks", "sea,nope"], "unknown attack"),
    ],
)
def test_the_cli_refuses_bad_input_before_touching_the_folder(tmp_path, args, message):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "segattack", "evaluate", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and re.search(message, run.stderr.strip().splitlines()[-1]), run.stderr
    assert "Traceback" not in run.stderr and not out.exists()


def test_cli_eps_reads_fractions():
    from segattack.cli.evaluate import parse_eps

    assert parse_eps("0.5/255, 4/255,0.01") == [0.5 / 255, 4 / 255, 0.01]
    assert math.isclose(EvalConfig(eps=parse_eps("8/255,4/255")).eps[0], 4 / 255)


def test_the_report_notebook_is_parameterised_stored_without_outputs_and_only_calls_segattack():
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "evaluate.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert next(c for c in code if "parameters" in c.metadata.get("tags", [])).source.count("out_dir =") == 1
    assert all(not c.outputs and c.execution_count is None for c in code)
    imports = [line for c in code for line in c.source.splitlines() if line.startswith(("import ", "from "))]
    assert imports and all(line.split()[1].split(".")[0] in ("segattack", "IPython") for line in imports), imports


def test_the_leaderboard_command_writes_the_table_and_refuses_mixed_protocols(record, tmp_path):
    _variant(record, tmp_path, "a", 0.2)
    _variant(record, tmp_path, "b", 0.3, seed=1)

    def board(*extra):
        command = [sys.executable, "-m", "segattack", "leaderboard", str(tmp_path), *extra]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    refused = board("--out", str(tmp_path / "board.md"))
    assert refused.returncode == 2 and "differ in seed" in refused.stderr and not (tmp_path / "board.md").exists()
    done = board("--out", str(tmp_path / "board.md"), "--mixed", "--eps", "8/255")
    assert done.returncode == 0, done.stderr
    assert "| 1 | b |" in (tmp_path / "board.md").read_text() and "MIXED" in (tmp_path / "board.md").read_text()
