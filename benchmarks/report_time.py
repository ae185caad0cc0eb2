"""Wall time of the README's report command: warm (environment in place) and cold (a fresh clone).

    .venv/bin/python benchmarks/report_time.py [--profile default] [--cold]

Warm: ``python -m segattack report`` (what ``make report`` runs) into a fresh temporary folder, so
every shard, study cell and notebook is computed; then once more into the same folder, where every
result is already there and only the report is rebuilt. Cold (``--cold``): ``git clone`` of this
checkout's HEAD into a temporary folder and ``make report`` there, the virtual environment's
creation from the pinned requirements included. The attack compute the report contains is
``benchmarks/cluster.py``'s plain loop (``results/cluster.json``); the ratio report / compute is
the target (<= 1.1). Writes ``results/report_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--cold", action="store_true", help="also time make report in a fresh clone")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "report_time.json"))
    args = parser.parse_args()
    result = {"command": "python -m segattack report", "profile": args.profile,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="segattack-report-") as folder:
        command = [sys.executable, "-m", "segattack", "report", "--profile", args.profile, "--out", folder]
        result["warm_no_results_s"] = timed(command)
        if not (Path(folder) / "index.html").is_file():
            raise SystemExit("the report command finished without writing index.html")
        result["all_results_present_s"] = timed(command)
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="segattack-clone-") as folder:
            clone = Path(folder) / "segattack"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            result["cold_make_report_s"] = timed(["make", "report"], clone)
    compute = Path(__file__).parent / "results" / "cluster.json"
    if compute.is_file():
        loop = json.loads(compute.read_text())["median_s"]["loop"]
        result["attack_compute_s"] = loop
        result["warm_over_compute"] = result["warm_no_results_s"] / loop
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
