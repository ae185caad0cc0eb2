"""What the model wrapper costs: an attack iteration on a wrapped model against the bare network's forward+backward.

    .venv/bin/python benchmarks/wrapper_cost.py                 # SegFormer, SMP Unet, FCN at 256 and 512 px

For each model and size, in one process, on the same random batch and the very same network object:

- ``bare``: the network as its library gives it, on an input normalised outside it: one forward
  and the backward of the pixel-wise cross-entropy at the network's own output resolution (labels
  resized by nearest neighbour where it is smaller: SegFormer's 1/4), w.r.t. the input;
- ``wrapped``: the same through :class:`SegmentationModel` (normalisation, the HF output adapter,
  the upsampling to the input size), cross-entropy at the input size;
- ``scoring``: what scoring at the input size costs beyond the network: the wrapper's upsampling
  of the network's own logits, the cross-entropy there (forward and backward to those logits) and
  the prediction, through the wrapper's code on a stand-in that returns those logits;
- ``iteration``: one iteration of ``targeted_pgd(mode='linf')`` on the wrapped model, read as the
  interval between the starts of consecutive forward passes (iteration_cost.py's method).

Both cross-entropies are the attacks' own (``pixel_cross_entropy``: channels_last logits read as
(pixel, class) rows, 1.5-2x faster than ``F.cross_entropy`` there), so the reference is no slower
than what the attacks run.

Every item is timed ``--repeats`` times in each of ``--rounds`` interleaved rounds and reported as
the median of its samples; the target is iteration / bare <= 1.05. Random weights: time does not
depend on their values. Models: SegFormer-B0's architecture (150 ADE20K classes), smp Unet with a
ResNet34 encoder (21 classes), torchvision FCN ResNet50 (21 classes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe

from segattack.attacks import targeted_pgd
from segattack.attacks.losses import pixel_cross_entropy
from segattack.metrics import predict_classes
from segattack.models import SegmentationModel, load_model

MODELS = {"segformer": "SegFormer-B0 (hf:)", "unet": "SMP Unet ResNet34 (smp:)", "fcn": "FCN ResNet50 (torchvision)"}


def build(name: str, workdir: Path) -> tuple[SegmentationModel, Callable[[torch.Tensor], torch.Tensor]]:
    """The wrapped model and its bare network as a function of a normalised input (the same module)."""
    torch.manual_seed(0)
    if name == "segformer":
        import transformers as T

        T.SegformerForSemanticSegmentation(T.SegformerConfig(num_labels=150)).save_pretrained(workdir / name)
        T.SegformerImageProcessor().save_pretrained(workdir / name)
        model = load_model(f"hf:{workdir / name}")
        return model, lambda x: model.net.model(pixel_values=x).logits
    if name == "unet":
        model = load_model("smp:Unet:resnet34")
        return model, model.net
    from segattack.models.backbones import build_torchvision

    net = build_torchvision("fcn_resnet50")
    torch.save(net.state_dict(), workdir / "fcn.pt")
    model = load_model("torchvision:fcn_resnet50", workdir / "fcn.pt")
    return model, lambda x: model.net(x)["out"]


def ce_backward_seconds(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, t: torch.Tensor, repeats: int
) -> list[float]:
    """Seconds of ``repeats`` forward + cross-entropy backward passes w.r.t. the input (after a warm-up);
    the labels are resized to the logits' resolution when it differs."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        xx = x.clone().requires_grad_(True)
        logits = forward(xx)
        labels = (
            t
            if logits.shape[-2:] == t.shape[-2:]
            else F.interpolate(t[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
        )
        torch.autograd.grad(pixel_cross_entropy(logits, labels).mean(), xx)
        times.append(time.perf_counter() - start)
    return times[1:]


class Fixed(nn.Module):
    """A stand-in network that returns given head logits whatever its input: the wrapper's scoring alone."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def scoring_seconds(
    model: SegmentationModel, head: torch.Tensor, x: torch.Tensor, t: torch.Tensor, repeats: int
) -> list[float]:
    """Seconds of what scoring at the input size costs beyond the network: the wrapper's upsampling of
    the network's own logits ``head``, the pixel cross-entropy forward+backward down to ``head`` and
    the prediction (as an attack iteration makes it), through the wrapper's own code."""
    fixed = Fixed()
    wrapper = SegmentationModel(fixed, mean=(0.0,) * 3, std=(1.0,) * 3, channels_last=model.channels_last)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fixed.logits = head.clone().requires_grad_(True)
        logits = wrapper(x)
        torch.autograd.grad(pixel_cross_entropy(logits, t).mean(), fixed.logits)
        predict_classes(logits.detach())
        times.append(time.perf_counter() - start)
    return times[1:]


def iteration_seconds(model: nn.Module, x: torch.Tensor, t: torch.Tensor, repeats: int) -> list[float]:
    """The intervals between consecutive forward passes of targeted PGD run for ``repeats + 1`` steps."""
    starts: list[float] = []
    handle = model.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    try:
        targeted_pgd(model, x, t, mode="linf", steps=repeats + 1, adv_threshold=None)
    finally:
        handle.remove()
    return [b - a for a, b in zip(starts[1:], starts[2:])]


def measure(name: str, size: int, batch: int, rounds: int, repeats: int, workdir: Path) -> dict:
    model, bare = build(name, workdir)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    t = torch.randint(0, 21, (batch, size, size), generator=g)
    normalised = ((x - model.mean) / model.std).contiguous(memory_format=torch.channels_last)  # as the wrapper feeds it
    with torch.no_grad():
        head = bare(normalised)  # the network's own logits, in the layout it gives them
    items = {
        "scoring": lambda: scoring_seconds(model, head, x, t, repeats),
        "bare": lambda: ce_backward_seconds(bare, normalised, t, repeats),
        "wrapped": lambda: ce_backward_seconds(model, x, t, repeats),
        "iteration": lambda: iteration_seconds(model, x, t, repeats),
    }
    samples: dict[str, list[list[float]]] = {k: [] for k in items}
    for _ in range(rounds):
        for key, timed in items.items():
            samples[key].append(timed())
    sec = {k: statistics.median(s for one in v for s in one) for k, v in samples.items()}
    return {
        "model": name,
        "spec": model.info.backbone,
        "size": size,
        "batch": batch,
        "seconds": sec,
        "wrapped_over_bare": sec["wrapped"] / sec["bare"],
        "iteration_over_bare": sec["iteration"] / sec["bare"],
        "round_seconds": samples,
    }


def table(rows: list[dict]) -> str:
    out = [
        "| model | px | batch | bare fwd+bwd (s) | scoring alone / bare | wrapped fwd+bwd / bare "
        "| PGD iteration / bare (<= 1.05) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {MODELS[r['model']]} | {r['size']} | {r['batch']} | {r['seconds']['bare']:.3f} | "
            f"{r['seconds']['scoring'] / r['seconds']['bare']:.3f} | {r['wrapped_over_bare']:.3f} | "
            f"{r['iteration_over_bare']:.3f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over every timed item")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes or iterations per item and round")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "wrapper_cost.json"))
    parser.add_argument("--table", metavar="JSON", help="print the table of a saved run and measure nothing")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())["rows"]))
        return
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in args.sizes:
            for name in args.models:
                rows.append(measure(name, size, args.batch, args.rounds, args.repeats, Path(workdir)))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "round_seconds"}), flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(
                    json.dumps(
                        {
                            "machine": f"{describe()}, {torch.get_num_threads()} threads",
                            "torch": str(torch.__version__),
                            "rounds": args.rounds,
                            "repeats": args.repeats,
                            "date": time.strftime("%Y-%m-%d"),
                            "rows": rows,
                        },
                        indent=1,
                    )
                )
    print(table(rows))


if __name__ == "__main__":
    main()
