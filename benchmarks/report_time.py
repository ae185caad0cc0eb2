"""Wall time of the README's report command, warm: environment and weights in place, no results.

    .venv/bin/python benchmarks/report_time.py [--profile default]

Runs ``python -m segattack report`` (what ``make report`` runs) into a fresh temporary folder,
so every run, study and notebook is computed, then once more into the same folder, where every
result is already there and only the report is rebuilt. Target: the first within 10 minutes on
2 cores. Writes ``results/report_time.json``.
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


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "report_time.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segattack-report-") as folder:
        command = [sys.executable, "-m", "segattack", "report", "--profile", args.profile, "--out", folder]
        cold = timed(command)
        if not (Path(folder) / "index.html").is_file():
            raise SystemExit("the report command finished without writing index.html")
        again = timed(command)
    result = {"command": "python -m segattack report", "profile": args.profile,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "warm_no_results_s": cold, "all_results_present_s": again, "target_s": 600}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
