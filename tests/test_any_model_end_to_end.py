"""Any model, end to end (issue 26): a model loaded once per process under a lock, its class count known
before any work, hub ids resolved in the parent, one line per failed task. Random weights only: the
SegFormer is a tiny config saved with save_pretrained and read back by hf:DIR."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from segattack.study import cache
from segattack.study.config import ModelKey

transformers = pytest.importorskip("transformers")
T = transformers
ROOT = Path(__file__).resolve().parent.parent


def save_segformer(where: Path, classes: int = 19) -> Path:
    """A random-init SegFormer of ``classes`` classes and its image processor, saved as a user would."""
    torch.manual_seed(0)
    config = T.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 1],
        decoder_hidden_size=16, patch_sizes=[7, 3], strides=[4, 2], num_labels=classes,
    )  # fmt: skip
    T.SegformerForSemanticSegmentation(config).save_pretrained(where)
    T.SegformerImageProcessor().save_pretrained(where)
    return where


@pytest.fixture(scope="module")
def segformer(tmp_path_factory) -> Path:
    return save_segformer(tmp_path_factory.mktemp("segformer"))


def test_two_tasks_of_one_hf_model_load_it_once(segformer, monkeypatch):
    """Two task threads of one Dask worker asking for one hf: model at once get the same model, loaded
    once (two loads at once imported transformers' lazy modules from two threads: AttributeError)."""
    loads: list[str] = []
    real = cache.load_model

    def counted(backbone: str, *args, **kwargs):
        loads.append(backbone)
        return real(backbone, *args, **kwargs)

    monkeypatch.setattr(cache, "load_model", counted)
    key = ModelKey(f"hf:{segformer}", "auto", "cpu", True, True)
    for attempt in range(12):
        cache.clear_models()
        start, got, errors = threading.Barrier(2), [], []

        def task() -> None:
            start.wait()
            try:
                got.append(cache.cached_model(key))
            except Exception as exc:  # what a Dask task would report
                errors.append(exc)

        threads = [threading.Thread(target=task) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and len(got) == 2 and got[0] is got[1], (attempt, errors)
    assert len(loads) == 12  # once per attempt, never twice
    cache.clear_models()


def test_the_backends_a_spec_needs_are_imported_before_any_task_thread():
    """import_backends (what each Dask worker runs as it starts) imports transformers' auto classes for
    an hf: spec and smp for an smp: spec, and nothing for a study backbone."""
    code = (
        "import sys\nfrom segattack.models.specs import import_backends\n"
        "import_backends(['mobilenet_v3_large'])\n"
        "print('transformers.models.auto.modeling_auto' in sys.modules, 'segmentation_models_pytorch' in sys.modules)\n"
        "import_backends(['hf:org/name', 'smp:Unet:resnet18'])\n"
        "print('transformers.models.auto.modeling_auto' in sys.modules, 'segmentation_models_pytorch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "False", "True", "True"], out.stderr[-2000:]


def write_city_pairs(root: Path, count: int = 4, size: int = 48) -> Path:
    """A pairs: folder labelled in Cityscapes' 19 classes (its classes.txt), person on road."""
    import numpy as np
    from PIL import Image

    from segattack.data.labels import CITYSCAPES

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CITYSCAPES.names) + "\n")
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        mask[size // 3 :, size // 4 : size // 2] = 11
        pixels = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def city_pairs(tmp_path_factory) -> Path:
    return write_city_pairs(tmp_path_factory.mktemp("city") / "pairs")


@pytest.fixture
def user_nets(tmp_path, monkeypatch):
    """An importable module of model-building functions a user might write."""
    (tmp_path / "any_model_nets.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class NeedsSize(nn.Module):  # refuses inputs under 96 px, as a model with a fixed-size stage does\n"
        "    def __init__(self, classes):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, classes, 1)\n"
        "    def forward(self, x):\n"
        "        if x.shape[-1] < 96:\n"
        "            raise RuntimeError('input smaller than the 96 px stage')\n"
        "        return self.conv(x)\n\n"
        "class MapOnly(nn.Module):  # returns a (B,H,W) class map, not class scores\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 19, 1)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x).argmax(1).float()\n\n"
        "def needs_96_city():\n    return NeedsSize(19)\n\n"
        "def needs_96_voc():\n    return NeedsSize(21)\n\n"
        "def map_only():\n    return MapOnly()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("any_model_nets", None)
    yield "any_model_nets"
    sys.modules.pop("any_model_nets", None)


def test_a_module_model_is_probed_at_the_runs_own_size(user_nets, city_pairs):
    """A model that refuses 64 px has its class count read at the run's 96 px and is checked (it was
    scored as VOC-21 with num_classes null); at a size it refuses, it is refused with the reason."""
    from segattack.models.classcheck import spec_classes
    from segattack.study.config import RunConfig
    from segattack.study.runner import check_model

    assert spec_classes(f"module:{user_nets}:needs_96_city", 96) == 19
    check_model(RunConfig(backbone=f"module:{user_nets}:needs_96_city", images=f"pairs:{city_pairs}", size=96))
    with pytest.raises(ValueError, match=r"predicts 21 classes but the images are labelled in Cityscapes-19"):
        check_model(RunConfig(backbone=f"module:{user_nets}:needs_96_voc", images=f"pairs:{city_pairs}", size=96))
    with pytest.raises(ValueError, match=r"class count cannot be read: one forward pass of a 64 px image .*96 px"):
        check_model(RunConfig(backbone=f"module:{user_nets}:needs_96_voc", size=64))


def test_a_class_map_output_is_refused_not_read_as_classes(user_nets):
    """A (B,H,W) output at 64 px was read as 64 classes; it is refused as no class scores."""
    from segattack.models import load_model
    from segattack.study.config import RunConfig
    from segattack.study.runner import check_model

    with pytest.raises(ValueError, match=r"shaped \(1, 64, 64\) .* must return class scores \(logits\) shaped \(B, C"):
        check_model(RunConfig(backbone=f"module:{user_nets}:map_only", size=64))
    model = load_model(f"module:{user_nets}:map_only")
    assert model.info.extra["num_classes"] is None  # not 64
    with pytest.raises(ValueError, match=r"must return class scores \(logits\) shaped \(B, C, H, W\)"):
        model(torch.rand(2, 3, 32, 32))


def test_an_smp_checkpoints_head_gives_its_class_count_before_loading(tmp_path):
    from segattack.models.classcheck import spec_classes

    head = {"segmentation_head.0.weight": torch.zeros(19, 16, 3, 3), "segmentation_head.0.bias": torch.zeros(19)}
    torch.save(head, tmp_path / "unet.pt")  # the head alone: its shape is read, the rest not loaded
    assert spec_classes(f"smp:Unet:resnet18:{tmp_path / 'unet.pt'}", 64) == 19
    assert spec_classes("smp:Unet:resnet18", 64) == 21  # untrained: smp's default head


def _cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from segattack.cli.app import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.mark.parametrize("model", ["smp:Unet:resnet18", "module:any_model_nets:needs_96_voc"])
def test_report_refuses_a_mismatched_model_as_attack_does_before_the_cluster(tmp_path, city_pairs, user_nets, model):
    """A 21-class smp:/module: model on a Cityscapes-labelled folder: report refused it only inside a
    Dask worker and wrote a report of 0 runs; now both commands print the same one line, nothing written."""
    small = ("--num-images", "4", "--size", "96", "--steps", "2")
    code, err = _cli("attack", "--model", model, "--attack", "pgd", "--images", f"pairs:{city_pairs}",
                     "--out", str(tmp_path / "a"), *small)  # fmt: skip
    assert code == 2 and "predicts 21 classes but the images are labelled in Cityscapes-19" in err
    line = err.strip().splitlines()[-1].removeprefix("segattack attack: ")
    code, err = _cli("report", "--models", model, "--attacks", "pgd", "--studies", "none", "--images",
                     f"pairs:{city_pairs}", "--out", str(tmp_path / "r"), "-p", "size=96", "-p", "steps=2",
                     "-p", "num_images=4")  # fmt: skip
    assert code == 2 and err.strip().splitlines() == [f"segattack report: {line}"]  # no Dask output before it
    assert not (tmp_path / "r").exists() and not (tmp_path / "a").exists()


def test_an_hf_hub_id_in_no_cache_is_refused_at_once_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    """hf:ORG/NAME in neither a folder nor the cache, the hub a closed port: one line naming HF_HOME and
    HF_HUB_OFFLINE=1 from attack and from report (resolved in the parent), not a minute of retries."""
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    assert constants.ENDPOINT.startswith("http://127.0.0.1:")  # conftest: never a real host
    started = time.monotonic()
    code, err = _cli("attack", "--model", "hf:no-org/no-model", "--attack", "pgd", "--out", str(tmp_path / "a"),
                     "--num-images", "2", "--size", "64", "--steps", "2")  # fmt: skip
    attack_seconds = time.monotonic() - started
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "HF_HOME=" in err and "HF_HUB_OFFLINE=1" in err and "hub cannot be reached" in err
    started = time.monotonic()
    code, err = _cli("report", "--models", "hf:no-org/no-model", "--attacks", "pgd", "--studies", "none",
                     "--out", str(tmp_path / "r"), "-p", "size=64", "-p", "steps=2", "-p", "num_images=2")  # fmt: skip
    report_seconds = time.monotonic() - started
    assert code == 2 and len(err.strip().splitlines()) == 1 and "HF_HUB_OFFLINE=1" in err, err
    assert attack_seconds < 10 and report_seconds < 10  # was 38 s and 71 s of the hub client's retries
    assert not (tmp_path / "r").exists()


def test_a_failed_task_is_one_line_naming_the_run_and_its_cause_the_traceback_kept(tmp_path, user_nets):
    """report with a model that fails on the attack's batch (its one-image probe passes): one line per
    failed task, the traceback in the run's failed.log, and the report lists no notebook that is not there."""
    (tmp_path / "failing_nets.py").write_text(  # importable: user_nets puts tmp_path on sys.path
        "from torch import nn\n\nclass OneAtATime(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 21, 1)\n    def forward(self, x):\n        if x.shape[0] > 1:\n"
        "            raise RuntimeError('this model takes one image at a time')\n        return self.conv(x)\n\n"
        "def make():\n    return OneAtATime()\n"
    )
    code, err = _cli("report", "--models", "module:failing_nets:make", "--attacks", "pgd", "dag", "--studies", "none",
                     "--cluster", "inprocess", "--out", str(tmp_path / "r"), "-p", "size=64", "-p", "steps=2",
                     "-p", "num_images=8", "-p", "stability=off")  # fmt: skip
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert code == 1 and "Traceback" not in err, err
    runs = tmp_path / "r" / "runs"
    assert sorted(failed) == [
        f"failed: module_failing_nets_make-{attack} task {shard}: RuntimeError: this model takes one image at a time "
        f"(traceback: {runs / f'module_failing_nets_make-{attack}' / 'failed.log'})"
        for attack in ("dag", "pgd")
        for shard in ("00000", "00001")
    ]
    log = (runs / "module_failing_nets_make-pgd" / "failed.log").read_text()
    assert log.count("Traceback (most recent call last)") == 2 and "failing_nets.py" in log
    html = (tmp_path / "r" / "index.html").read_text()
    assert "this model takes one image at a time" in html and "attack.ipynb" not in html


def test_a_workers_compute_failed_record_is_dropped_other_errors_kept(caplog):
    import logging

    from segattack.engine.cluster import quiet_task_failures

    quiet_task_failures()
    quiet_task_failures()  # once per process
    log = logging.getLogger("distributed.worker")
    assert sum(type(f).__name__ == "_NoComputeFailed" for f in log.filters) == 1
    with caplog.at_level(logging.ERROR, logger="distributed.worker"):
        log.error("Compute Failed\nKey:       %s\nTraceback: %r\n", "k", "  File ...")
        log.error("Worker stream died")
    assert [r.getMessage() for r in caplog.records] == ["Worker stream died"]


CITY_TO_VOC = "person -> person\nrider -> person\ncar -> car\nbicycle -> bicycle\n"


@pytest.fixture(scope="module")
def paper_and_mapped_runs(tmp_path_factory, city_pairs) -> Path:
    """A runs/ folder of a run in the paper's setting (a study backbone on VOC-labelled scenes) and one
    outside it only by its label map (the same backbone on Cityscapes-labelled images read in VOC)."""
    from segattack.engine.store import claim
    from segattack.study.config import RunConfig
    from segattack.study.runner import run

    base = tmp_path_factory.mktemp("report")
    runs = base / "report" / "runs"
    claim(runs.parent, "report")  # a report folder the notebook may render into
    label_map = base / "city_to_voc.txt"
    label_map.write_text(CITY_TO_VOC)
    small = {"num_images": 4, "size": 48, "steps": 2, "save_images": 4}
    paper = RunConfig(backbone="mobilenet_v3_large", attack="pgd", weights="embedded", **small)
    mapped = RunConfig(backbone="mobilenet_v3_large", attack="asma", weights="embedded", images=f"pairs:{city_pairs}",
                       label_map=str(label_map), **small)  # fmt: skip
    for cfg in (paper, mapped):
        run(cfg, runs / cfg.name, progress=False)
    return runs


def test_the_papers_claims_are_judged_on_runs_in_its_setting_only(paper_and_mapped_runs):
    """A study backbone with a label map on Cityscapes-labelled images is not the paper's setting: no
    paper numbers beside it, no claim judged on it (it was compared with the paper run as ASMA vs PGD),
    and it is named, label map included, in a section of its own."""
    from segattack.study.report import discussion, load_runs, table1
    from segattack.study.report.setting import departures, setting_note, title

    runs, failed = load_runs(paper_and_mapped_runs)
    assert not failed and sorted(r.attack for r in runs) == ["asma", "pgd"]
    paper = next(r for r in runs if r.attack == "pgd")
    mapped = next(r for r in runs if r.attack == "asma")
    assert departures(paper.results.config) == []
    assert departures(mapped.results.config) == ["masks read through the label map city_to_voc.txt"]
    table = table1(runs)
    assert table.loc[mapped.label, ("IoU (%)", "paper")] == "–" and table.loc[paper.label, ("IoU (%)", "paper")] != "–"
    text = discussion(runs)
    assert "lowers IoU to the original prediction more than" not in text  # one run in the setting: no ordering
    accuracy = f"{100 * paper.mean('acc_original'):.1f}"
    assert f"here it spans {accuracy}-{accuracy}% (0.0 points)" in text  # the paper run's alone
    outside = text[text.index("**Outside the paper's setting**") :]
    assert "mobilenet_v3_large on pairs:" in outside and "label map city_to_voc.txt" in outside
    assert f"pixel accuracy {100 * mapped.mean('acc_original'):.1f}%" in outside
    configs = [r.results.config for r in runs]
    assert "label map city_to_voc.txt" in (setting_note(configs) or "")
    assert title(configs) == "Multiclass ASMA vs targeted PGD on DeepLabV3 (VOC-21) — segattack"


def test_title_and_headers_name_the_models_and_label_spaces_run(segformer, city_pairs, tmp_path):
    from segattack.study.config import RunConfig
    from segattack.study.report.setting import classes_note, title

    hf = RunConfig(backbone=f"hf:{segformer}", images=f"pairs:{city_pairs}")
    assert title([hf]) == f"Multiclass ASMA vs targeted PGD on hf:{segformer.name} (Cityscapes-19) — segattack"
    assert classes_note([hf]) == "all 19 classes of Cityscapes-19"
    voc = RunConfig(backbone="mobilenet_v3_large", attack="pgd")
    assert title([voc]) == "Multiclass ASMA vs targeted PGD on DeepLabV3 — segattack reproduction"
    assert classes_note([voc, hf]) == "all classes of each run's label space (VOC-21: 21, Cityscapes-19: 19)"
    smp = RunConfig(backbone=f"smp:Unet:resnet18:{tmp_path / 'w.pt'}", attack="dag")
    assert title([smp]) == "Attacks on smp:Unet:resnet18 (VOC-21) — segattack"


def test_the_papers_figures_are_not_drawn_from_a_run_outside_its_setting(paper_and_mapped_runs):
    """The report notebook: figure 3 (MobileNet after ASMA) is not drawn from the label-mapped ASMA run,
    which is shown with the other runs; the setting line names the label map."""
    from segattack.engine.render import build_report

    html = build_report(paper_and_mapped_runs.parent, "default").read_text().replace("&#x27;", "'")
    assert "Figure 3 (MobileNet output after ASMA): run missing" in html
    assert "Figure 1:</strong> MobileNet output under PGD" in html  # the run in the setting is drawn
    assert "Not the paper's setting:</b> mobilenet_v3_large on pairs:" in html and "label map city_to_voc.txt" in html
    assert "all 21 classes of VOC-21" in html


@pytest.mark.slow
def test_a_report_of_one_hf_model_and_two_attacks_on_a_fresh_folder(segformer, city_pairs, tmp_path):
    """The issue's command on a fresh --out: two tasks of one HF model on one Dask worker at once (it
    failed 2 of 2 times with AttributeError: transformers has no AutoConfig); the report then speaks
    of the SegFormer and Cityscapes-19, not of DeepLabV3 and 21 classes."""
    command = [sys.executable, "-m", "segattack", "report", "--models", f"hf:{segformer}", "--images",
               f"pairs:{city_pairs}", "--attacks", "pgd", "dag", "--studies", "none", "--out", str(tmp_path / "r"),
               "-p", "steps=2", "-p", "num_images=4", "-p", "size=64", "-p", "stability=off"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0 and "failed" not in run.stdout, run.stderr[-3000:]
    html = (tmp_path / "r" / "index.html").read_text().replace("&#x27;", "'")
    assert f"Multiclass ASMA vs targeted PGD on hf:{segformer.name} (Cityscapes-19)" in html
    assert "on DeepLabV3" not in html and "all 19 classes of Cityscapes-19" in html
    assert "No run in the paper's setting: its figures are not drawn" in html
