"""``segattack attack``: one backbone x attack run over a set of images, written to a folder."""

from __future__ import annotations

import argparse

from segattack.cli.common import ATTACK_HELP, DEFAULTS, attack_name, force_option, override
from segattack.data.sets import RESIZES
from segattack.data.targets import TARGET_SOURCES
from segattack.models.backbones import BACKBONES
from segattack.study.config import RunConfig


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    at = sub.add_parser(
        "attack", parents=[common, force_option()], help="attack a set of images and write metrics, images and history"
    )
    _model_and_images(at)
    _run_options(at)
    _attack_keywords(at)
    at.set_defaults(func=run)


def _model_and_images(at: argparse.ArgumentParser) -> None:
    at.add_argument(
        "--backbone",
        "--model",
        required=True,
        metavar="MODEL",
        help=f"a study backbone ({', '.join(BACKBONES)}) or a model spec: torchvision:NAME, "
        f"hf:REPO_OR_DIR, smp:ARCH:ENCODER[:CHECKPOINT], module:PKG.MOD:CALLABLE",
    )
    at.add_argument("--attack", required=True, type=attack_name, metavar="ATTACK", help=ATTACK_HELP)
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


def _run_options(at: argparse.ArgumentParser) -> None:
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


def _attack_keywords(at: argparse.ArgumentParser) -> None:
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
        type=override,
        metavar="KEY=VALUE",
        help="any other keyword of the attack function, e.g. -a targeted=false -a gamma=0.2 -a eps=8/255",
    )


def run(args: argparse.Namespace) -> int:
    """Run the attack the arguments describe and print its summary line."""
    from segattack.engine.store import output_folder
    from segattack.study.runner import run

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
        force=args.force,
    )
    out = output_folder(args.out)
    results, _ = run(cfg, out)
    m = {k: v.mean for k, v in results.summary.items()}

    def shown(key: str, scale: float = 100, unit: str = "%", digits: int = 2) -> str:
        """A summary mean as printed; "n/a" where results.json holds null (no image defines it)."""
        value = m.get(key)
        return "n/a" if value is None else f"{scale * value:.{digits}f}{unit}"

    print(
        f"{args.backbone} {args.attack} ({results.weights.source} weights, {results.image_size} px, "
        f"{len(results.names)} images): IoU to original {shown('iou_original')}, to target "
        f"{shown('iou_target')}, pixel accuracy to original {shown('acc_original')}, "
        f"L2 (0-255) {shown('l2_255', 1, '', 1)}; {results.seconds_per_iteration:.3f} s/iteration -> "
        f"{out / 'results.json'}"
    )
    return 0
