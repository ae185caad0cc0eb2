"""Provenance: which weights, images and settings produced each run."""

from __future__ import annotations

import pandas as pd

from segattack.study.report.runs import Run


def provenance(runs: list[Run]) -> pd.DataFrame:
    """Which weights, data, hyperparameters, versions and device produced each run, how good the
    model is on the run's own images (against ground truth, where they have it), and how long it took."""
    rows = {}
    for run in runs:
        r, w, c = run.results, run.results.weights, run.results.config
        truth = r.clean_truth
        rows[run.label] = {
            "weights": f"{w.source}: {w.description}",
            "clean mIoU (weights' own)": f"{w.clean_miou:.3f}" if w.clean_miou is not None else "n/a",
            "clean mIoU vs ground truth (these images)": (
                f"{truth.miou:.3f} (pixel acc. {truth.pixel_accuracy:.3f}; one confusion matrix over "
                f"{truth.images} images, resize {truth.resize})"
                if truth and truth.miou is not None
                else "undefined: every ground-truth pixel is ignore (255)"
                if truth
                else "no ground truth"
            ),
            "images": (
                f"{len(r.names)} × {c.images} at {r.image_size} px ({c.resize}), {r.shards} shard(s) of {c.batch}"
            ),
            "input notes": "; ".join(r.notes + [f"skipped {n}" for n in r.skipped]) or "none",
            "hyperparameters": ", ".join(f"{k}={v}" for k, v in r.attack_params.items() if k != "attack"),
            "targets": f"{c.target_scheme} (image {c.target_index})"
            if c.target_scheme == "single"
            else c.target_scheme,
            "seed": c.seed,
            "wall time (s)": f"{r.seconds:.1f} ({r.seconds_per_iteration:.3f} s/iteration)",
            "environment": ", ".join(f"{k} {v}" for k, v in r.environment.items()),
            "input files": "; ".join(f"{f.role} {f.path} (sha256 {f.sha256[:16]})" for f in r.input_files) or "none",
            "parameters hash": r.config_hash,
        }
    return pd.DataFrame.from_dict(rows, orient="index")
