"""Models for tests/test_evaluate.py: ``module:eval_models:blind`` ignores its input (21 VOC classes)."""

import torch
from torch import nn


class Blind(nn.Module):
    """Fixed logits whatever the image (a zero gradient reaches the input): robust equals clean."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(1, 21, 4, 4, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1, -1, -1) + 0 * x.mean((1, 2, 3)).view(-1, 1, 1, 1)


def blind() -> nn.Module:
    return Blind()
