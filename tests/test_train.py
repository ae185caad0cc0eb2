import json

import pytest
import torch
from torch import nn

from segattack.data.scenes import scene_batch
from segattack.models.backbones import build_network
from segattack.models.loader import load_model
from segattack.models.wrapper import wrap_model
from segattack.study.train import TrainConfig, evaluate, train, train_step


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    net = build_network("mobilenet_v3_large").train()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    images, masks = scene_batch(0, "train", 0, 4, 32)
    losses = [train_step(net, opt, images, masks) for _ in range(8)]
    assert losses[-1] < 0.6 * losses[0]


def test_train_writes_a_resumable_run_and_a_safe_checkpoint(tmp_path):
    cfg = TrainConfig(
        "mobilenet_v3_large", size=32, batch=2, steps=3, checkpoint_every=2, heldout_images=4, recalibration_batches=2
    )
    out = tmp_path / "m.pt"
    meta = train(cfg, tmp_path / "work", out)
    assert (tmp_path / "work" / "last.pt").is_file()
    assert len((tmp_path / "work" / "log.jsonl").read_text().splitlines()) == 3
    assert meta["steps"] == 3 and meta["image_size"] == 32 and "NOT the paper's" in meta["description"]
    assert json.loads(out.with_suffix(".json").read_text())["heldout_miou"] == meta["heldout_miou"]
    # the stored (int8) model scores what its metadata says
    model = load_model("mobilenet_v3_large", out)
    assert abs(evaluate(model, 0, 4, 32)["miou"] - meta["heldout_miou"]) < 1e-9
    # a second call resumes at the last step: no more training, same run
    again = train(cfg, tmp_path / "work", out)
    assert again["train_seconds"] == meta["train_seconds"]
    assert len((tmp_path / "work" / "log.jsonl").read_text().splitlines()) == 3


def test_evaluate_refuses_a_model_in_train_mode():
    """Wrapping no longer puts a network in eval mode: scoring one in train mode would use (and
    update) batch statistics, so evaluate refuses it rather than report a wrong mIoU."""
    net = nn.Sequential(nn.Conv2d(3, 21, 1), nn.BatchNorm2d(21))
    before = net[1].running_mean.clone()
    with pytest.raises(ValueError, match="evaluate needs a model in eval mode"):
        evaluate(wrap_model(net), 0, 2, 32)
    assert torch.equal(net[1].running_mean, before)
    assert set(evaluate(wrap_model(net.eval()), 0, 2, 32)) >= {"miou", "pixel_accuracy"}
