"""What the budget axis's cells cost, and what its warm search costs against one attack.

    .venv/bin/python benchmarks/budget_search.py [--profile default] [--backbones B ...] [--cold]

Runs every budget cell of the profile's studies in this process (``studies.run_cell``, the grid's
own function), one after the other, and records per cell its wall time and forward+backward
passes. For each image a searched attack (PGD) broke, it then runs that attack once more, cold,
at the radius the search found, to convergence (``budget.at_radius``: rounds until the image
breaks): the search's passes over that one attack's passes is the search's cost (the aim: at most
3x). ``--cold`` also runs the cold bisection (``warm=False``) on the same images, for its passes.
Writes ``results/budget_search.json``. Run it with the checkout's code on ``PYTHONPATH``; pointed
at another checkout of the same package layout, the per-cell part times its cells.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from machine import describe

from segattack.study.profiles import study_config
from segattack.study.studies import run_cell, study_cells


def cell_costs(profile: str, backbones: list[str]) -> list[dict[str, Any]]:
    """Every budget cell of the profile's studies: wall seconds, passes, rows."""
    study = study_config(profile)
    assert study is not None, f"profile {profile} has no studies"
    out = []
    for cell in study_cells(study):
        if not cell.startswith("budget/") or cell.split("/")[1] not in backbones:
            continue
        start = time.perf_counter()
        record = run_cell(study, cell)
        seconds = time.perf_counter() - start
        rows = [vars(r) for r in record.budget]
        out.append({"cell": cell, "seconds": seconds, "passes": sum(r["passes"] for r in rows), "rows": rows})
        print(f"{cell}: {seconds:.1f} s, {out[-1]['passes']} passes", flush=True)
    return out


def search_against_one_attack(profile: str, cells: list[dict[str, Any]], cold: bool) -> list[dict[str, Any]]:
    """Per image the targeted PGD cells broke: the warm search's passes (from the cell's row), one
    cold attack's at the radius found (the row's L-inf), and (``cold``) the cold bisection's."""
    from segattack.attacks import ATTACKS
    from segattack.data.classes import IGNORE_INDEX
    from segattack.evaluation.budget import at_radius, smallest_budget
    from segattack.study.numerics import numerics
    from segattack.study.studies import _shard_inputs

    study = study_config(profile)
    assert study is not None
    spec, out = ATTACKS["pgd"], []
    for cell in cells:
        _, backbone, attack, mode, _ = cell["cell"].split("/")
        if attack != "pgd" or mode != "targeted":
            continue
        for row in cell["rows"]:
            with numerics(study.numerics):
                inputs = _shard_inputs(study, backbone, [row["image"]], study.total, "single")
                x = inputs.images
                y = inputs.targets.masked_fill(inputs.targets == inputs.clean, IGNORE_INDEX)
                found: dict[str, Any] = {"backbone": backbone, "image": row["image"], "linf": row["linf"],
                                         "search_passes": row["passes"], "search_seconds": row["seconds"]}  # fmt: skip
                if row["linf"] is not None:

                    def run(
                        radius: float, init: Any, x: Any = x, y: Any = y, b: str = backbone, m: Any = inputs.model
                    ) -> Any:
                        rule = spec.budget_params(radius, study.budget_steps, b)
                        return spec(m, x, y, adv_threshold=study.budget_threshold, **rule)

                    start = time.perf_counter()
                    one = at_radius(run, row["linf"], None, x, study.budget_threshold, study.budget_rounds, True)
                    found |= {"one_attack_passes": one.passes, "one_attack_seconds": time.perf_counter() - start,
                              "one_attack_broken": one.broken}  # fmt: skip
                if cold:
                    bisection = smallest_budget(
                        inputs.model, x, y, "pgd", warm=False, steps=study.budget_steps, rounds=study.budget_rounds,
                        adv_threshold=study.budget_threshold, eps_max=study.budget_eps_max, backbone=backbone,
                    )  # fmt: skip
                    found |= {"cold_linf": float(bisection.linf), "cold_passes": int(bisection.passes)}
            print(found, flush=True)
            out.append(found)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v3_large", "resnet50"])
    parser.add_argument("--cells-only", action="store_true", help="only the per-cell costs (e.g. an older checkout)")
    parser.add_argument("--cold", action="store_true", help="also the cold bisection, for its passes")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "budget_search.json"))
    args = parser.parse_args()
    result: dict[str, Any] = {"profile": args.profile, "machine": describe()}
    result["cells"] = cell_costs(args.profile, args.backbones)
    if not args.cells_only:
        result["search"] = search_against_one_attack(args.profile, result["cells"], args.cold)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
