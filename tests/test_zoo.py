"""Model specs (segattack.models.specs): every kind gives input-size logits, stays frozen in eval mode through an
attack with its buffers untouched, and each bad spec gets one clear error. Random weights only: the
HF models are tiny configs saved with save_pretrained and loaded back by hf:DIR."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segattack.attacks import targeted_pgd
from segattack.models.backbones import TORCHVISION, UNVERIFIED_SOURCE, build_torchvision
from segattack.models.loader import load_model
from segattack.models.specs import HFSemantic, SpecError, _hf_normalisation, resolve_spec
from segattack.models.wrapper import SegmentationModel

transformers = pytest.importorskip("transformers")
smp = pytest.importorskip("segmentation_models_pytorch")
T = transformers


def _swin() -> T.SwinConfig:
    return T.SwinConfig(
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=2,
        image_size=32,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


TINY_HF = {  # the smallest configs that build: random weights, 21 labels
    "segformer": lambda: T.SegformerForSemanticSegmentation(
        T.SegformerConfig(
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[8, 16],
            num_attention_heads=[1, 1],
            decoder_hidden_size=16,
            num_labels=21,
            patch_sizes=[7, 3],
            strides=[4, 2],
        )
    ),
    "upernet": lambda: T.UperNetForSemanticSegmentation(
        T.UperNetConfig(
            backbone_config=T.ConvNextConfig(
                hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
            ),
            hidden_size=16,
            num_labels=21,
            use_auxiliary_head=False,
        )
    ),
    "dpt": lambda: T.DPTForSemanticSegmentation(
        T.DPTConfig(
            hidden_size=16,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=8,
            backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[8, 8, 16, 16],
            fusion_hidden_size=16,
            num_labels=21,
            use_auxiliary_head=False,
        )
    ),
    "beit": lambda: T.BeitForSemanticSegmentation(
        T.BeitConfig(  # image_size 32: run at 64 by interpolation
            hidden_size=16,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=8,
            out_indices=[0, 1, 2, 3],
            pool_scales=[1, 2],
            use_auxiliary_head=False,
            use_relative_position_bias=True,
            num_labels=21,
        )
    ),
    "maskformer": lambda: T.MaskFormerForInstanceSegmentation(
        T.MaskFormerConfig(
            backbone_config=_swin(),
            fpn_feature_size=32,
            mask_feature_size=32,
            num_queries=5,
            num_labels=21,
            decoder_config=dict(
                model_type="detr",
                d_model=32,
                encoder_layers=1,
                decoder_layers=1,
                encoder_attention_heads=1,
                decoder_attention_heads=1,
                encoder_ffn_dim=16,
                decoder_ffn_dim=16,
            ),
        )
    ),
    "mask2former": lambda: T.Mask2FormerForUniversalSegmentation(
        T.Mask2FormerConfig(
            backbone_config=_swin(),
            feature_size=32,
            mask_feature_size=32,
            hidden_dim=32,
            encoder_feedforward_dim=16,
            dim_feedforward=16,
            encoder_layers=1,
            decoder_layers=2,
            num_attention_heads=1,
            num_queries=5,
            num_labels=21,
            common_stride=4,
        )
    ),
}
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # not ImageNet's: the processor config must be read


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Each tiny HF model saved with save_pretrained, beside an image processor config with MEAN and STD."""
    dirs = {}
    for kind, build in TINY_HF.items():
        torch.manual_seed(0)
        where = tmp_path_factory.mktemp(kind)
        build().save_pretrained(where)
        T.SegformerImageProcessor(image_mean=list(MEAN), image_std=list(STD)).save_pretrained(where)
        dirs[kind] = where
    return dirs


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """An importable module ``zoo_user_nets`` of model-building functions."""
    (tmp_path / "zoo_user_nets.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        from segattack.models import wrap_model

        def bn_dropout():  # batch norm and dropout, left in training mode as a user may leave them
            torch.manual_seed(0)
            net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.5),
                                nn.Conv2d(8, 21, 1), nn.AvgPool2d(2))  # logits at half the input size
            net[1].running_mean.uniform_(-0.5, 0.5)
            return net.train()

        def crossed():  # a batch norm registered after a convolution it does not follow: folding it is wrong
            class Crossed(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a, self.b = nn.Conv2d(3, 21, 1), nn.Conv2d(3, 21, 1)
                    self.bn = nn.BatchNorm2d(21)
                    self.bn.running_mean.fill_(3.0)
                    self.bn.weight.data.fill_(2.0)

                def forward(self, x):
                    return self.b(x) + self.bn(self.a(x) * 2)
            return Crossed()

        def own_normalisation():
            return wrap_model(nn.Conv2d(3, 21, 1), normalize=False)

        def not_a_module():
            return "a string"
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("zoo_user_nets", None)
    yield "zoo_user_nets"
    sys.modules.pop("zoo_user_nets", None)


def _state(model: nn.Module) -> tuple[list[bool], list[bool], dict[str, torch.Tensor]]:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.named_buffers()},
    )


