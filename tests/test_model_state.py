"""Attacks leave the caller's model exactly as it was, run it in eval mode with autograd on (also
inside ``no_grad`` / ``inference_mode`` evaluation loops), and name the argument of every misuse."""

import copy
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from segattack.attacks import ATTACKS, targeted_pgd
from segattack.attacks._common import attack_mode
from segattack.models.wrapper import wrap_model

ALL = {**ATTACKS, "targeted_pgd": targeted_pgd}
KWARGS = {"asma": {"beta": 1e-3}}
LABELS = {"asma": "targets", "targeted_pgd": "targets"}  # the name of each attack's third argument


def run(name, model, images, labels, **kwargs):
    """Three steps of attack ``name``; attacks that draw random numbers draw from a seeded generator."""
    fn = getattr(ALL[name], "fn", ALL[name])
    seeded = {"generator": torch.Generator().manual_seed(0)} if "generator" in inspect.signature(fn).parameters else {}
    return ALL[name](model, images, labels, steps=3, **{**KWARGS.get(name, {}), **seeded, **kwargs})


class Counter(nn.Module):
    """Counts its forward passes in a buffer, in every mode: a buffer the attack itself changes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class BNNet(nn.Module):
    """Batch norm (running statistics change in train mode) and dropout (random in train mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout2d(0.5)
        self.count = Counter()
        self.head = nn.Conv2d(8, 21, 1)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2), self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.num_batches_tracked.fill_(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.count(self.drop(torch.relu(self.bn(self.conv(x))))))


def snapshot(model: nn.Module) -> tuple:
    return (
        [(name, m.training) for name, m in model.named_modules()],
        [(name, p.requires_grad) for name, p in model.named_parameters()],
        {name: b.clone() for name, b in model.named_buffers()},
        {name: p.detach().clone() for name, p in model.named_parameters()},
        {name: id(b) for name, b in model.named_buffers()},
    )


def assert_same(before: tuple, after: tuple) -> None:
    modes, flags, buffers, params, ids = before
    assert after[0] == modes and after[1] == flags and after[4] == ids
    assert buffers.keys() == after[2].keys() and all(torch.equal(buffers[k], after[2][k]) for k in buffers)
    assert all(torch.equal(params[k], after[3][k]) for k in params)


def inputs(seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=g), torch.randint(0, 21, (2, size, size), generator=g)


def user_model(mode: str, wrapped: bool) -> tuple[nn.Module, nn.Module]:
    """(the user's module, what is passed to the attack) in a mixed state: one frozen parameter,
    and in train mode one submodule (the head) the user keeps in eval."""
    torch.manual_seed(0)
    net = BNNet()
    net.conv.bias.requires_grad_(False)
    model = wrap_model(net, normalize=False) if wrapped else net
    model.train(mode == "train")  # wrapped: the wrapper switched back to train mode, as a user would
    if mode == "train":
        net.head.eval()
    return net, model


