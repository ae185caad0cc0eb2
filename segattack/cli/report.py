"""``segattack report``: a profile's runs and studies on the grid, their notebooks, the HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from segattack.cli.common import ATTACK_HELP, attack_name, force_option, override
from segattack.engine.cluster import CLUSTERS
from segattack.study.studies import LEVELS


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    rp = sub.add_parser(
        "report",
        parents=[common, force_option()],
        help="run the grid on Dask, its notebooks with papermill, and render the report",
    )
    rp.add_argument("--profile", default="default", help="default (embedded, CPU), paper (torchvision, 520 px), tiny")
    rp.add_argument("--out", default="reports", help="output folder (default reports/)")
    rp.add_argument(
        "-p",
        "--param",
        action="append",
        type=override,
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
        "--attacks", nargs="+", type=attack_name, metavar="ATTACK", help=f"the runs' attacks: {ATTACK_HELP}"
    )
    rp.add_argument("--studies", choices=["none", *LEVELS], help="the studies (default: the profile's)")
    rp.add_argument(
        "--cluster",
        default="local",
        help=f"{', '.join(CLUSTERS)}, or a Dask scheduler address such as tcp://host:8786 (default local)",
    )
    rp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the profile's grid, build the report, and print where it is (1 when a job failed)."""
    from segattack.engine.jobs import TaskState
    from segattack.engine.render import build_report
    from segattack.study.profiles import BACKBONE_ORDER, run_profile

    overrides = dict(args.param or [])
    if args.images:
        overrides["images"] = args.images
    if args.label_map:
        overrides["label_map"] = args.label_map
    if args.force:
        overrides["force"] = True
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
    runs = Path(args.out).expanduser() / "runs"
    earlier = (
        sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in states)
        if runs.is_dir()
        else []
    )
    if earlier:
        print(
            f"the report also shows {len(earlier)} earlier run(s) in {runs}: {', '.join(earlier)} (every folder in "
            f"runs/ joins Table 1; delete one to leave it out)"
        )
    path = build_report(args.out, args.profile)
    print(f"report: {path}")
    return 1 if TaskState.FAILED in states.values() else 0
