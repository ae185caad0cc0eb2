"""Sliding-window inference in the model wrapper: MMSeg's window placement, overlaps averaged,
differentiable for the attacks, checked before any work."""

import json

import pytest
import torch
from torch import nn

from segattack.attacks import pgd
from segattack.models.wrapper import parse_window, window_boxes, wrap_model
from segattack.study.config import RunConfig
from segattack.util.params import ParameterError


class GlobalContext(nn.Module):
    """A 1x1 conv plus each channel's mean over the whole input: the logits depend on the window."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x.mean((2, 3), keepdim=True).sum(1, keepdim=True)


def test_windows_are_placed_as_mmseg_places_them():
    boxes = window_boxes(1024, 2048, (512, 1024))  # Cityscapes' reference: 9 windows, stride 341 x 682
    assert len(boxes) == 9
    assert sorted({b[0] for b in boxes}) == [0, 341, 512] and sorted({b[1] for b in boxes}) == [0, 682, 1024]
    assert all(b[2] - b[0] == 512 and b[3] - b[1] == 1024 for b in boxes)
    assert window_boxes(48, 40, (64, 64)) == [(0, 0, 48, 40)]  # larger than the image: clipped, one window
    assert window_boxes(4, 6, (4, 4)) == [(0, 0, 4, 4), (0, 2, 4, 6)]


def test_overlaps_are_averaged_as_by_hand():
    net = GlobalContext().eval()
    model, whole = wrap_model(net, normalize=False), wrap_model(net, normalize=False)
    model.window = (4, 4)
    x = torch.rand(2, 3, 4, 6)
    with torch.no_grad():
        left, right = net(x[..., 0:4]), net(x[..., 2:6])
        expected = torch.cat([left[..., :2], (left[..., 2:] + right[..., :2]) / 2, right[..., 2:]], -1)
        assert torch.allclose(model(x), expected, atol=1e-6)
        assert not torch.allclose(model(x), whole(x), atol=1e-3)  # the window changes what the net sees
        pointwise = wrap_model(nn.Conv2d(3, 4, 1), normalize=False)
        windowed = wrap_model(pointwise.net, normalize=False)
        windowed.window = (16, 24)
        y = torch.rand(1, 3, 40, 50)
        assert torch.allclose(windowed(y), pointwise(y), atol=1e-6)  # a pointwise net: same logits either way


def test_an_attack_differentiates_through_the_windows():
    net = GlobalContext().eval()
    model = wrap_model(net, normalize=False)
    model.window = (16, 16)
    x = torch.rand(1, 3, 24, 40)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    result = pgd(model, x, torch.zeros(1, 24, 40, dtype=torch.long), steps=3, mode="linf", eps=4 / 255)
    delta = result.adv - x
    assert 0 < delta.abs().max() <= 4 / 255 + 1e-6 and result.adv.min() >= 0 and result.adv.max() <= 1
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items()) and not net.training


@pytest.mark.parametrize("text", ["0", "8", "abc", "12x", "1x2x3", "-4", "512 x"])
def test_a_bad_window_is_refused_before_any_work(text):
    with pytest.raises(ValueError, match="window"):
        parse_window(text)
    with pytest.raises(ParameterError, match="window"):
        RunConfig(window=text)


def test_a_run_infers_by_windows(tmp_path):
    from segattack.study.cache import cached_model
    from segattack.study.runner import run

    assert parse_window("512x1024") == (512, 1024) and parse_window("64") == (64, 64) and parse_window("") is None
    cfg = RunConfig(num_images=2, size=48, steps=1, window="32", weights="embedded", attack_params={"mode": "linf"})
    assert cached_model(cfg.model_key).window == (32, 32)
    results, _ = run(cfg, tmp_path / "r", progress=False)
    assert json.loads(results.to_json())["config"]["window"] == "32"
    whole = RunConfig(num_images=2, size=48, steps=1, weights="embedded", attack_params={"mode": "linf"})
    assert whole.digest() != cfg.digest() and cached_model(whole.model_key).window is None
