"""Every registered attack, every loss of APGD and SEA, on 2-, 19- and 150-class models, targeted
and untargeted, in float32 and float64; the balanced mask-CE's class weights for any class count."""

import inspect

import pytest
import torch
from torch import nn

from segattack.attacks import ATTACKS
from segattack.attacks.apgd import apgd
from segattack.attacks.losses import (
    LOSSES,
    VOC_CLASS_WEIGHTS,
    balanced_masked_ce_loss,
    class_weights,
    label_frequency_weights,
    masked_ce_loss,
    pixel_cross_entropy,
)
from segattack.attacks.sea import sea
from segattack.models import wrap_model

CLASSES = (2, 19, 150)
DTYPES = (torch.float32, torch.float64)


def tiny(classes: int, dtype: torch.dtype) -> nn.Module:
    """A seeded 3x3-conv model with ``classes`` outputs, in ``dtype``."""
    torch.manual_seed(classes)
    return wrap_model(nn.Conv2d(3, classes, 3, padding=1).to(dtype), normalize=False)


def batch(model: nn.Module, classes: int, dtype: torch.dtype, targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 8 px images and their labels (targeted: the other image's prediction), a few ignored."""
    g = torch.Generator().manual_seed(classes)
    images = torch.rand(2, 3, 8, 8, generator=g).to(dtype)
    if targeted:
        with torch.no_grad():
            labels = model(images).argmax(1).roll(1, 0)
    else:
        labels = torch.randint(0, classes, (2, 8, 8), generator=g)
    labels[0, 0, :3] = 255
    return images, labels


def run(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targeted: bool, **kwargs):
    fn = ATTACKS[name].fn
    signature = inspect.signature(fn).parameters
    extra = {"generator": torch.Generator().manual_seed(0)} if "generator" in signature else {}
    if "targeted" in signature:
        extra["targeted"] = targeted
    if name == "asma":
        extra["beta"] = 1e-3
    return ATTACKS[name](model, images, labels, steps=2, **extra, **kwargs)


def check(result, images: torch.Tensor, in_range: bool = True) -> None:
    """Same dtype and shape as the images, finite, in [0,1] (paper-mode PGD does not clip), success a share."""
    assert result.adv.dtype == images.dtype and result.adv.shape == images.shape
    assert torch.isfinite(result.adv).all()
    assert not in_range or (result.adv.min() >= 0 and result.adv.max() <= 1)
    assert ((result.success >= 0) & (result.success <= 1)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("classes", CLASSES)
def test_every_registered_attack_runs_on_any_class_count_and_precision(classes, targeted, dtype):
    model = tiny(classes, dtype)
    images, labels = batch(model, classes, dtype, targeted)
    for name in ATTACKS:
        if name == "asma" and not targeted:
            continue  # ASMA is targeted only
        if name == "alma_prox" and classes < (4 if targeted else 3):
            with pytest.raises(ValueError, match=f"alma_prox needs at least {4 if targeted else 3} classes"):
                run(name, model, images, labels, targeted)
            continue
        check(run(name, model, images, labels, targeted), images, in_range=name != "pgd")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("classes", CLASSES)
def test_every_loss_of_apgd_and_sea_runs_on_any_class_count(classes, targeted, dtype):
    model = tiny(classes, dtype)
    images, labels = batch(model, classes, dtype, targeted)
    for loss in LOSSES:
        result = apgd(model, images, labels, targeted=targeted, steps=2, loss=loss)
        check(result, images)
        assert result.loss.dtype == dtype and torch.isfinite(result.loss).all()
        check(
            sea(model, images, labels, targeted=targeted, steps=2, losses=[loss], generator=torch.Generator()), images
        )
    check(sea(model, images, labels, targeted=targeted, steps=4, generator=torch.Generator().manual_seed(1)), images)


def test_the_voc_weights_are_the_sea_authors_table():
    # nmndeep/Robust-Segmentation, semseg/utils/utils.py, VOC_WTS: background first
    authors = (
        0.0007, 0.0531, 0.1394, 0.0500, 0.0814, 0.0575, 0.0256, 0.0312, 0.0198, 0.0626, 0.0382,
        0.0457, 0.0212, 0.0404, 0.0421, 0.0089, 0.0915, 0.0585, 0.0366, 0.0279, 0.0677,
    )  # fmt: skip
    assert authors == VOC_CLASS_WEIGHTS
    # the rule behind it: weights proportional to 1 / pixel share, summing to 1 (background ~71%)
    assert sum(authors) == pytest.approx(1.0, abs=1e-9)
    shares = torch.tensor(authors, dtype=torch.float64).reciprocal()
    assert (shares / shares.sum())[0].item() == pytest.approx(0.713, abs=1e-3)
    assert class_weights(torch.zeros(1, 2, 2, dtype=torch.long), 21) is None  # 21 classes: the table


def test_label_frequency_weights_by_hand():
    labels = torch.tensor([[[0, 0, 0, 1], [255, 255, 1, 0]], [[2, 2, 2, 2], [2, 2, 2, 2]]])
    weights = label_frequency_weights(labels, 3)
    # image 0: class 0 on 4 pixels, class 1 on 2 (ignored pixels not counted): 1/4 : 1/2 -> 1/3, 2/3
    assert weights[0].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert weights[1].tolist() == [0.0, 0.0, 1.0]  # one class present: all its weight
    assert class_weights(labels, 19).shape == (2, 19) and class_weights(labels, 150).shape == (2, 150)


@pytest.mark.parametrize("classes", [2, 19, 150])
def test_the_balanced_loss_by_hand_on_other_class_counts(classes):
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(2, classes, 4, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (2, 4, 4), generator=g)  # classes 0 and 1 in unequal numbers
    labels[1, 0] = 255
    for targeted in (False, True):
        got = balanced_masked_ce_loss(logits, labels, targeted)
        for i in range(2):
            y = labels[i]
            counts = torch.tensor([(y == c).sum().item() for c in range(classes)], dtype=torch.float64)
            inverse = torch.where(counts > 0, 1 / counts.clamp_min(1), 0)
            weight = (inverse / inverse.sum())[torch.where(y == 255, 0, y)]
            one = masked_ce_loss(logits[i : i + 1], y[None], targeted)  # unweighted, per labelled pixel
            ce = pixel_cross_entropy(logits[i : i + 1], y[None])[0]
            pred = logits[i].argmax(0)
            mask = (y != 255) & ((pred != y) if targeted else (pred == y))
            expected = (ce * weight * mask).sum() / (y != 255).sum()
            assert got[i].item() == pytest.approx(expected.item(), rel=1e-12)
            assert one.item() == pytest.approx(((ce * mask).sum() / (y != 255).sum()).item(), rel=1e-12)
        # an image's loss does not depend on the rest of its batch
        assert balanced_masked_ce_loss(logits[:1], labels[:1], targeted).item() == pytest.approx(got[0].item())
