"""Shared fixtures: a tiny segmentation net trained in a second on 32 px scenes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from segattack.data.classes import voc_palette
from segattack.data.scenes import render_scene, scene_batch
from segattack.engine.store import atomic_save
from segattack.models import checkpoints
from segattack.models.backbones import build_network
from segattack.models.wrapper import wrap_model


class TinySegNet(nn.Module):
    """Three dilated convolutions: enough to learn the scenes' colours at 32 px, fast on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 24, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(24, 21, 1),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


@pytest.fixture(scope="session")
def tiny_model():
    """A TinySegNet trained for 150 steps (seeded), wrapped like the study's models."""
    torch.manual_seed(0)
    net = TinySegNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(150):
        images, masks = scene_batch(0, "train", step * 8, 8, 32)
        loss = nn.functional.cross_entropy(net(images)["out"], masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return wrap_model(net, "tiny test net", normalize=False)


@pytest.fixture(scope="session")
def scene_inputs():
    """Four held-out 32 px scenes and their ground-truth masks."""
    return scene_batch(0, "heldout", 0, 4, 32)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """An (untrained) int8 MobileNetV3 DeepLabV3 checkpoint whose metadata says 48 px."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "mnv3.pt"
    meta = {"heldout_miou": 0.1, "image_size": 48, "description": "untrained test network"}
    atomic_save(
        checkpoints.pack(build_network("mobilenet_v3_large").state_dict(), "mobilenet_v3_large", meta, int8=True), path
    )
    return path


@pytest.fixture(scope="session")
def linear_model():
    """logits = W x + b per pixel: class c in {0,1,2} scores channel c, every other class -10 (hand-checkable)."""
    conv = nn.Conv2d(3, 21, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(-10.0)
        conv.bias[:3] = 0.0
        for c in range(3):
            conv.weight[c, c] = 1.0
    return wrap_model(conv, normalize=False)


def write_voc(root, count: int = 5, size: int = 48):
    """A Pascal VOC 2012 folder (torchvision's layout) of ``count`` held-out scenes: JPEG images of
    alternating landscape/portrait shape, palette masks with a 255 border, and val.txt."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_palette().flatten().tolist() + [224, 224, 192] * (256 - 21)
    names = []
    for i in range(count):
        image, mask = render_scene(0, "heldout", i, size)
        keep = slice(0, size - 8)
        image, mask = (image[:, keep], mask[:, keep]) if i % 2 == 0 else (image[keep], mask[keep])
        mask = mask.copy()
        mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 255, 255, 255, 255  # void border, as VOC draws
        name = f"2007_{i:06d}"
        Image.fromarray(image).save(base / "JPEGImages" / f"{name}.jpg", quality=98)
        label = Image.fromarray(mask, mode="P")
        label.putpalette(palette)
        label.save(base / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="session")
def voc_folder(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc"))
