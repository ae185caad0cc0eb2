"""Wall time of the README's report command, with the environment in place and from a fresh clone.

    .venv/bin/python benchmarks/report_time.py [--profile default] [--cold]

Warm: ``python -m segattack report`` (what ``make report`` runs) into a fresh temporary folder, so
every shard, study cell and notebook is computed; then once more into the same folder, where every
result is already there and only the report is rebuilt. Cold (``--cold``, instead): ``git clone``
of this checkout's HEAD into a temporary folder, then there ``make venv`` (the environment from the
pinned requirements), ``make report`` (the warm measurement's first number) and ``make report``
again (its second). The attack compute the report contains is ``benchmarks/cluster.py``'s plain
loop (``results/cluster.json``); the ratio report / compute is the target (<= 1.1). Writes
``results/report_time.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def check(folder: Path) -> None:
    if not (folder / "index.html").is_file():
        raise SystemExit(f"the report command finished without writing {folder / 'index.html'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--cold", action="store_true", help="time make venv and make report in a fresh clone")
    parser.add_argument("--keep-clone", help="clone into this new folder and keep it (default: a temporary one)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "report_time.json"))
    args = parser.parse_args()
    result = {
        "command": "python -m segattack report",
        "profile": args.profile,
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="segattack-clone-") as folder:
            clone = Path(args.keep_clone or Path(folder) / "segattack")
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            result["cold_make_venv_s"] = timed(["make", "venv"], clone)
            result["no_results_s"] = timed(["make", "report"], clone)
            check(clone / "reports")
            result["all_results_present_s"] = timed(["make", "report"], clone)
    else:
        with tempfile.TemporaryDirectory(prefix="segattack-report-") as folder:
            command = [sys.executable, "-m", "segattack", "report", "--profile", args.profile, "--out", folder]
            result["no_results_s"] = timed(command)
            check(Path(folder))
            result["all_results_present_s"] = timed(command)
    compute = Path(__file__).parent / "results" / "cluster.json"
    if compute.is_file():
        loop = json.loads(compute.read_text())["median_s"]["loop"]
        result["attack_compute_s"] = loop
        result["report_over_compute"] = result["no_results_s"] / loop
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
