"""Stability: how much a run's numbers move over repeats with other seeds."""

from __future__ import annotations

import typing

import pandas as pd

from segattack.study.report.runs import Run

STABILITY_METRICS = {
    "iou_original": "IoU vs original (%)",
    "acc_original": "pixel acc. vs original (%)",
    "success_changed": "targeted success, changed pixels (%)",
    "l2_255": "L2 (0-255)",
}


class Spread(typing.NamedTuple):
    """How far a reading moved under numerical perturbations: the largest change of its mean and of any
    image, beside its 95% statistical interval; flagged when the first exceeds the second."""

    mean: float
    image: float
    interval: float | None

    @property
    def flagged(self) -> bool:
        return self.interval is not None and self.mean > self.interval


def spreads(run: Run, repeats: list[Run]) -> dict[str, Spread]:
    """Per reading, how far ``repeats`` (the run's first images under other numerics) moved it from the
    run's own values for the same images."""
    out = {}
    for metric in STABILITY_METRICS:
        means: list[float] = []
        images: list[float] = []
        for repeat in repeats:
            ours, theirs = run.results.per_image[metric], repeat.results.per_image[metric]
            pairs = [
                (a, b) for i in repeat.results.attacked if (a := ours[i]) is not None and (b := theirs[i]) is not None
            ]
            if pairs:
                images += [abs(a - b) for a, b in pairs]
                means.append(abs(sum(a for a, _ in pairs) - sum(b for _, b in pairs)) / len(pairs))
        if means:
            out[metric] = Spread(max(means), max(images), run.results.summary[metric].ci95)
    return out


def stability_table(runs: list[Run], repeats: dict[str, list[Run]]) -> pd.DataFrame:
    """Per run and reading: the numerical spread (largest change of the mean, of any image) beside the
    95% interval over images, and a flag where the spread exceeds the interval."""
    rows = {}
    for run in runs:
        found = spreads(run, repeats.get(run.name, []))
        if not found:
            continue
        row = {}
        for metric, spread in found.items():
            scale, name = (1.0 if metric.startswith("l2") else 100.0), STABILITY_METRICS[metric]
            row[(name, "spread of mean")] = f"{spread.mean * scale:,.2f}"
            row[(name, "largest image change")] = f"{spread.image * scale:,.2f}"
            row[(name, "95% interval")] = f"± {spread.interval * scale:,.2f}" if spread.interval is not None else "–"
            row[(name, "flag")] = "UNSTABLE" if spread.flagged else "stable"
        rows[run.label] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if rows:
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def _stability_lines(runs: list[Run], repeats: dict[str, list[Run]]) -> tuple[list[str], set[tuple[str, str]]]:
    """The discussion's opening on numerical stability, and the (run, reading) pairs that are unstable."""
    unstable: set[tuple[str, str]] = set()
    stable: list[str] = []
    flagged: list[str] = []
    for run in runs:
        for metric, spread in spreads(run, repeats.get(run.name, [])).items():
            (flagged if spread.flagged else stable).append(f"{run.label} {STABILITY_METRICS[metric]}")
            if spread.flagged:
                unstable.add((run.name, metric))
    if not stable and not flagged:
        return [], unstable
    variants = sorted({r.name.rsplit("-", 1)[1] for rs in repeats.values() for r in rs})
    lines = [
        f"- **Numerical stability first** (each run repeated on its first images under: {', '.join(variants)}; "
        f"the stability table gives the spreads): stable, the spread of the mean within the 95% interval: "
        f"{'; '.join(stable) or 'none'}. **Numerically unstable**, their spread larger than their interval, so "
        f"a conclusion resting on them is not established here: {'; '.join(flagged) or 'none'}."
    ]
    return lines, unstable