def _attacked_unchanged(model: SegmentationModel, size: int = 64) -> None:
    """Input-size logits; eval mode and frozen weights; an attack leaves modes, flags and buffers as they were."""
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    classes = model.info.extra["num_classes"]
    assert model(x).shape == (2, classes, size, size)
    modes, flags, buffers = _state(model)
    assert not any(modes) and not any(flags)
    target = torch.randint(0, min(classes, 21), (2, size, size), generator=torch.Generator().manual_seed(2))
    result = targeted_pgd(model, x, target, mode="linf", eps=8 / 255, steps=2)
    assert (result.adv - x).abs().max() <= 8 / 255 + 1e-6 and (result.adv - x).abs().max() > 0
    after_modes, after_flags, after = _state(model)
    assert after_modes == modes and after_flags == flags and after.keys() == buffers.keys()
    assert all(torch.equal(after[k], buffers[k]) for k in buffers)


@pytest.mark.parametrize("kind", list(TINY_HF))
def test_hf_models_give_input_size_scores_and_stay_frozen_through_an_attack(hf_dirs, kind):
    model = load_model(f"hf:{hf_dirs[kind]}")
    info = model.info
    assert info.source == "hf" and info.backbone == f"hf:{hf_dirs[kind]}" and info.extra["model_type"] == kind
    assert info.extra["num_classes"] == 21 and info.extra["id2label"][20] == "LABEL_20"
    assert torch.allclose(model.mean.flatten(), torch.tensor(MEAN)) and torch.allclose(
        model.std.flatten(), torch.tensor(STD)
    )
    _attacked_unchanged(model)


@pytest.mark.parametrize("kind", ["segformer", "beit"])
def test_per_pixel_hf_logits_are_the_models_own_upsampled_bilinearly(hf_dirs, kind):
    model = load_model(f"hf:{hf_dirs[kind]}", fold_bn=False, channels_last=False)
    net = T.AutoModelForSemanticSegmentation.from_pretrained(hf_dirs[kind]).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        raw = net(
            pixel_values=(x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1),
            interpolate_pos_encoding=True,
        ).logits
        assert raw.shape[-1] < 64  # SegFormer's and BEiT's heads work at a fraction of the input size
        expected = F.interpolate(raw, size=(64, 64), mode="bilinear", align_corners=False)
        logits = model(x)
        assert torch.allclose(logits, expected, atol=1e-5)
        # upsampled in channels_last layout (faster on CPU), which the losses read as (pixel, class) rows
        assert logits.stride(1) == 1 and not logits.is_contiguous()


@pytest.mark.parametrize("kind", ["maskformer", "mask2former"])
def test_mask_classifier_scores_match_transformers_semantic_post_processing(hf_dirs, kind):
    """The differentiable scores equal post_process_semantic_segmentation's segmentation_scores."""
    model = load_model(f"hf:{hf_dirs[kind]}", fold_bn=False, channels_last=False)
    net = model.net.model
    processor = {"maskformer": T.MaskFormerImageProcessor, "mask2former": T.Mask2FormerImageProcessor}[kind]()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = net(pixel_values=(x - model.mean) / model.std)
        reference = processor.post_process_semantic_segmentation(
            out, target_sizes=[(64, 64)] * 2, return_segmentation_scores=True
        )
        ours = model(x)
    for i in range(2):
        assert torch.allclose(ours[i], reference[i]["segmentation_scores"], atol=1e-5)
        assert torch.equal(ours[i].argmax(0), reference[i]["segmentation"])
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, 3].sum(), x)
    assert grad.abs().sum() > 0


