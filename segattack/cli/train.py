"""``segattack train``: train an embedded DeepLabV3 model on the synthetic scenes."""

from __future__ import annotations

import argparse
from pathlib import Path

from segattack.models.backbones import BACKBONES
from segattack.util.paths import cache_dir


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tr = sub.add_parser(
        "train", parents=[common], help="train an embedded DeepLabV3 model on the synthetic scenes (CPU)"
    )
    tr.add_argument("--backbone", required=True, choices=sorted(BACKBONES))
    tr.add_argument("--size", type=int, default=96, help="scene size in pixels (default 96)")
    tr.add_argument("--batch", type=int, default=16, help="scenes per step (default 16)")
    tr.add_argument("--steps", type=int, default=1500, help="optimizer steps (default 1500)")
    tr.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    tr.add_argument("--seed", type=int, default=0, help="data and initialisation seed (default 0)")
    tr.add_argument("--eval-every", type=int, default=0, help="held-out check every N steps (0: never)")
    tr.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    tr.add_argument("--work-dir", help="resumable state (default $SEGATTACK_HOME/train/BACKBONE)")
    tr.add_argument("--out", help="final checkpoint, .pt (default $SEGATTACK_HOME/weights/BACKBONE.pt)")
    tr.add_argument("--float32", action="store_true", help="store float32 instead of int8 weights")
    tr.add_argument("--stop-at", type=int, help="end a (resumed) run early at this step and finalize it")
    tr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (resuming from the work folder), write the checkpoint and print its held-out scores."""
    from segattack.study.train import TrainConfig, check_train_paths, train

    cfg = TrainConfig(
        backbone=args.backbone,
        size=args.size,
        batch=args.batch,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        eval_every=args.eval_every,
    )
    if args.threads < 0 or (args.stop_at is not None and args.stop_at < 1):
        raise ValueError("--threads must be >= 0 and --stop-at >= 1")
    work = Path(args.work_dir or cache_dir() / "train" / args.backbone)
    out = Path(args.out or cache_dir() / "weights" / f"{args.backbone}.pt")
    check_train_paths(work, out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    meta = train(cfg, work, out, int8=not args.float32, stop_at=args.stop_at)
    print(
        f"wrote {out}: held-out mIoU {meta['heldout_miou']:.4f}, pixel accuracy "
        f"{meta['heldout_pixel_accuracy']:.4f}, {meta['train_seconds']:.0f} s of training"
    )
    return 0
