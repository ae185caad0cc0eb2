"""``segattack report --models M --images S`` runs its studies on M and S (issue 30 item 5): the plan's
study cells name M, the per-class table speaks S's classes, cells key on the model and its weights,
bad combinations are refused before any work, and the default plan is the one it always was."""

import numpy as np
import pytest
from PIL import Image

from segattack.data.sets import ImageError
from segattack.models.backbones import BACKBONES
from segattack.study.profiles import BACKBONE_ORDER, plan
from segattack.study.studies import StudiesJob, StudyConfig, run_cell, study_cells
from segattack.util.params import ParameterError

TWO_CLASS_MODEL = """
import torch
from torch import nn


def make():
    # class 1 ('sea') where the pixel's channels sum above the bias, else class 0 ('sky'):
    # a black image is all sky, a white one all sea, normalised or not
    net = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[1] = 1.0
        net.bias.copy_(torch.tensor([0.0, -0.1]))
    return net
"""


@pytest.fixture
def two_classes(tmp_path, monkeypatch):
    """A pairs folder labelled sky/sea (classes.txt) of three 32 px images (black, white, black) and a
    ``module:`` model that predicts those two classes."""
    pairs = tmp_path / "pairs"
    for sub in ("images", "masks"):
        (pairs / sub).mkdir(parents=True)
    (pairs / "classes.txt").write_text("sky\nsea\n")
    for i, value in enumerate((0, 255, 0)):
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(pairs / "images" / f"{i}.png")
        Image.fromarray(np.full((32, 32), int(value > 0), np.uint8)).save(pairs / "masks" / f"{i}.png")
    (tmp_path / "two_model.py").write_text(TWO_CLASS_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return f"pairs:{pairs}", "module:two_model:make"


def _studies(jobs) -> StudyConfig:
    (job,) = [j for j in jobs if isinstance(j, StudiesJob)]
    return job.study


def test_the_default_plan_keeps_the_embedded_backbones_and_scenes(tmp_path):
    study = _studies(plan("tiny", tmp_path / "r"))
    assert study.backbones == list(BACKBONES) == list(BACKBONE_ORDER)
    assert (study.images, study.num_images, study.size, study.weights, study.label_map) == (
        "scenes",
        2,
        48,
        "embedded",
        "",
    )
    cells = study_cells(study)
    assert "compare/mobilenet_v3_large/pgd/0" in cells and "compare/resnet50/pgd/0" in cells
    assert {c.split("/")[1] for c in cells} == set(BACKBONES)  # cell names as before: finished cells still count


def test_named_models_and_images_are_the_studies(two_classes, tmp_path):
    images, model = two_classes
    jobs = plan("tiny", tmp_path / "r", {"images": images}, (model,), ("pgd",), "default")
    study = _studies(jobs)
    assert study.backbones == [model] and study.images == images and study.weights_for(model) == "auto"
    assert study.num_images == 2  # the profile's studies_num_images, at most the folder's 3
    assert study.labels.names == ("sky", "sea")
    cells = study_cells(study)
    assert cells and all(c.split("/")[1] == study.model_id(model) for c in cells)
    assert study.model_id(model).startswith("module_two_model_make-") and study.model_of(study.model_id(model)) == model


def test_a_compare_cell_names_the_images_classes(two_classes):
    images, model = two_classes
    study = StudyConfig(backbones=[model], images=images, num_images=2, size=32, batch=2, steps=2)
    cell = run_cell(study, f"compare/{study.model_id(model)}/pgd/0")
    # image 0 (black, all sky) is pushed toward image 1's prediction (all sea), image 1 toward sky
    assert {(r["image"], r["class"]) for r in cell.difficulty} == {(0, "sea"), (1, "sky")}
    assert {r["backbone"] for r in cell.comparison} == {model}
    assert cell.clean_conf == [[1024, 0], [0, 1024]]  # pooled over both images in the folder's two classes


def test_cells_key_on_the_model_and_its_weights(tmp_path):
    checkpoint = tmp_path / "fcn.pt"
    checkpoint.write_bytes(b"")
    published = StudyConfig(backbones=["torchvision:fcn_resnet50", "mobilenet_v3_large"])
    own = StudyConfig(backbones=["torchvision:fcn_resnet50"], weights=str(checkpoint))
    assert published.weights_for("torchvision:fcn_resnet50") == "auto"  # embedded names the backbones' only
    assert published.weights_for("mobilenet_v3_large") == "embedded"
    assert own.weights_for("torchvision:fcn_resnet50") == str(checkpoint)
    ids = {published.model_id("torchvision:fcn_resnet50"), own.model_id("torchvision:fcn_resnet50")}
    assert len(ids) == 2 and published.digest() != own.digest()
    assert all("/" not in i and ":" not in i for i in ids)
    assert {c.split("/")[1] for c in study_cells(published)} == {
        published.model_id("torchvision:fcn_resnet50"),
        "mobilenet_v3_large",
    }


def test_bad_combinations_are_refused_before_any_work(two_classes, tmp_path):
    images, model = two_classes
    with pytest.raises(ParameterError, match="labelled in sky-sea|2 classes"):
        StudyConfig(backbones=["mobilenet_v3_large"], images=images, num_images=2)
    with pytest.raises(ParameterError, match="a hf: spec names its own weights"):
        StudyConfig(backbones=["hf:nvidia/segformer-b0"], weights=str(tmp_path / "w.pt"))
    with pytest.raises(ParameterError, match="studies need a model"):
        StudyConfig(backbones=[])
    with pytest.raises(ImageError, match="holds 3 images; asked for 5"):
        plan("tiny", tmp_path / "r", {"images": images, "studies_num_images": 5}, (model,), ("pgd",))
    with pytest.raises(ValueError, match="predicts 2 classes but the images are labelled in VOC-21"):
        plan("tiny", tmp_path / "r", {"images": images, "studies_images": "scenes"}, (model,), ("pgd",))
    # the module's classes are known once loaded: the job refuses them before its first cell
    job = StudiesJob(StudyConfig(backbones=[model], num_images=2, size=32), tmp_path / "s")
    with pytest.raises(ValueError, match="predicts 2 classes"):
        job.prepare()
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_named_studies_resume_without_recomputing(two_classes, tmp_path, monkeypatch):
    import segattack.study.studies as studies_module

    images, model = two_classes
    study = StudyConfig(
        backbones=[model], images=images, num_images=2, size=32, batch=2, steps=1, curve_steps=1,
        eps_values=[8 / 255], budget_images=0,
    )  # fmt: skip
    done = studies_module.run_studies(study, tmp_path / "s", progress=False)
    assert {r["backbone"] for r in done.comparison} == {model} and set(done.weights) == {model}
    assert {r["class"] for r in done.difficulty} == {"sky", "sea"}
    assert done.clean_iou_truth == {model: pytest.approx(1.0)}
    monkeypatch.setattr(studies_module, "run_cell", lambda *a: pytest.fail("a finished cell was computed again"))
    again = studies_module.run_studies(study, tmp_path / "s", progress=False)
    assert again.comparison == done.comparison and again.difficulty == done.difficulty


@pytest.mark.slow
def test_report_runs_its_studies_on_the_named_model_and_images(two_classes, tmp_path):
    """``segattack report --models M --images S``: the report's studies name M, and its per-class table
    S's classes."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    images, model = two_classes
    command = [sys.executable, "-m", "segattack", "report", "--profile", "tiny", "--out", str(tmp_path / "r")]
    command += ["--models", model, "--images", images, "--attacks", "pgd", "-p", "studies_budget_images=0"]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ["PYTHONPATH"]])}  # workers, kernels
    run = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    studies = json.loads((tmp_path / "r" / "studies" / "studies.json").read_text())
    assert {r["backbone"] for r in studies["comparison"]} == {model}
    assert {r["class"] for r in studies["difficulty"]} == {"sky", "sea"}
    html = (tmp_path / "r" / "index.html").read_text()
    assert ">sky<" in html and ">sea<" in html and "aeroplane" not in html