def test_hf_normalisation_reads_the_rescale_factor():
    mean, std, _ = _hf_normalisation({"image_mean": [127.5] * 3, "image_std": [127.5] * 3, "do_rescale": False}, "hf:x")
    assert mean == pytest.approx((0.5,) * 3) and std == pytest.approx((0.5,) * 3)  # v in 0..255 -> (v-127.5)/127.5
    mean, std, _ = _hf_normalisation(
        {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 255}, "hf:x"
    )
    assert mean == pytest.approx((0.5,) * 3) and std == pytest.approx((0.5,) * 3)
    mean, std, _ = _hf_normalisation({"do_normalize": False, "do_rescale": True, "rescale_factor": 1 / 127.5}, "hf:x")
    assert mean == (0.0, 0.0, 0.0) and std == pytest.approx((0.5,) * 3)  # x * 255 / 127.5
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        assert _hf_normalisation(None, "hf:x")[0] == (0.485, 0.456, 0.406)


@pytest.mark.parametrize(
    "arch,encoder", [("Unet", "resnet18"), ("FPN", "resnet18"), ("DeepLabV3Plus", "resnet18"), ("Segformer", "mit_b0")]
)
def test_smp_models_give_input_size_logits_and_stay_frozen_through_an_attack(arch, encoder):
    model = load_model(f"smp:{arch}:{encoder}")
    assert model.info.source == "smp (untrained)" and "UNTRAINED" in model.info.description
    _attacked_unchanged(model)


def test_an_smp_checkpoint_sets_the_weights_and_the_class_count(tmp_path):
    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, classes=25).eval()
    torch.save(net.state_dict(), tmp_path / "unet.pt")
    model = load_model(f"smp:Unet:resnet18:{tmp_path / 'unet.pt'}", fold_bn=False, channels_last=False)
    assert model.info.source == "smp" and model.info.extra["num_classes"] == 25
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - model.mean) / model.std), atol=1e-5)
    folded = load_model(f"smp:Unet:resnet18:{tmp_path / 'unet.pt'}")
    assert folded.info.extra["fold_bn"] and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-3, rtol=1e-3)
    _attacked_unchanged(model)  # 25 classes; targets in 0..20 while check_inputs caps ids at 20
    torch.save({"segmentation_head.0.weight": torch.zeros(3, 16, 3, 3)}, tmp_path / "bad.pt")
    with pytest.raises(Exception, match=r"does not fit this smp Unet/resnet18 network \(.*missing"):
        load_model(f"smp:Unet:resnet18:{tmp_path / 'bad.pt'}")


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_every_torchvision_model_gives_input_size_logits(name):
    torch.manual_seed(0)
    net = build_torchvision(name).eval()
    assert getattr(net, "aux_classifier", None) is None
    with torch.no_grad():
        assert SegmentationModel(net)(torch.rand(1, 3, 40, 40)).shape == (1, 21, 40, 40)


def test_a_torchvision_spec_goes_through_the_hash_checked_cache(tmp_path, monkeypatch):
    """LR-ASPP's file (random weights under its published name) is loaded, unverified, with its transforms'
    normalisation; a checkpoint path loads the same network; 'embedded' has no meaning for it."""
    from torchvision.models import segmentation as tvseg

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    reference = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    path = tmp_path / "torch" / "hub" / "checkpoints" / "lraspp_mobilenet_v3_large-d234d4ea.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    with pytest.warns(UserWarning, match="does not start with d234d4ea: it is not the published network"):
        model = load_model("torchvision:lraspp_mobilenet_v3_large", fold_bn=False, channels_last=False)
    assert model.info.source == UNVERIFIED_SOURCE and model.info.backbone == "torchvision:lraspp_mobilenet_v3_large"
    assert model.info.extra["num_classes"] == 21 and model.info.extra["labels"][15] == "person"
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), reference((x - model.mean) / model.std)["out"], atol=1e-5)
    checkpoint = load_model("torchvision:lraspp_mobilenet_v3_large", path)  # a path: no hash to check
    assert checkpoint.info.source == "checkpoint"
    _attacked_unchanged(checkpoint)
    with pytest.raises(SpecError, match="weights='embedded' does not apply to torchvision:lraspp"):
        load_model("torchvision:lraspp_mobilenet_v3_large", "embedded")
    with pytest.raises(Exception, match=r"torchvision weights for fcn_resnet50 are unavailable \(not cached"):
        load_model("torchvision:fcn_resnet50", download=False)


