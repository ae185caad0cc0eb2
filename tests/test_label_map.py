"""A label map: a dataset's masks read in a model's classes (a VOC model on Cityscapes-labelled
images), each listed class mapped, the rest ignored; bad maps refused before any work."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segattack.data.labels import ADE20K, CITYSCAPES, VOC, read_label_map
from segattack.data.sets import ImageError, image_set
from segattack.study.config import RunConfig
from segattack.util.params import ParameterError

CITY_TO_VOC = "# Cityscapes -> VOC\nperson -> person\nrider -> 15\ncar -> car  # by name\nbicycle -> bicycle\n"


def cityscapes_pairs(root, count: int = 2, size: int = 48):
    """A pairs: folder in Cityscapes train ids: road (0) top, a person (11) and a rider (12) block,
    a car (13) strip, the bottom rows ignored (255)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CITYSCAPES.names) + "\n")
    for i in range(count):
        ids = np.zeros((size, size), np.uint8)
        ids[16:32, 8:16], ids[16:32, 16:24], ids[36:40] = 11, 12, 13
        ids[-4:] = 255
        rgb = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"{i}.png")
        Image.fromarray(ids).save(root / "masks" / f"{i}.png")
    return root


def test_a_map_read_by_hand(tmp_path):
    path = tmp_path / "map.txt"
    path.write_text(CITY_TO_VOC)
    mapping = read_label_map(path, CITYSCAPES, VOC)
    expected = np.full(256, 255, np.uint8)
    expected[[11, 12, 13, 18]] = [15, 15, 7, 2]  # person, rider -> person; car; bicycle
    assert np.array_equal(mapping.lut, expected) and mapping.target is VOC and mapping.source is CITYSCAPES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("person person\n", r"line 1: expected 'DATASET_CLASS -> MODEL_CLASS', got 'person person'"),
        ("person -> person\nzebra -> cat\n", r"line 2: Cityscapes-19 has no class 'zebra'"),
        ("car -> tram\n", r"line 1: VOC-21 has no class 'tram'"),
        ("person -> person\n\nperson -> cat\n", r"line 3: 'person' is mapped on line 1 too"),
        ("# nothing\n\n", "maps no class"),
        ("car -> 21\n", r"line 1: VOC-21 has classes 0..20, got 21"),
    ],
)
def test_a_bad_map_gets_one_clear_error(tmp_path, text, message):
    path = tmp_path / "map.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_label_map(path, CITYSCAPES, VOC)


def test_masks_are_checked_in_the_datasets_classes_then_mapped(tmp_path):
    root = cityscapes_pairs(tmp_path / "city")
    (tmp_path / "map.txt").write_text(CITY_TO_VOC)
    images = image_set(f"pairs:{root}", 48)
    mapped = images.mapped(read_label_map(tmp_path / "map.txt", CITYSCAPES, VOC))
    assert images.labels is CITYSCAPES and mapped.labels is VOC
    truth = mapped.load([0]).truth[0]
    assert sorted(truth.unique().tolist()) == [7, 15, 255]  # road unlisted -> ignored
    assert (truth == 15).sum() == 2 * 16 * 8 and (truth == 7).sum() == 4 * 48
    assert torch.equal(truth == 255, torch.isin(images.load([0]).truth[0], torch.tensor([0, 255])))
    with pytest.raises(ImageError, match="already read through the label map"):
        mapped.mapped(read_label_map(tmp_path / "map.txt", CITYSCAPES, VOC))
    with pytest.raises(
        ImageError, match=r"label map .*ade.txt reads masks in ADE20K-150 but .* is labelled in Cityscapes-19"
    ):
        images.mapped(_ade_map(tmp_path))
    Image.fromarray(np.full((48, 48), 30, np.uint8)).save(root / "masks" / "1.png")  # 30: no Cityscapes class
    with pytest.raises(ImageError, match=r"class ids \[30\].*Cityscapes-19"):
        mapped.load([1])  # checked before mapping: a bad id is not hidden as ignore


def _ade_map(tmp_path):
    (tmp_path / "ade.txt").write_text("person -> person\n")
    return read_label_map(tmp_path / "ade.txt", ADE20K, VOC)


def test_a_run_config_takes_a_map_or_refuses_it_before_any_work(tmp_path):
    root = cityscapes_pairs(tmp_path / "city")
    (tmp_path / "map.txt").write_text(CITY_TO_VOC)
    with pytest.raises(ParameterError, match=r"predicts VOC-21 .* labelled in Cityscapes-19"):
        RunConfig(images=f"pairs:{root}", num_images=1)  # no map: refused, both spaces named
    cfg = RunConfig(images=f"pairs:{root}", label_map=str(tmp_path / "map.txt"), target_scheme="remove:person")
    assert cfg.labels is VOC and cfg.label_map == str((tmp_path / "map.txt").resolve())
    with pytest.raises(ParameterError, match="VOC-21 has no class 'road'"):  # schemes speak the model's classes
        RunConfig(images=f"pairs:{root}", label_map=str(tmp_path / "map.txt"), target_scheme="fixed:road")
    with pytest.raises(ParameterError, match=r"label map .*nope.txt: No such file"):
        RunConfig(images=f"pairs:{root}", label_map=str(tmp_path / "nope.txt"))
    with pytest.raises(ParameterError, match="label_map needs the model's class names from its spec"):
        RunConfig(backbone="smp:Unet:resnet18", images=f"pairs:{root}", label_map=str(tmp_path / "map.txt"))


def test_a_voc_model_attacks_cityscapes_labelled_images_through_a_map(tmp_path):
    from segattack.study.runner import run

    root = cityscapes_pairs(tmp_path / "city")
    (tmp_path / "map.txt").write_text(CITY_TO_VOC)
    cfg = RunConfig(
        images=f"pairs:{root}", label_map=str(tmp_path / "map.txt"), num_images=2, size=48, steps=2,
        target_scheme="fixed:person", attack_params={"mode": "linf"}, weights="embedded",
    )  # fmt: skip
    results, _ = run(cfg, tmp_path / "r", progress=False)
    doc = json.loads(results.to_json())
    scores = doc["clean_truth"]
    assert len(scores["class_iou"]) == 21  # scored in the model's 21 classes
    assert {i for i, v in enumerate(scores["class_iou"]) if v is not None} >= {7, 15}  # the mapped classes present


def test_the_cli_takes_a_label_map_and_names_a_bad_one(tmp_path, capsys):
    from segattack.cli import main

    root = cityscapes_pairs(tmp_path / "city")
    (tmp_path / "map.txt").write_text(CITY_TO_VOC)
    (tmp_path / "bad.txt").write_text("person => person\n")
    argv = "attack --backbone mobilenet_v3_large --attack pgd --weights embedded --num-images 2 --steps 1 --size 48"
    common = [*argv.split(), "--images", f"pairs:{root}"]
    assert main([*common, "--out", str(tmp_path / "o"), "--label-map", str(tmp_path / "map.txt")]) == 0
    capsys.readouterr()
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["config"]["label_map"] == str((tmp_path / "map.txt").resolve())
    assert main([*common, "--out", str(tmp_path / "b"), "--label-map", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.txt, line 1: expected 'DATASET_CLASS -> MODEL_CLASS'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()  # refused before any folder
