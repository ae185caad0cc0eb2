"""Peak memory of an attack on the paper profile's largest batch (4 photos at 520 px).

    .venv/bin/python benchmarks/memory.py [--device cpu|cuda] [--steps 2]

Each (backbone, attack, model configuration) is one study run (``segattack.study.runner.run`` with the
paper profile's settings) in a fresh process, so one peak does not hide another: peak RSS
(``ru_maxrss``) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA, beside the footprint after
the imports; the difference is the run's own (weights, images, activations). Memory peaks in the
attack's first iteration, so two steps suffice. The paper profile uses torchvision's weights;
offline the embedded ones stand in (the same architectures, so the same activation memory).
Writes ``results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from segattack.study.config import RunConfig
from segattack.study.profiles import PROFILES
from segattack.study.runner import run

CONFIGS = {"plain": {"channels_last": False, "fold_bn": False}, "fast": {}}


def _peak_mib(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(backbone: str, attack: str, config: str, device: str, steps: int) -> dict:
    """One study run of the paper profile in this process (``segattack.study.runner.run``: model, photos,
    clean prediction, targets, attack, metrics); its memory figures in MiB."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = _peak_mib(cuda)
    settings = {k: v for k, v in PROFILES["paper"].items() if not k.startswith("studies")}
    settings.update(weights="embedded", steps=steps, **CONFIGS[config])
    with tempfile.TemporaryDirectory() as folder:
        res, _ = run(RunConfig(backbone=backbone, attack=attack, device=device, **settings), folder, progress=False)
    peak = _peak_mib(cuda)
    return {
        "backbone": backbone,
        "attack": attack,
        "config": config,
        "batch": len(res.names),
        "size": res.image_size,
        "device": device,
        "baseline_mib": baseline,
        "peak_mib": peak,
        "run_mib": peak - baseline,
        "attack_seconds": res.seconds,
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v3_large", "resnet50"])
    parser.add_argument("--attacks", nargs="+", default=["pgd", "asma"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--child", nargs=3, metavar=("BACKBONE", "ATTACK", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.device, args.steps)))
        return
    rows = []
    for backbone in args.backbones:
        for attack in args.attacks:
            for config in args.configs:
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        backbone,
                        attack,
                        config,
                        "--device",
                        args.device,
                        "--steps",
                        str(args.steps),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch": str(torch.__version__), "rows": rows}, indent=1))
    unit = "peak allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"\n| backbone | attack | model | batch x px | after imports (MiB) | {unit} (MiB) | the run adds (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backbone']} | {r['attack']} | {r['config']} | {r['batch']} x {r['size']} | "
            f"{r['baseline_mib']:.0f} | {r['peak_mib']:.0f} | {r['run_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
