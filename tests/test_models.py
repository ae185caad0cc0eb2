import copy
import hashlib
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import segmentation as tvseg

from segattack.engine.store import atomic_save
from segattack.models import checkpoints
from segattack.models.backbones import (
    UNVERIFIED_SOURCE,
    build_network,
    file_sha256,
    resolve_weights,
    torchvision_weights_path,
)
from segattack.models.checkpoints import CheckpointError
from segattack.models.loader import load_model
from segattack.models.wrapper import SegmentationModel, WeightsUnavailable, fold_batchnorm, wrap_model


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _torchvision_file(path: Path) -> nn.Module:
    """Random weights in torchvision's format (with the auxiliary head, as its file has) at ``path``."""
    torch.manual_seed(0)
    reference = tvseg.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    ).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), path)
    return reference


def test_a_torchvision_file_whose_hash_does_not_match_its_name_is_loaded_as_unverified(torch_home):
    path = torchvision_weights_path("mobilenet_v3_large")
    assert path == torch_home / "hub" / "checkpoints" / "deeplabv3_mobilenet_v3_large-fc3c493d.pth"
    reference = _torchvision_file(path)  # random weights under the published file's exact name
    with pytest.warns(UserWarning, match="does not start with fc3c493d: it is not the published network"):
        model = load_model("mobilenet_v3_large", "torchvision")
    info = model.info
    assert info.source == UNVERIFIED_SOURCE and info.clean_miou is None  # never the published 0.603
    assert info.description.startswith(f"UNVERIFIED weights: $TORCH_HOME/hub/checkpoints/{path.name} has ")
    assert info.extra["file"] == f"$TORCH_HOME/hub/checkpoints/{path.name}"  # no absolute path of this machine
    assert info.extra["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.extra["expected_sha256_prefix"] == "fc3c493d"
    assert info.label() == "mobilenet_v3_large / torchvision (unverified) weights"
    assert model.net.aux_classifier is None and not model.training
    x = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        assert torch.allclose(model(x), reference((x - mean) / std.view(1, 3, 1, 1))["out"], atol=1e-5)
    # "auto" prefers the cached file, and says just as plainly that it is unverified
    with pytest.warns(UserWarning, match="not the published network"):
        assert load_model("mobilenet_v3_large").info.source == UNVERIFIED_SOURCE


def test_a_torchvision_file_whose_hash_matches_its_name_is_the_published_weights(torch_home, monkeypatch):
    """No random file can match the real prefix, so the file is named after its own hash, as
    torch.hub names a published one; the loader then reads the prefix from that name."""
    scratch = torch_home / "scratch.pth"
    _torchvision_file(scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    named = torch_home / "hub" / "checkpoints" / f"deeplabv3_mobilenet_v3_large-{digest[:8]}.pth"
    named.parent.mkdir(parents=True)
    scratch.rename(named)
    monkeypatch.setattr("segattack.models.backbones.torchvision_weights_path", lambda backbone: named)
    model = load_model("mobilenet_v3_large", "torchvision")
    assert model.info.source == "torchvision" and model.info.clean_miou == pytest.approx(0.603)
    assert (
        model.info.extra["sha256"] == digest and model.info.extra["file"] == f"$TORCH_HOME/hub/checkpoints/{named.name}"
    )


def test_a_file_is_hashed_once_per_version(tmp_path):
    from segattack.models.backbones import _sha256

    path = tmp_path / "w.pth"
    path.write_bytes(b"a" * 1000)
    _sha256.cache_clear()
    assert file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert (_sha256.cache_info().misses, _sha256.cache_info().hits) == (1, 1)
    # same size, new contents and modification time: hashed again, never the stale digest
    stat = path.stat()
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert _sha256.cache_info().misses == 2


def test_resolve_weights_makes_checkpoint_paths_absolute(tmp_path, monkeypatch, mobilenet_state):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path.resolve()
    for source in ("auto", "torchvision", "embedded"):
        assert resolve_weights(source) == source
    assert resolve_weights("w/model.pt") == str(root / "w" / "model.pt")
    assert resolve_weights(Path("model.pth")) == str(root / "model.pth")
    assert resolve_weights("./w/../w/model.pt") == str(root / "w" / "model.pt")
    assert resolve_weights("~/m.pt") == str(root / "home" / "m.pt")
    (tmp_path / "real.pt").touch()
    (tmp_path / "latest.pt").symlink_to(tmp_path / "real.pt")
    assert resolve_weights("latest.pt") == str(root / "real.pt")  # the file itself, not the link's name
    with pytest.raises(ValueError, match="unknown weights 'coco'"):
        resolve_weights("coco")
    # a run loaded from a relative path records the file relative to the working directory, and its hash
    torch.save(checkpoints.pack(mobilenet_state, "mobilenet_v3_large", {}), tmp_path / "w.pt")
    info = load_model("mobilenet_v3_large", "w.pt").info
    assert info.extra["file"] == "./w.pt"
    assert info.extra["sha256"] == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()


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


def test_a_loaded_model_is_frozen_eval():
    model = load_model("mobilenet_v3_large", "embedded")
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_wrapping_leaves_the_users_module_as_it_was():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(), nn.Conv2d(4, 21, 1))
    net[1].eval()  # a mixed state, as a user may leave it (frozen batch norm, the rest training)
    net[0].weight.requires_grad_(False)
    modes, flags = [m.training for m in net.modules()], [p.requires_grad for p in net.parameters()]
    model = wrap_model(net)
    assert [m.training for m in net.modules()] == modes and [p.requires_grad for p in net.parameters()] == flags
    assert model.training  # the wrapper reports its network's mode
    assert not wrap_model(net.eval()).training


def test_wrapping_twice_is_refused():
    model = wrap_model(nn.Conv2d(3, 21, 1))
    with pytest.raises(ValueError, match="the model is already a SegmentationModel .* would normalise twice"):
        wrap_model(model)
    with pytest.raises(ValueError, match="the model's submodule '0' is already a SegmentationModel"):
        wrap_model(nn.Sequential(model, nn.Identity()))
    with pytest.raises(ValueError, match="already a SegmentationModel"):
        SegmentationModel(model)
    with pytest.raises(TypeError, match="must be a torch.nn.Module, got function"):
        wrap_model(lambda x: x)


def test_channels_last_gives_the_same_logits_and_input_gradients():
    torch.manual_seed(0)
    net = build_network("mobilenet_v3_large").eval()  # the wrapper keeps its network's mode
    plain = SegmentationModel(net)
    nhwc = SegmentationModel(build_network("mobilenet_v3_large").eval(), channels_last=True)
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
    plain = SegmentationModel(net.eval())  # the wrapper keeps its network's mode; fold_bn sets eval itself
    folded = SegmentationModel(copy.deepcopy(net).train(), fold_bn=True, channels_last=True)
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
    from segattack.study import cache
    from segattack.study.config import ModelKey

    cache.clear_models(), cache.clean_prediction.cache_clear()
    key = ModelKey("mobilenet_v3_large", "embedded", "cpu", True, True)
    cache.clean_prediction(key, cache.ImageSetKey("scenes", 48, "crop", 0), 0)
    x = torch.rand(1, 3, 48, 48, requires_grad=True)
    (grad,) = torch.autograd.grad(cache.cached_model(key)(x).sum(), x)
    assert grad.abs().sum() > 0
