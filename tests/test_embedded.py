"""The shipped embedded models: real segmenters of their synthetic domain, as their metadata says."""

import pytest

from segattack.models.backbones import embedded_weights_path
from segattack.models.loader import load_model
from segattack.study.train import evaluate
from segattack.util.paths import weights_dir


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "resnet50"])
def test_embedded_model_meets_the_bar_and_its_metadata(backbone):
    assert embedded_weights_path(backbone) == weights_dir() / f"{backbone}.pt"  # shipped, not trained here
    model = load_model(backbone, "embedded")
    info, meta = model.info, model.info.extra
    assert info.source == "embedded" and "NOT the paper's COCO-trained weights" in info.description
    assert info.clean_miou >= 0.70
    assert abs(meta["fp32_heldout_miou"] - info.clean_miou) <= 0.01  # int8 storage costs at most 0.01
    again = evaluate(model, meta["seed"], meta["heldout_images"], meta["image_size"])
    assert abs(again["miou"] - info.clean_miou) <= 0.02


def test_shipped_weights_fit_the_repository_budget():
    sizes = [p.stat().st_size for p in weights_dir().glob("*.pt")]
    assert len(sizes) == 2 and sum(sizes) < 60e6