def test_a_torchvision_spec_in_a_profile_takes_its_published_weights_and_embedded_is_refused_up_front():
    # the embedded weights exist for the study's two backbones only: a profile's "embedded" becomes
    # the spec's own ("auto"), and asking for it by name is one error when the run is configured
    from segattack.study.config import RunConfig
    from segattack.study.profiles import grid_configs
    from segattack.util.params import ParameterError

    specs = ("torchvision:lraspp_mobilenet_v3_large", "mobilenet_v3_large")
    assert [c.weights for c in grid_configs("tiny", backbones=specs, attacks=("pgd",))] == ["auto", "embedded"]
    with pytest.raises(ParameterError, match="weights='embedded' does not apply to torchvision:lraspp"):
        grid_configs("tiny", {"weights": "embedded"}, backbones=specs[:1], attacks=("pgd",))
    with pytest.raises(ParameterError, match="weights='embedded' does not apply to torchvision:fcn_resnet50"):
        RunConfig(backbone="torchvision:fcn_resnet50", weights="embedded")
    with pytest.raises(ParameterError, match="does not apply to torchvision:fcn_resnet50"):
        RunConfig(backbone="torchvision:fcn_resnet50", weights="mine.ckpt")


def test_a_users_module_is_frozen_in_eval_mode_and_its_buffers_survive_an_attack(user_module):
    model = load_model(f"module:{user_module}:bn_dropout")
    assert model.info.source == "module" and model.info.extra["num_classes"] == 21
    assert model.info.extra["fold_bn"] and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # dropout off
    _attacked_unchanged(model, size=32)


def test_batch_norm_folding_is_kept_only_where_a_probe_agrees(user_module):
    crossed = load_model(f"module:{user_module}:crossed")
    assert crossed.info.extra["fold_bn"] is False and any(isinstance(m, nn.BatchNorm2d) for m in crossed.modules())
    own = load_model(f"module:{user_module}:own_normalisation")
    assert own.mean.abs().sum() == 0 and torch.equal(own.std.flatten(), torch.ones(3))


