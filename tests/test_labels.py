"""Label spaces (VOC-21, Cityscapes-19, ADE20K-150, a config's id2label, classes.txt) and the target
schemes that name a class: fixed:CLASS and remove:CLASS."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segattack.data.classes import VOC_CLASSES, voc_palette
from segattack.data.labels import (
    ADE20K,
    CITYSCAPES,
    VOC,
    LabelSpace,
    ade20k_lut,
    cityscapes_lut,
    from_classes_file,
    from_id2label,
)
from segattack.data.sets import ImageError, image_set
from segattack.data.targets import check_scheme, scheme_target, target_sources
from segattack.study.config import RunConfig
from segattack.util.params import ParameterError


def test_the_shipped_spaces():
    assert (VOC.num_classes, CITYSCAPES.num_classes, ADE20K.num_classes) == (21, 19, 150)
    assert VOC.names == VOC_CLASSES and np.array_equal(VOC.palette, voc_palette())
    assert CITYSCAPES.names[11] == "person" and tuple(CITYSCAPES.palette[0]) == (128, 64, 128)
    assert ADE20K.names[:3] == ("wall", "building", "sky") and ADE20K.names[-1] == "flag"
    assert len({tuple(c) for c in ADE20K.palette}) == 150  # every class its own colour


def test_the_official_label_mappings():
    lut = cityscapes_lut()
    # label ids 7 road, 24 person, 33 bicycle; 0 unlabeled, 34 (license plate, -1 in train ids) ignored
    assert lut[[7, 24, 33, 0, 6, 34]].tolist() == [0, 11, 18, 255, 255, 255]
    assert sorted(set(lut.tolist())) == [*range(19), 255]
    ade = ade20k_lut()
    assert ade[[0, 1, 13, 150, 151, 255]].tolist() == [255, 0, 12, 149, 255, 255]  # 13 person -> 12


def test_class_ids_by_name_or_number_and_mismatches_named():
    assert VOC.class_id("Person") == VOC.class_id(15) == VOC.class_id("15") == 15
    with pytest.raises(ValueError, match="VOC-21 has no class 'pedestrian'"):
        VOC.class_id("pedestrian")
    with pytest.raises(ValueError, match="classes 0..18, got 19"):
        CITYSCAPES.class_id(19)
    with pytest.raises(ValueError, match=r"predicts VOC-21 \(21 classes.*labelled in Cityscapes-19 \(19 classes"):
        VOC.check_matches(CITYSCAPES)
    VOC.check_matches(VOC)
    with pytest.raises(ValueError, match="twice"):
        LabelSpace("x", ("a", "a"), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="ignore index 1 is a class id"):
        LabelSpace("x", ("a", "b"), np.zeros((2, 3), np.uint8), ignore=1)


def test_a_configs_id2label_and_a_classes_file(tmp_path):
    assert from_id2label({str(i): n for i, n in enumerate(VOC_CLASSES)}) is VOC  # a VOC model is VOC
    own = from_id2label({1: "road", 0: "void-free"}, "my model")
    assert own.names == ("void-free", "road") and own.name == "my model"
    with pytest.raises(ValueError, match="class ids must be 0..1"):
        from_id2label({0: "a", 2: "b"})
    (tmp_path / "classes.txt").write_text("# Cityscapes\n" + "\n".join(CITYSCAPES.names) + "\n\n")
    assert from_classes_file(tmp_path / "classes.txt") is CITYSCAPES
    (tmp_path / "classes.txt").write_text("sky\nsea\nsky\n")
    with pytest.raises(ValueError, match="classes.txt: .*twice"):
        from_classes_file(tmp_path / "classes.txt")


def test_class_names_follow_one_rule_case_insensitive(tmp_path):
    """classes.txt with road and Road was accepted, and fixed:Road resolved to class 0."""
    (tmp_path / "classes.txt").write_text("road\nsky\nRoad\n")
    with pytest.raises(ValueError) as info:
        from_classes_file(tmp_path / "classes.txt")
    assert str(info.value) == (
        f"{tmp_path / 'classes.txt'}: label space 'classes.txt' names one class twice: 'road' (class 0) and "
        f"'Road' (class 2); names are case-insensitive, give each class its own"
    ).replace("'classes.txt'", f"'{tmp_path.name}/classes.txt'")
    with pytest.raises(ValueError, match="names one class twice: 'Wall' \\(class 0\\) and 'wall' \\(class 1\\)"):
        from_id2label({0: "Wall", 1: "wall"})
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ParameterError, match="names one class twice"):  # before any work
        RunConfig(backbone="module:torch.nn:Identity", images=f"pairs:{tmp_path}", target_scheme="fixed:Road")


def test_fixed_and_remove_targets_by_hand():
    mask = torch.tensor([[0, 15, 15, 3], [0, 15, 15, 3], [255, 15, 3, 3]])
    removed = torch.tensor([[0, 0, 3, 3], [0, 0, 3, 3], [255, 3, 3, 3]])  # each person pixel takes its nearest
    assert torch.equal(scheme_target(mask, "remove:person"), removed)
    fixed = torch.full_like(mask, 8)
    fixed[2, 0] = 255
    assert torch.equal(scheme_target(mask, "fixed:cat"), fixed)
    assert torch.equal(scheme_target(torch.full((2, 2), 15), "remove:15"), torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(scheme_target(mask, "single"), mask)
    assert torch.equal(scheme_target(mask.masked_fill(mask == 15, 11), "remove:person", CITYSCAPES), removed)
    assert torch.equal(scheme_target(mask, "remove:person", CITYSCAPES), mask)  # no 11 (its person) to remove
    assert target_sources([3, 4], 9, "fixed:person", 1) == [3, 4]  # each image's own mask


def test_schemes_are_checked_and_canonical():
    assert check_scheme("fixed:15") == "fixed:person" and check_scheme("remove:Person") == "remove:person"
    assert check_scheme("remove:rider", CITYSCAPES) == "remove:rider"
    for bad, why in [("fixed:zebra", "no class 'zebra'"), ("swap:cat", "unknown target_scheme"), ("fixed", "unknown")]:
        with pytest.raises(ValueError, match=why):
            check_scheme(bad)
    assert RunConfig(target_scheme="remove:15", num_images=2, steps=1).target_scheme == "remove:person"
    with pytest.raises(ParameterError, match="no class 'zebra'"):
        RunConfig(target_scheme="fixed:zebra")


def test_a_run_with_a_fixed_class_target(tmp_path):
    from segattack.study.runner import run

    cfg = RunConfig(
        num_images=2, size=48, steps=3, target_scheme="fixed:cat", attack_params={"mode": "linf"}, weights="embedded"
    )
    results, _ = run(cfg, tmp_path / "r", progress=False)
    doc = json.loads(results.to_json())
    assert doc["config"]["target_scheme"] == "fixed:cat" and doc["attacked"] == [0, 1]  # no image is the target
    assert 0 < doc["summary"]["changed_share"]["mean"] <= 1  # the clean prediction is not all cat


def write_cityscapes(root, count: int = 2, size: int = 48, cities: tuple[str, ...] = ("aachen",)):
    """leftImg8bit/val/<city>/*_leftImg8bit.png and gtFine/val/<city>/*_gtFine_labelIds.png with
    official label ids: 7 road (top rows), 24 person (a block), 1 ego vehicle (bottom rows, ignored)."""
    for city in cities:
        for i in range(count):
            for sub in ("leftImg8bit", "gtFine"):
                (root / sub / "val" / city).mkdir(parents=True, exist_ok=True)
            ids = np.full((size, size), 7, np.uint8)
            ids[size // 3 : 2 * size // 3, 8:24] = 24
            ids[-6:] = 1
            rgb = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
            name = f"{city}_{i:06d}_000019"
            Image.fromarray(rgb).save(root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png")
            Image.fromarray(ids).save(root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png")
    return root


def tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_cityscapes_folder_of_archives_is_never_written_to(tmp_path):
    """torchvision's Cityscapes extracted the official zips into the user's folder (an unrelated extra
    entry included) and the run went on."""
    import shutil
    import zipfile

    source = write_cityscapes(tmp_path / "unpacked")
    data = tmp_path / "data"
    data.mkdir()
    for name, sub in (("leftImg8bit_trainvaltest.zip", "leftImg8bit"), ("gtFine_trainvaltest.zip", "gtFine")):
        with zipfile.ZipFile(data / name, "w") as archive:
            for file in (source / sub).rglob("*.png"):
                archive.write(file, str(file.relative_to(source)))
            archive.writestr("README_extra.txt", "an unrelated entry")
    shutil.rmtree(source)
    before = tree(data)
    with pytest.raises(ImageError) as info:
        image_set(f"cityscapes:{data}", 48)
    assert str(info.value) == (
        f"{data} holds the Cityscapes archives (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip), not their "
        f"folders; segattack never writes into a dataset folder: extract them first (unzip -q "
        f"{data / 'leftImg8bit_trainvaltest.zip'} -d {data} && unzip -q {data / 'gtFine_trainvaltest.zip'} -d {data})"
    )
    assert tree(data) == before
    from segattack.study.runner import count_images

    with pytest.raises(ImageError, match="never writes into a dataset folder"):  # a run's listing, before any work
        count_images(RunConfig(backbone="module:torch.nn:Identity", images=f"cityscapes:{data}"))
    assert tree(data) == before


def test_cityscapes_images_come_in_name_order_whatever_the_file_system_says(tmp_path, monkeypatch):
    """Directory order (munich, zurich, aachen) decided num_images and the target image."""
    import os
    from pathlib import Path

    root = write_cityscapes(tmp_path / "city", count=2, cities=("munich", "zurich", "aachen"))
    real_listdir, real_iterdir = os.listdir, Path.iterdir
    monkeypatch.setattr(os, "listdir", lambda path=".": sorted(real_listdir(path), reverse=True))
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(real_iterdir(self), reverse=True)))
    city = image_set(f"cityscapes:{root}", 48)
    names = [p.name.split("_leftImg8bit")[0] for p in city.files]
    assert names == [f"{c}_{i:06d}_000019" for c in ("aachen", "munich", "zurich") for i in range(2)]
    assert [m.name.replace("_gtFine_labelIds", "_leftImg8bit") for m in city.masks] == [p.name for p in city.files]


def test_cityscapes_and_ade20k_masks_outside_their_ids_are_refused(tmp_path):
    """An ADE20K folder of 200/201 masks (or Cityscapes ids above 33) read as ignore: 0 pixels scored."""
    root = write_cityscapes(tmp_path / "city", count=1)
    mask = root / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    ids = np.asarray(Image.open(mask)).copy()
    ids[:2] = 34
    Image.fromarray(ids).save(mask)
    with pytest.raises(ImageError, match=r"holds values \[34\] \(96 pixels\); Cityscapes label ids are 0..33"):
        image_set(f"cityscapes:{root}", 48).load([0])
    ade = tmp_path / "ade"
    for sub in ("images/validation", "annotations/validation"):
        (ade / sub).mkdir(parents=True)
    values = np.full((40, 40), 200, np.uint8)
    values[20:] = 201
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(ade / "images/validation/ADE_val_00000001.jpg")
    Image.fromarray(values).save(ade / "annotations/validation/ADE_val_00000001.png")
    with pytest.raises(ImageError, match=r"values \[200, 201\] \(1600 pixels\); ADE20K annotation values are 0..150"):
        image_set(f"ade20k:{ade}", 40).load([0])


def test_cityscapes_and_ade20k_folders_load_in_their_label_spaces(tmp_path):
    city = image_set(f"cityscapes:{write_cityscapes(tmp_path / 'city')}", 48, "squash")
    assert city.labels is CITYSCAPES and city.count == 2
    truth = city.load([0]).truth
    assert truth is not None and sorted(truth[0].unique().tolist()) == [0, 11, 255]  # road, person, ignored
    assert (truth[0] == 11).sum() == 16 * 16 and (truth[0] == 255).sum() == 6 * 48
    ade = tmp_path / "ade" / "ADEChallengeData2016"
    for sub in ("images/validation", "annotations/validation"):
        (ade / sub).mkdir(parents=True)
    values = np.zeros((40, 40), np.uint8)
    values[:20], values[20:, :20] = 1, 150  # other (0), wall (1 -> 0), flag (150 -> 149)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(ade / "images/validation/ADE_val_00000001.jpg")
    Image.fromarray(values).save(ade / "annotations/validation/ADE_val_00000001.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(ade / "images/validation/ADE_val_00000002.jpg")
    ade_set = image_set(f"ade20k:{tmp_path / 'ade'}", 40, "squash")
    assert ade_set.labels is ADE20K and ade_set.count == 1 and "no annotation" in ade_set.skipped[0]
    ade_truth = ade_set.load([0]).truth
    assert ade_truth is not None
    assert torch.equal(ade_truth[0], torch.from_numpy(ade20k_lut()[values].astype(np.int64)))
    with pytest.raises(ImageError, match="not a Cityscapes folder"):
        image_set(f"cityscapes:{tmp_path / 'ade'}", 48)


def test_a_pairs_folders_classes_file_sets_its_label_space_and_checks_its_masks(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.full((32, 32), 2, np.uint8)).save(tmp_path / "masks" / "a.png")
    (tmp_path / "classes.txt").write_text("sky\nsea\nsand\n")
    pairs = image_set(f"pairs:{tmp_path}", 32)
    assert pairs.labels.names == ("sky", "sea", "sand") and pairs.load([0]).truth[0].unique().tolist() == [2]
    (tmp_path / "classes.txt").write_text("sky\nsea\n")
    with pytest.raises(ImageError, match=r"class ids \[2\].*expected 0..1"):
        image_set(f"pairs:{tmp_path}", 32).load([0])


def test_a_model_dataset_class_mismatch_is_refused_before_any_work(tmp_path, monkeypatch):
    root = write_cityscapes(tmp_path / "city")
    with pytest.raises(ParameterError, match=r"predicts VOC-21 \(21 classes.*labelled in Cityscapes-19"):
        RunConfig(images=f"cityscapes:{root}", num_images=1)
    with pytest.raises(ParameterError, match="Cityscapes-19 has no class 'cat'"):
        RunConfig(backbone="module:city_model:make", images=f"cityscapes:{root}", target_scheme="fixed:cat")
    (tmp_path / "city_model.py").write_text(
        "from torch import nn\n\ndef make(classes=19):\n    return nn.Conv2d(3, classes, 1)\n\n"
        "def make_voc():\n    return make(21)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    from segattack.study.runner import run

    cfg = RunConfig(
        backbone="module:city_model:make", images=f"cityscapes:{root}", num_images=2, steps=2,
        target_scheme="remove:person", attack_params={"mode": "linf"},
    )  # fmt: skip
    results, _ = run(cfg, tmp_path / "ok", progress=False)
    assert len(json.loads(results.to_json())["clean_truth"]["class_iou"]) == 19  # scored over its 19 classes
    voc_model = RunConfig(backbone="module:city_model:make_voc", images=f"cityscapes:{root}", num_images=2, steps=1)
    with pytest.raises(Exception, match="predicts 21 classes but the images are labelled in Cityscapes-19"):
        run(voc_model, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "results.json").exists()


@pytest.mark.slow
def test_a_report_of_an_hf_model_on_a_cityscapes_labelled_pairs_folder_speaks_its_classes(tmp_path):
    """segattack report --model hf:DIR --images pairs:DIR: legends, per-class tables and the setting
    note in Cityscapes-19's names; the study backbone on the same folder is refused before any work."""
    import subprocess
    import sys
    from pathlib import Path

    import transformers as T

    pairs = tmp_path / "pairs"
    for sub in ("images", "masks"):
        (pairs / sub).mkdir(parents=True)
    (pairs / "classes.txt").write_text("\n".join(CITYSCAPES.names) + "\n")
    for i in range(3):
        mask = np.zeros((48, 48), np.uint8)
        mask[16:40, 10:30] = 11  # person on road
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
            pairs / "images" / f"{i}.png"
        )
        Image.fromarray(mask).save(pairs / "masks" / f"{i}.png")
    torch.manual_seed(0)
    config = T.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 1],
        decoder_hidden_size=16, patch_sizes=[7, 3], strides=[4, 2],
        id2label=dict(enumerate(CITYSCAPES.names)), label2id={n: i for i, n in enumerate(CITYSCAPES.names)},
    )  # fmt: skip
    T.SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "segformer")
    command = [sys.executable, "-m", "segattack", "report", "--profile", "tiny", "--out", str(tmp_path / "r")]
    command += ["--models", f"hf:{tmp_path / 'segformer'}", "--attacks", "pgd", "--studies", "none"]
    command += ["-p", f"images=pairs:{pairs}", "-p", "num_images=3", "-p", "target_scheme=remove:person"]
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    html = (tmp_path / "r" / "index.html").read_text()
    assert "Not the paper's setting" in html and "(Cityscapes-19)" in html
    assert "<th>road</th>" in html and "<th>person</th>" in html  # the per-class table's names
    refused = subprocess.run(
        [*command[:-6], "--models", "mobilenet_v3_large", "--studies", "none", "-p", f"images=pairs:{pairs}"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert refused.returncode == 2 and "labelled in Cityscapes-19" in refused.stderr


def test_the_whole_cityscapes_label_id_to_train_id_table():
    # cityscapesscripts' labels.py: (label id, train id) of every label; 255 = ignored in evaluation
    official = {
        0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3,
        13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
        26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
    }  # fmt: skip
    lut = cityscapes_lut()
    assert {i: int(lut[i]) for i in official} == official
    assert (lut[34:] == 255).all()  # license plate (-1) and every other value
