"""Label spaces (VOC-21, Cityscapes-19, ADE20K-150, a config's id2label, classes.txt) and the target
schemes that name a class: fixed:CLASS and remove:CLASS."""

import json

import numpy as np
import pytest
import torch

from segattack.classes import VOC_CLASSES, voc_palette
from segattack.config import RunConfig
from segattack.labels import (
    ADE20K,
    CITYSCAPES,
    VOC,
    LabelSpace,
    ade20k_lut,
    cityscapes_lut,
    from_classes_file,
    from_id2label,
)
from segattack.params import ParameterError
from segattack.targets import check_scheme, scheme_target, target_sources


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
    from segattack.runner import run

    cfg = RunConfig(
        num_images=2, size=48, steps=3, target_scheme="fixed:cat", attack_params={"mode": "linf"}, weights="embedded"
    )
    results, _ = run(cfg, tmp_path / "r", progress=False)
    doc = json.loads(results.to_json())
    assert doc["config"]["target_scheme"] == "fixed:cat" and doc["attacked"] == [0, 1]  # no image is the target
    assert 0 < doc["summary"]["changed_share"]["mean"] <= 1  # the clean prediction is not all cat