def test_bad_specs_get_one_clear_error(tmp_path, user_module):
    with pytest.raises(SpecError, match=r"unknown backbone 'foo:bar': use a study backbone .* hf:REPO_OR_DIR"):
        load_model("foo:bar")
    with pytest.raises(SpecError, match="names no model after 'hf:'"):
        load_model("hf:")
    with pytest.raises(SpecError, match=f"no such directory {tmp_path / 'absent'}"):
        load_model(f"hf:{tmp_path / 'absent'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match=r"holds no config\.json; save the model there with model.save_pretrained"):
        load_model(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(SpecError, match=r"zoo_user_nets.not_a_module\(\) returned str, not a torch.nn.Module"):
        load_model(f"module:{user_module}:not_a_module")
    with pytest.raises(SpecError, match="zoo_user_nets has no absent"):
        load_model(f"module:{user_module}:absent")
    with pytest.raises(SpecError, match="cannot import no_such_package"):
        load_model("module:no_such_package.mod:build")
    with pytest.raises(SpecError, match="smp specs are smp:ARCH:ENCODER"):
        load_model("smp:Unet")
    with pytest.raises(SpecError, match="unknown torchvision model in 'torchvision:vgg16'"):
        load_model("torchvision:vgg16")
    with pytest.raises(SpecError, match="weights='embedded' applies to the study's backbones and torchvision"):
        load_model("smp:Unet:resnet18", "embedded")


def test_resolve_spec_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path.resolve()
    assert resolve_spec("mobilenet_v3_large") == "mobilenet_v3_large"
    assert resolve_spec("hf:./models/seg") == f"hf:{root / 'models' / 'seg'}"
    repo = "hf:nvidia/segformer-b0-finetuned-ade-512-512"  # a hub id, not a path
    assert resolve_spec(repo) == repo
    assert resolve_spec("smp:Unet:resnet34:w/u.pt") == f"smp:Unet:resnet34:{root / 'w' / 'u.pt'}"
    assert resolve_spec("smp:Unet:resnet34") == "smp:Unet:resnet34"
    assert resolve_spec("module:pkg.mod:build") == "module:pkg.mod:build"


def test_hf_semantic_passes_the_task_tokens_and_position_interpolation():
    seen = {}

    class Stub(nn.Module):
        def forward(self, pixel_values, task_inputs=None, interpolate_pos_encoding=False):
            seen.update(task=task_inputs, interpolate=interpolate_pos_encoding)
            q = torch.zeros(pixel_values.shape[0], 2, 4)
            q[:, 0, 1] = 10.0  # query 0 is class 1
            masks = torch.full((pixel_values.shape[0], 2, 4, 4), -10.0)
            masks[:, 0, :2] = 10.0  # query 0 covers the top half
            return T.modeling_outputs.ModelOutput(class_queries_logits=q, masks_queries_logits=masks)

    head = HFSemantic(Stub(), "oneformer", task_inputs=torch.arange(5.0).view(1, 5))
    scores = head(torch.zeros(3, 3, 16, 16))
    assert seen["interpolate"] is True and seen["task"].shape == (3, 5)
    assert scores.shape == (3, 3, 4, 4)  # the null class dropped
    top = torch.softmax(torch.tensor([0.0, 10.0, 0.0, 0.0]), 0)[1] * torch.sigmoid(torch.tensor(10.0))
    assert torch.allclose(scores[:, 1, :2], top.expand(3, 2, 4), atol=1e-4) and scores[:, 1, 2:].max() < 1e-3


@pytest.mark.slow
def test_an_smp_and_a_torchvision_model_through_the_clis_report_on_a_pairs_folder(tmp_path):
    """segattack report --models smp:Unet:resnet18 torchvision:lraspp_mobilenet_v3_large on a tiny
    VOC-labelled pairs: folder: smp untrained (encoder_weights=None), LR-ASPP from random weights
    under its published name in TORCH_HOME (found offline, its hash refused as unverified)."""
    import os
    import subprocess
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from torchvision.models import segmentation as tvseg

    from segattack.data.scenes import render_scene

    pairs = tmp_path / "pairs"
    for sub in ("images", "masks"):
        (pairs / sub).mkdir(parents=True)
    for i in range(2):
        image, mask = render_scene(0, "heldout", i, 48)
        Image.fromarray(image).save(pairs / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(pairs / "masks" / f"{i}.png")
    torch.manual_seed(0)
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / "lraspp_mobilenet_v3_large-d234d4ea.pth"
    checkpoint.parent.mkdir(parents=True)
    net = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    torch.save(net.state_dict(), checkpoint)
    models = ["smp:Unet:resnet18", "torchvision:lraspp_mobilenet_v3_large"]
    command = [sys.executable, "-m", "segattack", "report", "--profile", "tiny", "--out", str(tmp_path / "r")]
    command += ["--models", *models, "--attacks", "pgd", "--studies", "none", "--images", f"pairs:{pairs}"]
    command += ["-p", "num_images=2", "-p", "size=48"]
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    html = (tmp_path / "r" / "index.html").read_text()
    assert "smp Unet (resnet18), UNTRAINED" in html and UNVERIFIED_SOURCE in html
    assert "Not the paper&#x27;s setting" in html or "Not the paper's setting" in html
    runs = sorted(p.name for p in (tmp_path / "r" / "runs").iterdir() if p.is_dir())
    assert runs == ["smp_Unet_resnet18-pgd", "torchvision_lraspp_mobilenet_v3_large-pgd"]


def test_a_folders_own_code_never_runs_and_standard_input_is_never_read(tmp_path, monkeypatch, capsys):
    """An hf: folder whose config names its own code (auto_map): transformers asked "Do you wish to run the
    custom code? [y/N]" and, answered y on standard input, ran the folder's code."""
    import io
    import json

    from segattack.cli import main

    sentinel = tmp_path / "ran"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evilseg",
                "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForSemanticSegmentation": "evil.EvilModel"},
            }
        )
    )
    (folder / "evil.py").write_text(
        f"open({str(sentinel)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evilseg'\n"
    )
    stdin = io.StringIO("y\ny\n")
    monkeypatch.setattr(sys, "stdin", stdin)
    args = ["attack", "--model", f"hf:{folder}", "--attack", "pgd", "--out", str(tmp_path / "out"), "--steps", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"segattack attack: error: hf:{folder}: its config names the repository's own code (auto_map), which "
        f"segattack never runs; use a model transformers ships, or build yours with your code through "
        f"module:PKG.MOD:CALLABLE"
    ]
    assert not sentinel.exists() and stdin.read() == "y\ny\n" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["no-decode-head", "no-match"])
def test_hf_weights_that_leave_parameters_random_are_refused_by_name(tmp_path, damage):
    """Weights that miss the decode head (or match no parameter) were random-initialised and reported as hf weights."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    TINY_HF["segformer"]().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    if damage == "no-decode-head":
        state = {k: v for k, v in state.items() if not k.startswith("decode_head.")}
        expected = r"missing \(left random\): decode_head\.batch_norm\.bias, .*; save the trained model"
    else:
        state = {f"other.{k}": v for k, v in state.items()}
        expected = r"missing \(left random\): .*; unexpected: other\."
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SpecError, match=f"hf:{tmp_path}: its weights do not fit its config \\({expected}"):
        load_model(f"hf:{tmp_path}")