@pytest.mark.parametrize("wrapped", [False, True], ids=["module", "wrapped"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(ALL))
def test_every_attack_runs_in_eval_mode_and_restores_the_model_exactly(name, mode, wrapped):
    net, model = user_model(mode, wrapped)
    images, labels = inputs()
    before = snapshot(model)
    seen = []
    hook = net.bn.register_forward_pre_hook(lambda m, _: seen.append((m.training, net.drop.training)))
    try:
        result = run(name, model, images, labels)
    finally:
        hook.remove()
    assert seen and not any(bn or drop for bn, drop in seen)  # batch norm and dropout ran in eval mode
    assert_same(before, snapshot(model))  # modes, flags, buffers (the pass counter too), parameters
    # the attack saw the deterministic eval-mode network: the same adversarial images as on a frozen copy
    frozen = copy.deepcopy(net).eval().requires_grad_(False)
    frozen = wrap_model(frozen, normalize=False) if wrapped else frozen  # paper-mode PGD steps in the wrapper's std
    assert torch.equal(result.adv, run(name, frozen, images, labels).adv)


def test_the_model_is_restored_when_the_attack_fails():
    net, _ = user_model("train", wrapped=False)
    before = snapshot(net)
    with pytest.raises(ValueError, match="target masks must be"):
        run("pgd", net, *inputs()[:1], torch.zeros(2, 5, 5, dtype=torch.long))
    assert_same(before, snapshot(net))
    with pytest.raises(RuntimeError, match="inside"), attack_mode(net):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        net.bn.running_mean.add_(1)
        net.bn.running_var = torch.ones(8)  # a buffer replaced by another tensor
        raise RuntimeError("inside")
    assert_same(before, snapshot(net))


@pytest.mark.parametrize("name", sorted(ALL))
def test_attacks_work_inside_no_grad_and_inference_mode(name):
    _, model = user_model("eval", wrapped=True)
    images, labels = inputs()
    outside = run(name, model, images, labels)
    with torch.no_grad():
        in_no_grad = run(name, model, images, labels)
    with torch.inference_mode():
        in_inference = run(name, model, images, labels)
        # inputs made in the evaluation loop itself are inference tensors
        made_inside = run(name, model, images.clone(), labels.clone())
    for result in (in_no_grad, in_inference, made_inside):
        assert torch.equal(result.adv, outside.adv) and torch.equal(result.pred, outside.pred)
        assert not result.adv.is_inference() and not result.pred.is_inference()
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_a_model_built_under_inference_mode_gets_a_message():
    with torch.inference_mode():
        net = nn.Conv2d(3, 21, 1)
    with pytest.raises(ValueError, match=r"tensors made under torch.inference_mode\(\) \(weight, bias\)"):
        run("pgd", net, *inputs())


@pytest.mark.parametrize("name", sorted(ALL))
def test_label_types(name):
    _, model = user_model("eval", wrapped=True)
    images, labels = inputs()
    arg = LABELS.get(name, "labels")
    expected = run(name, model, images, labels).adv
    assert torch.equal(run(name, model, images, labels.to(torch.uint8)).adv, expected)  # PIL masks: widened
    assert torch.equal(run(name, model, images, labels.int()).adv, expected)
    with pytest.raises(
        TypeError,
        match=rf"^{arg} must be a \(B,H,W\) torch tensor .* got numpy.ndarray "
        r"\(convert with torch.from_numpy",
    ):
        run(name, model, images, labels.numpy())
    with pytest.raises(TypeError, match=rf"^{arg} must hold integer class ids, got dtype float32"):
        run(name, model, images, labels.float())
    with pytest.raises(TypeError, match=rf"^{arg} must be .* got list"):
        run(name, model, images, labels.tolist())


@pytest.mark.parametrize("name", sorted(ALL))
def test_a_string_threshold_and_step_are_named(name):
    _, model = user_model("eval", wrapped=True)
    signature = inspect.signature(ATTACKS["pgd" if name == "targeted_pgd" else name].fn).parameters
    optional = lambda arg: " or None" if "None" in str(signature[arg].annotation) else ""
    with pytest.raises(
        TypeError, match=rf"^adv_threshold must be a number{optional('adv_threshold')}, got '0.5' \(str\)"
    ):
        run(name, model, *inputs(), adv_threshold="0.5")
    step = next((s for s in ("beta", "gamma", "eps", "alpha_init", "lr_init", "primal_lr") if s in signature), None)
    with pytest.raises(TypeError, match=rf"^{step} must be a number{optional(step)}, got '0.1' \(str\)"):
        run(name, model, *inputs(), **{step: "0.1"})
    with pytest.raises(TypeError, match=r"^steps must be an integer(?: or None)?, got 2.5 \(float\)"):
        ALL[name](model, *inputs(), steps=2.5, **KWARGS.get(name, {}))
    with pytest.raises(
        TypeError, match=rf"^adv_threshold must be a number{optional('adv_threshold')}, got True \(bool\)"
    ):
        run(name, model, *inputs(), adv_threshold=True)


class Returns(nn.Module):
    def __init__(self, make) -> None:
        super().__init__()
        self.conv, self.make = nn.Conv2d(3, 21, 1), make

    def forward(self, x: torch.Tensor):
        return self.make(self.conv(x))


@pytest.mark.parametrize("name", sorted(ALL))
def test_model_outputs_that_cannot_be_attacked_get_a_message(name):
    images, labels = inputs()
    with pytest.raises(
        TypeError,
        match=r"returned a dict with keys \['out', 'aux'\]: wrap the module with "
        r"segattack.models.wrap_model",
    ):
        run(name, Returns(lambda z: {"out": z, "aux": z}), images, labels)
    with pytest.raises(TypeError, match="the model returned list; attacks need a"):
        run(name, Returns(lambda z: [z]), images, labels)
    with pytest.raises(
        ValueError,
        match=r"the model's output has shape \(2, 21, 8, 8\) for images \(2, 3, 16, 16\); "
        r"attacks need logits \(B,C,H,W\) = \(2,C,16,16\)",
    ):
        run(name, Returns(lambda z: z[..., ::2, ::2]), images, labels)
    few = wrap_model(nn.Conv2d(3, 5, 1), normalize=False)
    top = int(labels.max())
    with pytest.raises(
        ValueError,
        match=rf"{LABELS.get(name, 'labels')} hold class id {top} but the model outputs "
        r"5 classes \(ids 0..4\)",
    ):
        run(name, few, images, labels)
    # ids the model has, and ignored pixels, are fine (SEA's class-balanced loss weighs any class count;
    # ALMA prox's constraints need 3 classes, these have 5)
    run(name, few, images, torch.where(labels < 5, labels, 255))


def test_images_that_are_not_a_tensor_are_named():
    _, model = user_model("eval", wrapped=True)
    images, labels = inputs()
    with pytest.raises(ValueError, match=r"images must be a \(B,3,H,W\) torch tensor in \[0,1\], got numpy.ndarray"):
        run("pgd", model, images.numpy(), labels)
    with pytest.raises(ValueError, match=r"images must be a \(B,3,H,W\) torch tensor in \[0,1\], got numpy.ndarray"):
        run("asma", model, np.zeros((2, 3, 16, 16), np.float32), labels)
