"""Command line: ``python -m segattack {attack,report,train,evaluate,leaderboard} ...``.

Every parameter is checked before any work (and before any folder is touched); a failure prints
one line and exits with 2 (bad input), 1 (an attack diverged, a run failed) or 130 / 128+signal
(stopped: what finished is kept, and the same command resumes). ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

from .attacks import ATTACKS, AttackDiverged
from .cli_evaluate import add_parsers as add_evaluate_parsers
from .cluster import CLUSTERS
from .config import RunConfig
from .data import RESIZES
from .models import BACKBONES
from .params import parse_override
from .paths import cache_dir
from .studies import LEVELS
from .targets import TARGET_SOURCES

DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RunConfig)}  # the one home of the run defaults
ATTACK_HELP = f"{', '.join(ATTACKS)}, or ensemble:A,B,... (their per-image worst case)"


def _attack_name(name: str) -> str:
    """An attack name argparse accepts: registered, or a family's (ensemble:pgd,segpgd)."""
    try:
        return ATTACKS.check(name).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _override(text: str) -> tuple[str, object]:
    try:
        return parse_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, check_train_paths, train

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


def _attack(args: argparse.Namespace) -> int:
    from .runner import run
    from .store import output_folder

    params = {
        k: v
        for k, v in (
            ("mode", args.mode),
            ("eps", args.eps),
            ("alpha", args.alpha),
            ("beta", args.beta),
            ("tau", args.tau),
            ("score", args.score),
            ("iou_average", args.iou_average),
            ("reduction", args.reduction),
        )
        if v is not None
    }
    params.update(dict(args.attack_param or []))
    if args.l2_penalty:
        params["l2_penalty"] = True
    if args.no_clip:
        params["clip"] = False
    cfg = RunConfig(
        backbone=args.backbone,
        attack=args.attack,
        weights=args.weights,
        images=args.images,
        label_map=args.label_map or "",
        num_images=args.num_images,
        size=args.size,
        resize=args.resize,
        window=args.window or "",
        batch=args.batch,
        steps=args.steps,
        target_scheme=args.target_scheme,
        target_index=args.target_index,
        target_source=args.target_source,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        fold_bn=args.fold_bn,
        save_images=args.save_images,
        threads=args.threads,
        deterministic=args.deterministic,
        attack_params=params,
    )
    out = output_folder(args.out)
    results, _ = run(cfg, out)
    m = {k: v.mean or 0.0 for k, v in results.summary.items()}
    print(
        f"{args.backbone} {args.attack} ({results.weights.source} weights, {results.image_size} px, "
        f"{len(results.names)} images): IoU to original {100 * m['iou_original']:.2f}%, to target "
        f"{100 * m['iou_target']:.2f}%, pixel accuracy to original {100 * m['acc_original']:.2f}%, "
        f"L2 (0-255) {m['l2_255']:.1f}; {results.seconds_per_iteration:.3f} s/iteration -> {out / 'results.json'}"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from .jobs import TaskState
    from .profiles import BACKBONE_ORDER, run_profile
    from .render import build_report

    overrides = dict(args.param or [])
    if args.images:
        overrides["images"] = args.images
    if args.label_map:
        overrides["label_map"] = args.label_map
    states = run_profile(
        args.profile,
        args.out,
        overrides,
        tuple(args.backbones or BACKBONE_ORDER),
        tuple(args.attacks) if args.attacks else None,
        args.studies,
        args.cluster,
    )
    print("runs: " + ", ".join(f"{name} {state}" for name, state in states.items()))
    path = build_report(args.out, args.profile)
    print(f"report: {path}")
    return 1 if TaskState.FAILED in states.values() else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segattack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an error too")

    at = sub.add_parser("attack", parents=[common], help="attack a set of images and write metrics, images and history")
    at.add_argument(
        "--backbone",
        "--model",
        required=True,
        metavar="MODEL",
        help=f"a study backbone ({', '.join(BACKBONES)}) or a model spec: torchvision:NAME, "
        f"hf:REPO_OR_DIR, smp:ARCH:ENCODER[:CHECKPOINT], module:PKG.MOD:CALLABLE",
    )
    at.add_argument("--attack", required=True, type=_attack_name, metavar="ATTACK", help=ATTACK_HELP)
    at.add_argument(
        "--weights",
        default=DEFAULTS["weights"],
        help="auto (torchvision if cached, else embedded), torchvision, embedded, or a checkpoint path",
    )
    at.add_argument("--out", required=True, help="output folder (new, empty, or one segattack wrote; replaced whole)")
    at.add_argument(
        "--images",
        default=DEFAULTS["images"],
        help="scenes, photos, voc:PATH (Pascal VOC 2012 val), pairs:PATH (images/ + masks/) or a folder",
    )
    at.add_argument(
        "--label-map",
        metavar="FILE",
        help="read the masks in the model's classes: DATASET_CLASS -> MODEL_CLASS per line, unlisted classes ignored",
    )
    at.add_argument(
        "--num-images",
        type=int,
        default=DEFAULTS["num_images"],
        help="images attacked (default %(default)s; 0: all of a finite set)",
    )
    at.add_argument(
        "--size",
        type=int,
        default=DEFAULTS["size"],
        help="image side in px (default 0: the embedded model's training size, 520 otherwise)",
    )
    at.add_argument(
        "--resize",
        default=DEFAULTS["resize"],
        choices=RESIZES,
        help="crop: centre square (default); shorter: shorter side to --size (torchvision's transforms); "
        "squash: both sides to --size ([5]'s)",
    )
    at.add_argument(
        "--window",
        metavar="H[xW]",
        help="sliding-window inference in windows of H x W px, stride 2/3 of a window, as MMSeg's slide mode "
        "(Cityscapes' reference: 512x1024); default: the whole image",
    )
    at.add_argument(
        "--batch",
        type=int,
        default=DEFAULTS["batch"],
        help="images per shard, attacked together (default %(default)s, as [5])",
    )
    at.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="attack iterations (default %(default)s)")
    at.add_argument(
        "--target-scheme",
        default=DEFAULTS["target_scheme"],
        metavar="SCHEME",
        help="single: all images target image --target-index's prediction (the paper); roll: i -> i+1; "
        "fixed:CLASS: every pixel to CLASS; remove:CLASS: CLASS's pixels to the nearest other class",
    )
    at.add_argument(
        "--target-index", type=int, default=DEFAULTS["target_index"], help="the target image for --target-scheme single"
    )
    at.add_argument(
        "--target-source",
        default=DEFAULTS["target_source"],
        choices=TARGET_SOURCES,
        help="prediction: the target image's clean prediction (default); truth: its ground truth ([5])",
    )
    at.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    at.add_argument("--device", default=DEFAULTS["device"], help="cpu or cuda")
    at.add_argument("--amp", action="store_true", help="bf16 autocast for the attack (for GPUs)")
    at.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS["channels_last"],
        help="run the network in NHWC memory layout (default on)",
    )
    at.add_argument(
        "--fold-bn",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS["fold_bn"],
        help="fold batch norms into the convolutions (default on)",
    )
    at.add_argument(
        "--save-images",
        type=int,
        default=DEFAULTS["save_images"],
        help="keep adversarial images of the first N (default %(default)s)",
    )
    at.add_argument(
        "--threads",
        type=int,
        default=DEFAULTS["threads"],
        help="intra-op threads of the attack compute (default %(default)s, as the grid's tasks: float "
        "sums depend on it, so every path uses the same)",
    )
    at.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS["deterministic"],
        help="torch's deterministic algorithms where it has them (default on)",
    )
    pgd = at.add_argument_group("PGD's keywords (-a KEY=VALUE sets any attack's)")
    pgd.add_argument(
        "--mode", choices=["paper", "linf", "l2"], help="paper: normalised-space eps, raw gradient (default)"
    )
    pgd.add_argument(
        "--reduction",
        choices=["batch", "image"],
        help="loss over the batch: one mean ([5], paper default) or per-image means summed",
    )
    pgd.add_argument("--eps", type=str, help="L-inf budget (paper 0.1 normalised; linf 8/255)")
    pgd.add_argument("--alpha", type=str, help="step size (paper 100; linf 2.5*eps/steps)")
    asma = at.add_argument_group("ASMA's keywords")
    asma.add_argument("--beta", type=str, help="eq. (2) beta (paper: 3e-6 MobileNetV3, 1e-4 ResNet50)")
    asma.add_argument("--tau", type=str, help="eq. (2) tau (paper 1e-5)")
    asma.add_argument("--score", choices=["logits", "softmax"], help="g in eq. (1) (default logits)")
    asma.add_argument(
        "--iou-average", choices=["present", "all", "pixel", "adv_lib"], help="IoU in eq. (2) (default present)"
    )
    asma.add_argument("--l2-penalty", action="store_true", help="subtract ||X_n - X||^2 as the public codes do")
    at.add_argument("--no-clip", action="store_true", help="do not clip adversarial images to [0,1]")
    at.add_argument(
        "-a",
        "--attack-param",
        action="append",
        type=_override,
        metavar="KEY=VALUE",
        help="any other keyword of the attack function, e.g. -a targeted=false -a gamma=0.2 -a eps=8/255",
    )
    at.set_defaults(func=_attack)

    rp = sub.add_parser(
        "report", parents=[common], help="run the grid on Dask, its notebooks with papermill, and render the report"
    )
    rp.add_argument("--profile", default="default", help="default (embedded, CPU), paper (torchvision, 520 px), tiny")
    rp.add_argument("--out", default="reports", help="output folder (default reports/)")
    rp.add_argument(
        "-p",
        "--param",
        action="append",
        type=_override,
        metavar="KEY=VALUE",
        help="override a run parameter for every run (e.g. -p steps=20 -p images=voc:PATH) or a studies "
        "setting (-p studies=none, -p studies_num_images=4, -p studies_size=128)",
    )
    rp.add_argument(
        "--images", help="the runs' image set, as -p images=...: scenes, photos, voc:PATH, pairs:PATH or a folder"
    )
    rp.add_argument("--label-map", metavar="FILE", help="the runs' label map, as -p label_map=FILE (see attack -h)")
    rp.add_argument(
        "--backbones",
        "--models",
        nargs="+",
        metavar="MODEL",
        help="the models: study backbones or model specs (default: the study's two backbones)",
    )
    rp.add_argument(
        "--attacks", nargs="+", type=_attack_name, metavar="ATTACK", help=f"the runs' attacks: {ATTACK_HELP}"
    )
    rp.add_argument("--studies", choices=["none", *LEVELS], help="the studies (default: the profile's)")
    rp.add_argument(
        "--cluster",
        default="local",
        help=f"{', '.join(CLUSTERS)}, or a Dask scheduler address such as tcp://host:8786 (default local)",
    )
    rp.set_defaults(func=_report)

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
    tr.set_defaults(func=_train)
    add_evaluate_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .kernels import Stopped, stopping

    args = build_parser().parse_args(argv)
    prefix = f"segattack {args.command}:"
    try:
        with stopping():
            return args.func(args)
    except AttackDiverged as exc:
        print(
            f"{prefix} error: the attack diverged: {exc}. Likely cause: a step size too large for the model's "
            f"logits (alpha, beta, tau, gamma) or non-finite weights; finished shards are kept and the same "
            f"command resumes from them",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else 2
        print(
            f"{prefix} stopped ({'Ctrl-C' if signum == 2 else exc}): every finished shard and result is kept; "
            f"run the same command again to resume",
            file=sys.stderr,
        )
        return 128 + signum
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        _explain(args, f"{prefix} error: {_first_line(exc)}")
        return 2
    except Exception as exc:  # a notebook's, a kernel's or Dask's own failure: still one line (-v: the traceback)
        _explain(args, f"{prefix} error: {type(exc).__name__}: {_first_line(exc)} (-v prints the traceback)")
        return 1


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _explain(args: argparse.Namespace, line: str) -> None:
    """The error's one line, after its traceback when ``-v`` asked for it."""
    if getattr(args, "verbose", False):
        traceback.print_exc()
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
