"""A user's own model for ``module:toy_model:make`` (tests/test_registry.py): 21 VOC classes, BatchNorm."""

from torch import nn


def make() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 21, 1))
