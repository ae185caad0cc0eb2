"""Shared fixtures: a tiny segmentation net trained in a second on 32 px scenes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segattack import checkpoints
from segattack.models import build_network, wrap_model
from segattack.scenes import scene_batch


class TinySegNet(nn.Module):
    """Three dilated convolutions: enough to learn the scenes' colours at 32 px, fast on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(24, 21, 1))

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
    checkpoints.atomic_save(checkpoints.pack(build_network("mobilenet_v3_large").state_dict(),
                                             "mobilenet_v3_large", meta, int8=True), path)
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
