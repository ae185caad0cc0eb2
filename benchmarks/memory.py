"""Peak memory of an attack on the paper profile's largest batch (4 photos at 520 px).

    .venv/bin/python benchmarks/memory.py [--device cpu|cuda] [--steps 2]

Each (backbone, attack, model configuration) runs in a fresh process, so one peak does not hide
another: peak RSS (``ru_maxrss``) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA, beside the
footprint after the model and the images are loaded. Memory peaks in the first iteration, so two
steps suffice. The paper profile uses torchvision's weights; offline the embedded ones stand in
(the same architectures, so the same activation memory). Writes ``results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from segattack.grid import PROFILES
from segattack.runner import default_attack_params

CONFIGS = {"plain": {"channels_last": False, "fold_bn": False}, "fast": {}}


def child(backbone: str, attack: str, config: str, device: str, steps: int) -> dict:
    """Run one attack in this process and return its memory figures (MiB)."""
    from segattack.attacks import ATTACKS
    from segattack.data import study_images, target_masks
    from segattack.metrics import predict_classes
    from segattack.models import load_model

    paper = PROFILES["paper"]
    model = load_model(backbone, "embedded", device=device, **CONFIGS[config])
    images = study_images(paper["images"], paper["num_images"], paper["size"], 0)[0].to(device)
    with torch.inference_mode():
        clean_pred = predict_classes(model(images))
    targets = target_masks(clean_pred, "single", 1)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    ATTACKS[attack](model, images, targets, steps=steps, **default_attack_params(attack, backbone))
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"backbone": backbone, "attack": attack, "config": config, "batch": len(images),
            "size": images.shape[-1], "device": device, "loaded_mib": before, "peak_mib": peak,
            "attack_mib": peak - before, "seconds": seconds, "steps": steps}


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
                done = subprocess.run([sys.executable, __file__, "--child", backbone, attack, config, "--device",
                                       args.device, "--steps", str(args.steps)],
                                      capture_output=True, text=True, check=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch": str(torch.__version__), "rows": rows}, indent=1))
    unit = "peak allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"\n| backbone | attack | model | batch x px | after loading (MiB) | {unit} (MiB) | attack adds (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['attack']} | {r['config']} | {r['batch']} x {r['size']} | "
              f"{r['loaded_mib']:.0f} | {r['peak_mib']:.0f} | {r['attack_mib']:.0f} |")


if __name__ == "__main__":
    main()
