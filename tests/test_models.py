import copy
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import segmentation as tvseg

from segattack import checkpoints
from segattack.checkpoints import CheckpointError
from segattack.models import (SegmentationModel, WeightsUnavailable, build_network, fold_batchnorm, load_model,
                              torchvision_weights_path, wrap_model)
from segattack.store import atomic_save


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_torchvision_weights_load_from_the_exact_cache_path(torch_home):
    path = torchvision_weights_path("mobilenet_v3_large")
    assert path == torch_home / "hub" / "checkpoints" / "deeplabv3_mobilenet_v3_large-fc3c493d.pth"
    # torchvision's file holds the auxiliary head too: build as torchvision does, save its state.
    torch.manual_seed(0)
    reference = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21,
                                                   aux_loss=True).eval()
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = load_model("mobilenet_v3_large", "torchvision")
    assert model.info.source == "torchvision" and model.info.clean_miou == pytest.approx(0.603)
    assert model.net.aux_classifier is None and not model.training
    x = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), reference((x - mean) / std)["out"], atol=1e-5)
    # "auto" prefers the cached torchvision weights
    assert load_model("mobilenet_v3_large").info.source == "torchvision"


def test_missing_torchvision_weights_name_file_and_path(torch_home, monkeypatch):
    with pytest.raises(WeightsUnavailable, match="not cached") as info:
        load_model("resnet50", "torchvision", download=False)
    message = str(info.value)
    assert "deeplabv3_resnet50_coco-cd0a2569.pth" in message
    assert str(torch_home / "hub" / "checkpoints") in message

    def offline(url, dst, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable, match="download failed: Name or service not known") as info:
        load_model("resnet50", "torchvision")
    assert str(torch_home / "hub" / "checkpoints" / "deeplabv3_resnet50_coco-cd0a2569.pth") in str(info.value)


def test_unknown_backbone_and_weights():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        load_model("vgg16")
    with pytest.raises(ValueError, match="unknown weights 'coco'"):
        load_model("resnet50", "coco")


def test_wrapper_validates_shape_and_unwraps_dict():
    model = wrap_model(torch.nn.Conv2d(3, 21, 1), normalize=False)
    assert model(torch.rand(2, 3, 5, 5)).shape == (2, 21, 5, 5)
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        model(torch.rand(3, 5, 5))
    bad = wrap_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity()))
    bad.net.forward = lambda x: [x]
    with pytest.raises(TypeError, match="expected a tensor or a dict"):
        bad(torch.rand(1, 3, 2, 2))


@pytest.fixture(scope="module")
def mobilenet_state():
    torch.manual_seed(0)
    return build_network("mobilenet_v3_large").state_dict()


def test_checkpoint_round_trip_float_and_int8(tmp_path, mobilenet_state):
    for int8 in (False, True):
        path = tmp_path / f"m{int8}.pt"
        atomic_save(checkpoints.pack(mobilenet_state, "mobilenet_v3_large", {"heldout_miou": 0.5}, int8), path)
        model = load_model("mobilenet_v3_large", path, fold_bn=False)  # compare the stored tensors
        assert model.info.clean_miou == 0.5 and model.info.source == "checkpoint"
        for name, value in model.net.state_dict().items():
            ref = mobilenet_state[name]
            if int8 and ref.is_floating_point() and ref.dim() >= 2 and ref.numel() >= 4096:
                step = ref.abs().reshape(ref.shape[0], -1).amax(1).max() / 127
                assert (value - ref).abs().max() <= step / 2 + 1e-7
            else:
                assert torch.equal(value, ref)
    assert (tmp_path / "mTrue.pt").stat().st_size < 0.4 * (tmp_path / "mFalse.pt").stat().st_size


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model("mobilenet_v3_large", path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model("mobilenet_v3_large", tmp_path / "absent.pt")


def test_checkpoint_with_wrong_shapes(tmp_path, mobilenet_state):
    state = dict(mobilenet_state)
    state["classifier.4.weight"] = torch.zeros(10, 256, 1, 1)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"wrong shapes: classifier.4.weight: \(10, 256, 1, 1\)"):
        load_model("mobilenet_v3_large", path)
    torch.save(checkpoints.pack(mobilenet_state, "mobilenet_v3_large", {}), path)
    with pytest.raises(CheckpointError, match="holds mobilenet_v3_large weights, not resnet50"):
        load_model("resnet50", path)


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["EXPLOIT_MARKER"]),))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"state": Exploit()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model("mobilenet_v3_large", path)
    assert not marker.exists()
    # the same file would run code if loaded unsafely: the test's exploit is real
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_segmentation_model_is_frozen_eval():
    model = SegmentationModel(build_network("mobilenet_v3_large"))
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_channels_last_gives_the_same_logits_and_input_gradients():
    torch.manual_seed(0)
    net = build_network("mobilenet_v3_large")
    plain, nhwc = SegmentationModel(net), SegmentationModel(build_network("mobilenet_v3_large"), channels_last=True)
    nhwc.net.load_state_dict(net.state_dict())
    x = torch.rand(2, 3, 48, 48, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    a, b = plain(x), nhwc(y)
    assert torch.allclose(a, b, atol=1e-4)
    (ga,), (gb,) = torch.autograd.grad(a.sum(), x), torch.autograd.grad(b.sum(), y)
    assert torch.allclose(ga, gb, atol=1e-4)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "resnet50"])
def test_folded_batchnorm_gives_the_same_logits_and_input_gradients(backbone):
    torch.manual_seed(0)
    net = build_network(backbone)
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-0.2, 0.2)
    plain = SegmentationModel(net)
    folded = SegmentationModel(copy.deepcopy(net), fold_bn=True, channels_last=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 40, 40, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    a, b = plain(x), folded(y)
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
    (ga,), (gb,) = torch.autograd.grad(a.sum(), x), torch.autograd.grad(b.sum(), y)
    assert torch.allclose(ga, gb, atol=1e-3 * ga.abs().max().item())


def test_fold_batchnorm_refuses_a_training_module():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(net)
    fold_batchnorm(net.eval())
    assert isinstance(net[1], nn.Identity)


def test_a_model_loaded_under_inference_mode_can_still_be_attacked():
    """The CI failure of a grid whose worker first met the model inside a clean prediction."""
    with torch.inference_mode():
        model = load_model("mobilenet_v3_large", "embedded")
    assert not any(p.is_inference() for p in model.parameters())
    x = torch.rand(1, 3, 48, 48, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert grad.abs().sum() > 0


def test_the_cached_clean_prediction_leaves_a_differentiable_model():
    from segattack import cache
    from segattack.config import ModelKey

    cache.cached_model.cache_clear(), cache.clean_prediction.cache_clear()
    key = ModelKey("mobilenet_v3_large", "embedded", "cpu", True, True)
    cache.clean_prediction(key, cache.ImageSetKey("scenes", 48, "crop", 0), 0)
    x = torch.rand(1, 3, 48, 48, requires_grad=True)
    (grad,) = torch.autograd.grad(cache.cached_model(key)(x).sum(), x)
    assert grad.abs().sum() > 0
