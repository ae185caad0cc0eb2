"""The report's content from saved run results: Table 1 beside the paper's, provenance, discussion.

Everything here reads ``results.json`` / ``tensors.pt`` files written by :func:`runner.save_run`,
never notebook outputs, so the report can be rebuilt from results alone.
"""

from __future__ import annotations

import html
import inspect
import json
import math
import typing
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .attacks import ATTACKS
from .budget import SEARCH_STEPS, median_budget, robustness_curve
from .metrics import IMAGENET_STD
from .models import UNVERIFIED_SOURCE
from .paths import data_dir
from .records import BudgetRow, Pooled, RecordError, Results, SavedImages, Score, Stat, StudiesResults
from .setting import in_paper_setting, other_setting_lines
from .studies import PAPER_TARGET

BACKBONE_LABEL = {"mobilenet_v3_large": "MobileNet", "resnet50": "ResNet"}


@dataclass
class Run:
    """One finished run: its results and the folder they live in."""

    name: str
    path: Path
    results: Results

    @property
    def backbone(self) -> str:
        return self.results.config.backbone

    @property
    def attack(self) -> str:
        return self.results.config.attack

    @property
    def label(self) -> str:
        return f"{BACKBONE_LABEL.get(self.backbone, self.backbone)} {attack_label(self.attack)}"

    def tensors(self) -> SavedImages:
        return SavedImages.read(self.path / "tensors.pt")

    def mean(self, metric: str) -> float:
        value = self.results.mean(metric)
        return math.nan if value is None else value


def attack_label(name: str) -> str:
    """The report's name for an attack (its registered label; the name itself if it is not registered)."""
    return ATTACKS[name].label if name in ATTACKS else name


class Failure(typing.NamedTuple):
    """A run that failed or did not finish: why, and the notebook that shows it."""

    run: str
    error: str
    notebook: str
    kept: str = ""


def load_runs(runs_dir: str | Path) -> tuple[list[Run], list[Failure]]:
    """Finished runs (in the paper's Table 1 order first) and failed ones.

    A run whose latest attempt failed but whose earlier results are complete is listed in both:
    its earlier results stay in the tables until a successor is complete. A folder whose results
    cannot be read is listed as failed with the reason, and the report goes on."""
    runs, failed = [], []
    folders = (
        sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
        if Path(runs_dir).is_dir()
        else []
    )  # hidden: staging and replaced folders mid-swap
    for folder in folders:
        results, failure = folder / "results.json", folder / "failed.json"
        notebook = str(folder / "attack.ipynb") if (folder / "attack.ipynb").is_file() else ""  # only one that is there
        finished = False
        if results.is_file():
            try:
                runs.append(Run(folder.name, folder, Results.read(results)))
                finished = True
            except (RecordError, ValueError, TypeError, KeyError) as exc:
                failed.append(Failure(folder.name, f"unreadable results: {exc}", notebook))
        if failure.is_file():
            try:
                error = str(json.loads(failure.read_text())["error"])
            except (ValueError, KeyError, TypeError):
                error = "the run failed (its failed.json is unreadable)"
            failed.append(Failure(folder.name, error, notebook, "earlier results shown" if finished else ""))
        elif not results.is_file():
            failed.append(Failure(folder.name, "interrupted: no results were written", notebook))
    order = {key: i for i, key in enumerate(paper_table().index)}
    runs.sort(key=lambda r: (order.get((r.backbone, r.attack), len(order)), r.name))
    return runs, failed


def paper_table() -> pd.DataFrame:
    """The paper's Table 1 (shipped copy in ``data/paper/table1.csv``)."""
    return pd.read_csv(data_dir() / "paper" / "table1.csv").set_index(["backbone", "attack"])


def _fmt(summary: Stat, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± half-width' (the half-width left out where undefined: one image)."""
    if summary.mean is None:
        return "–"
    ci = f" ± {summary.ci95 * scale:,.{digits}f}" if summary.ci95 is not None else ""
    return f"{summary.mean * scale:,.{digits}f}{ci}"


def _fmt_pooled(score: Score, scale: float = 100.0, digits: int = 2) -> str:
    """'value [low, high]' for a pooled score and its bootstrap interval."""
    if score.value is None or not math.isfinite(score.value):
        return "–"
    ci = score.ci95
    return f"{score.value * scale:.{digits}f}" + (
        f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]" if ci else ""
    )


def reading(run: Run) -> str:
    """The readings behind a run's row: the attack's iterations and the choices that move Table 1."""
    r = run.results
    p, n = r.attack_params, len(r.attacked)
    what = ATTACKS[run.attack].describe(p) if run.attack in ATTACKS else ""
    excluded = len(r.names) - n
    return f"{p['steps']} it.; {what}; {n} images" + (" (target image left out)" if excluded else "")


def _left_out(run: Run) -> str:
    """' (k of n images)' when some attacked images had nothing to change (their target was their own
    prediction), so the changed-pixel success averages over fewer images; else ''."""
    defined, attacked = run.results.summary["success_changed"].images, len(run.results.attacked)
    return f" ({defined} of {attacked} images: the others had nothing to change)" if defined != attacked else ""


def table1(runs: list[Run]) -> pd.DataFrame:
    """Table 1, ours beside the paper's, over the attacked images (the target image left out).

    Per image: mean ± 95% interval half-width over images; [5]: one confusion matrix pooled over
    the images (IoU over the classes present in the reference, accuracy over every pixel), with
    a 95% bootstrap interval over images. Targeted success over the pixels whose target differs from
    the clean prediction (pixels already at the target count for nothing), and the share of such pixels."""
    paper = paper_table()
    rows = {}
    for run in runs:
        s, pooled = run.results.summary, run.results.pooled["attacked"]
        key = (run.backbone, run.attack)
        p = paper.loc[key] if key in paper.index and in_paper_setting(run.results.config) else None
        rows[run.label] = {
            ("IoU (%)", "paper"): f"{p['iou_percent']:.2f}" if p is not None else "–",
            ("IoU (%)", "vs original, per image"): _fmt(s["iou_original"], 100),
            ("IoU (%)", "vs original, [5] pooled"): _fmt_pooled(pooled["original"].iou),
            ("IoU (%)", "vs target, per image"): _fmt(s["iou_target"], 100),
            ("Pixel accuracy (%)", "paper"): f"{p['pixel_accuracy_percent']:.2f}" if p is not None else "–",
            ("Pixel accuracy (%)", "vs original, per image"): _fmt(s["acc_original"], 100),
            ("Pixel accuracy (%)", "vs original, [5] pooled"): _fmt_pooled(pooled["original"].acc),
            ("Pixel accuracy (%)", "vs target, per image"): _fmt(s["acc_target"], 100),
            ("Targeted success (%)", "changed pixels"): _fmt(s["success_changed"], 100) + _left_out(run),
            ("Targeted success (%)", "share to change"): _fmt(s["changed_share"], 100),
            ("Perturbation L2", "paper"): f"{p['perturbation_l2']:,.2f}" if p is not None else "–",
            ("Perturbation L2", "ours, 0-255"): _fmt(s["l2_255"], 1, 1),
            ("Perturbation L2", "ours, [0,1]"): _fmt(s["l2_unit"], 1, 3),
            ("Perturbation L2", "ours, normalised"): _fmt(s["l2_normalized"], 1, 1),
            ("Run", "reading"): reading(run),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if rows:
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


READING_METRICS = (
    "iou_original",
    "iou_all_original",
    "acc_original",
    "iou_target",
    "iou_all_target",
    "acc_target",
    "iou_truth",
    "acc_truth",
    "l2_unit",
    "l2_255",
    "l2_normalized",
    "linf_unit",
    "clean_iou_truth",
)


def readings_table(runs: list[Run]) -> pd.DataFrame:
    """Every reading, one row per run and image set (attacked images; all images, the target
    image included): per-image means ± interval (fractions) and [5]'s pooled scores."""
    rows = {}
    for run in runs:
        for label, scope, summary in (
            ("attacked", "attacked", run.results.summary),
            ("all images", "all", run.results.summary_all),
        ):
            row = {m: _fmt(summary[m], 1, 4) for m in READING_METRICS if m in summary}
            scores: Pooled
            for ref, scores in run.results.pooled[scope].items():
                row[f"[5] iou_{ref}"] = _fmt_pooled(scores.iou, 1, 4)
                row[f"[5] acc_{ref}"] = _fmt_pooled(scores.acc, 1, 4)
            rows[(run.label, label)] = row
    return pd.DataFrame.from_dict(rows, orient="index")


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
            "parameters hash": r.config_hash,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def saturated_pgd_l2(size: int, eps: float = 0.1) -> float:
    """L2 (0-255 units) of a perturbation at +-eps in ImageNet-normalised space on every pixel."""
    return 255 * eps * math.sqrt(size * size * sum(s * s for s in IMAGENET_STD))


def max_l2(size: int) -> float:
    """The largest L2 (0-255 units) any two [0,1] RGB images of ``size`` px can differ by."""
    return 255 * math.sqrt(3 * size * size)


PAPER_SIZE = 520  # the paper attacks torchvision's DeepLabV3 at its 520 px evaluation size
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


def load_repeats(stability_dir: str | Path) -> dict[str, list[Run]]:
    """The stability repeats of each run (folder ``BACKBONE-ATTACK-VARIANT``), by run name."""
    repeats: dict[str, list[Run]] = {}
    for run in load_runs(stability_dir)[0]:
        repeats.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return repeats


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


def _paper_claims(runs: list[Run], unstable: Collection[tuple[str, str]] = ()) -> list[str]:
    """Per backbone, whether the orderings of the paper's Table 1 (data/paper/table1.csv) hold here;
    a claim resting on a numerically unstable reading says so."""
    paper, lines = paper_table(), []

    def verdict(holds: bool, metric: str, *compared: Run) -> str:
        shaky = [r.label for r in compared if (r.name, metric) in unstable]
        return ("holds" if holds else "does not hold") + (
            f" (not established: {', '.join(shaky)} numerically unstable in this reading)" if shaky else ""
        )

    by = {(r.backbone, r.attack): r for r in runs}
    for backbone in dict.fromkeys(b for b, _ in paper.index):
        rows = paper.loc[backbone].sort_values("iou_percent")
        ours = [(a, by[(backbone, a)]) for a in rows.index if (backbone, a) in by]
        if len(ours) < 2:
            continue
        (strong, s), (weak, w) = ours[0], ours[-1]
        name = BACKBONE_LABEL.get(backbone, backbone)
        ls, lw = attack_label(strong), attack_label(weak)
        holds = s.mean("iou_original") < w.mean("iou_original")
        lines.append(
            f"- **{name}: {ls} lowers IoU to the original prediction more than {lw}** — "
            f"{verdict(holds, 'iou_original', s, w)} here ({ls} {100 * s.mean('iou_original'):.1f}% vs "
            f"{lw} {100 * w.mean('iou_original'):.1f}%; paper {rows.loc[strong, 'iou_percent']:.2f}% vs "
            f"{rows.loc[weak, 'iou_percent']:.2f}%)."
        )
        big, small = sorted(ours, key=lambda item: -rows.loc[item[0], "perturbation_l2"])[:2]
        holds = big[1].mean("l2_255") > small[1].mean("l2_255")
        lines.append(
            f"- **{name}: {attack_label(big[0])}'s perturbation L2 is larger than "
            f"{attack_label(small[0])}'s** (paper {rows.loc[big[0], 'perturbation_l2']:,.2f} vs "
            f"{rows.loc[small[0], 'perturbation_l2']:,.2f}) — {verdict(holds, 'l2_255', big[1], small[1])} "
            f"here ({big[1].mean('l2_255'):,.1f} vs {small[1].mean('l2_255'):,.1f} in 0-255 units)."
        )
        holds = s.mean("success_changed") > w.mean("success_changed")
        lines.append(
            f"- **{name}: targeted success** over the pixels the attack had to change: {ls} "
            f"{100 * s.mean('success_changed'):.1f}%, {lw} {100 * w.mean('success_changed'):.1f}% (over all "
            f"pixels, counting those already at the target: {100 * s.mean('acc_target'):.1f}% and "
            f"{100 * w.mean('acc_target'):.1f}%) — the paper reports no such number; its conclusion that its "
            f"stronger attack ({ls}) reaches the target more consistently "
            f"{verdict(holds, 'success_changed', s, w)} here."
        )
    accs = [100 * r.mean("acc_original") for r in runs]
    if accs:
        spread = max(accs) - min(accs)
        low, high = paper["pixel_accuracy_percent"].min(), paper["pixel_accuracy_percent"].max()
        lines.append(
            f"- **Pixel accuracy is similar across runs** (paper: {low:.1f}-{high:.1f}%) — here it spans "
            f"{min(accs):.1f}-{max(accs):.1f}% ({spread:.1f} points): "
            f"{'holds' if spread <= 10 else 'does not hold'} at a 10-point tolerance."
        )
    return lines


def _l2_space(runs: list[Run]) -> list[str]:
    """Which pixel space the paper's L2 is in, from the bounds its numbers must obey."""
    paper, lines = paper_table(), []
    saturated = saturated_pgd_l2(PAPER_SIZE)
    near = [f"{v:,.2f}" for v in paper["perturbation_l2"] if abs(v / saturated - 1) < 0.05]
    normalised = [r for r in runs if r.results.attack_params.get("space") == "imagenet-normalised"]
    reached = "; ".join(
        f"{r.label} reaches {r.mean('l2_255'):,.0f} of at most "
        f"{saturated_pgd_l2(r.results.image_size, r.results.attack_params['eps']):,.0f} at "
        f"{r.results.image_size} px"
        for r in normalised
    )
    if near:
        lines.append(
            f"- **Which space is the paper's L2 in?** A perturbation at ±0.1 in normalised space on every pixel has "
            f"L2 = {saturated:,.0f} in 0-255 units at {PAPER_SIZE} px, which matches the paper's {' and '.join(near)}: "
            f"the paper measured L2 per image in 0-255 pixel units at about {PAPER_SIZE} px."
            + (f" Here: {reached}." if reached else "")
        )
    beyond = paper[paper["perturbation_l2"] > max_l2(PAPER_SIZE)]
    if len(beyond):
        bounds = ", ".join(sorted({f"{max_l2(r.results.image_size):,.0f} at {r.results.image_size} px" for r in runs}))
        which = ", ".join(
            f"{BACKBONE_LABEL.get(b, b)} {attack_label(a)} {v:,.0f}" for (b, a), v in beyond["perturbation_l2"].items()
        )
        lines.append(
            f"- **Some of the paper's L2 cannot come from [0,1] images.** No two {PAPER_SIZE} px RGB images in [0,1] "
            f"differ by more than {max_l2(PAPER_SIZE):,.0f} (0-255 units); the paper reports {which}. Those images "
            f"were therefore not clipped to the valid range (or L2 was taken elsewhere); ours are clipped, so our "
            f"L2 is bounded by {bounds}."
        )
    return lines


def _convergence(run: Run) -> str | None:
    """Whether targeted success still moved over the last tenth of the run's iterations."""
    success = (
        [v for v in run.results.history["success"].mean if v is not None] if "success" in run.results.history else []
    )
    n = len(success)
    if n < 10:
        return None
    tail = n // 10
    change = 100 * (success[-1] - success[-1 - tail])
    return (
        f"- **{run.label}: did it converge?** Targeted success {100 * success[0]:.1f}% at iteration 1, "
        f"{100 * success[-1]:.1f}% at iteration {n}; over the last {tail} iterations it moved {change:+.1f} "
        f"points: "
        + ("converged at this budget." if abs(change) < 1 else "still moving: more iterations would change its row.")
    )


def discussion(runs: list[Run], repeats: dict[str, list[Run]] | None = None) -> str:
    """Markdown: how stable the readings are, which of the paper's conclusions hold here (and which
    rest on unstable readings), and where and why the numbers differ."""
    lines, unstable = _stability_lines(runs, repeats or {})
    lines += _paper_claims([r for r in runs if in_paper_setting(r.results.config)], unstable)
    lines += other_setting_lines(r.results for r in runs)
    if runs:
        lines += _l2_space(runs)
    for attack in dict.fromkeys(r.attack for r in runs):
        notes = ATTACKS[attack].notes if attack in ATTACKS else None
        if notes is None:
            continue
        for run in (r for r in runs if r.attack == attack):
            note = notes(run.results.attack_params, run.results.image_size, len(run.results.names))
            if note:
                lines.append(f"- **{run.label}:** {note}")
    if runs:
        lines.append(
            "- **Which reading are the paper's IoU and pixel accuracy?** Its PGD code (reference [5]) calls "
            "`IoUAcc(y, pred_adv)`: one confusion matrix pooled over the batch of 4, IoU averaged over the classes "
            "present in the *reference* mask, accuracy over every pixel (void borders counting as misses), the "
            "reference being the original images' masks (ground truth in [5]). The paper's text agrees (\"how close "
            'the adversarial mask was to the original mask"), and its PGD IoU of about 15% rules out the target as '
            'reference, since it says PGD reaches the target "very consistently". So the paper\'s numbers most '
            "likely are the **vs original, [5] pooled** columns (with ground truth as reference where a data set has "
            "it: the every-reading table's `[5] iou_truth`). Per-image means over the classes in either mask are "
            "lower whenever the attack adds classes, so the two readings differ by design. Table 1 averages over the "
            "attacked images: under the paper's target scheme the target image attacks its own prediction, and the "
            "every-reading table gives both sets."
        )
    lines += [line for line in map(_convergence, runs) if line]
    unverified = [r.label for r in runs if r.results.weights.source == UNVERIFIED_SOURCE]
    if unverified:
        lines.append(
            f"- **Unverified weights:** {', '.join(unverified)} ran on a file under torchvision's weights name whose "
            f"SHA-256 does not match the prefix in that name: it is not the published network, so no published "
            f"figure is quoted for it and its numbers say nothing about the paper's weights."
        )
    if any(r.results.weights.source == "embedded" for r in runs):
        lines.append(
            "- **Why our numbers differ from the paper's:** these runs attack segattack's *embedded* models, trained "
            "from scratch on synthetic scenes, not the paper's COCO-trained torchvision weights, on held-out scenes "
            "at the models' training size rather than photos at 520 px; the attack hyperparameters are the paper's, "
            "but a step size like ASMA's beta, tau or PGD's raw-gradient alpha interacts with image size and logit "
            "scale, so absolute values are not comparable — the direction of each comparison is. The `paper` "
            "profile runs the same notebooks on the real weights."
        )
    return "\n".join(lines)


def escape(text: Any) -> str:
    """HTML-escape user-supplied text (run names, parameters) before it enters the report."""
    return html.escape(str(text))


def load_studies(studies_dir: str | Path) -> StudiesResults | str | None:
    """The studies' saved results; None when there are none, the reason when they cannot be read."""
    path = Path(studies_dir) / "studies.json"
    if not path.is_file():
        return None
    try:
        return StudiesResults.read(path)
    except RecordError as exc:
        return str(exc)


def _mean_ci(frame: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """'mean ± 95% half-width' strings per group (normal interval over rows)."""
    grouped = frame.groupby(by)[columns]
    mean, half = grouped.mean(), 1.96 * grouped.sem().fillna(0)
    return mean.round(3).astype(str) + " ± " + half.round(3).astype(str)


SUCCESS_COLUMNS = {
    "success_changed": "success (changed pixels)",
    "changed_share": "share of pixels to change",
    "success": "success (all pixels)",
}


def comparison_table(studies: StudiesResults) -> pd.DataFrame:
    """Per backbone x attack: targeted success over the pixels the attack has work to do on (then the
    share of such pixels, then the paper's reading over all pixels), IoU/accuracy to target and
    original, norms, iterations and wall time (mean ± 95% interval over images; an image with
    nothing to change is left out of the changed-pixel mean)."""
    frame = pd.DataFrame(studies.comparison)
    table = _mean_ci(
        frame,
        ["backbone", "attack"],
        [*SUCCESS_COLUMNS, "iou_target", "iou_original", "acc_original", "l2", "linf", "iterations"],
    ).rename(columns=SUCCESS_COLUMNS)
    table["seconds"] = frame.groupby(["backbone", "attack"])["seconds"].first().round(1)
    return table


def transfer_table(studies: StudiesResults) -> pd.DataFrame:
    """Targeted success on the model that did *not* craft the images, over the pixels whose target
    differs from that model's clean prediction (rows: crafted on -> evaluated on; mean ± 95% interval
    over images; 'none (clean)', the unattacked images, is 0 by construction), then over all pixels."""
    frame = pd.DataFrame(studies.transfer)
    if frame.empty:  # one backbone: nothing to transfer to
        return pd.DataFrame()
    frame["pair"] = frame["source"] + " → " + frame["evaluated_on"]
    tables = {
        label: _mean_ci(frame, ["pair", "attack"], [column])[column].unstack("attack")
        for column, label in SUCCESS_COLUMNS.items()
        if column != "changed_share"
    }
    return pd.concat(tables, axis=1)


def difficulty_table(studies: StudiesResults) -> pd.DataFrame:
    """Per target class and attack: mean fraction of the class's pixels imposed over the images
    that asked for it (± 95% interval), hardest classes first."""
    frame = pd.DataFrame(studies.difficulty)
    table = _mean_ci(frame, ["class", "attack"], ["imposed"])["imposed"].unstack("attack")
    order = frame.groupby("class")["imposed"].mean().sort_values().index
    return table.loc[order]


def iteration_frame(studies: StudiesResults) -> pd.DataFrame:
    """Long table of targeted success per iteration (attack, backbone, iteration, image)."""
    rows = []
    for backbone, curves in studies.iteration_curves.items():
        for attack, history in curves.items():
            for it, values in enumerate(history):
                rows += [{"backbone": backbone, "attack": attack, "iteration": it + 1, "success": v} for v in values]
    return pd.DataFrame(rows)


def budget_rules(studies: StudiesResults) -> str:
    """Each compared attack's keywords at the studies' budget (from its registered budget rule)."""
    p = studies.params
    parts = []
    for attack in dict.fromkeys(r["attack"] for r in studies.comparison):
        if attack in ATTACKS and studies.weights:
            backbone = next(iter(studies.weights))
            rule = ATTACKS[attack].budget_params(p["eps"], p["steps"], backbone)
            parts.append(
                f"{attack_label(attack)} "
                + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rule.items() if k != "steps"
                )
            )
    return "; ".join(parts)


class PaperFigure(typing.NamedTuple):
    """One of the paper's figures: its number, the run it shows, ``images`` or ``loss``, its caption."""

    number: int
    backbone: str
    attack: str
    kind: str
    caption: str


def paper_figures() -> list[PaperFigure]:
    """The paper's figures 1-6 (``data/paper/figures.csv``)."""
    frame = pd.read_csv(data_dir() / "paper" / "figures.csv")
    return [PaperFigure(int(r.number), r.backbone, r.attack, r.kind, r.caption) for r in frame.itertuples()]


# name, scale, unit, digits
BUDGET_NORMS = {"linf": ("L-inf", 255.0, "/255", 2), "l2": ("L2", 1.0, "[0,1] pixels", 3)}


def budget_frame(studies: StudiesResults) -> pd.DataFrame:
    """The budget axis's rows (one per backbone, attack, mode and image), budgets as floats: inf where
    the image was not broken within the search or the run."""
    frame = pd.DataFrame([asdict(r) for r in studies.budget], columns=[f.name for f in fields(BudgetRow)])
    for norm in BUDGET_NORMS:
        frame[norm] = frame[norm].astype(float).fillna(math.inf)
    return frame


def _weights(studies: StudiesResults, backbone: str) -> str:
    return studies.weights[backbone].label() if backbone in studies.weights else f"{backbone} / weights not recorded"


def budget_curves(studies: StudiesResults, points: int = 81) -> pd.DataFrame:
    """Long table of the share of images broken at each budget (``robustness_curve``), per norm,
    backbone, mode and attack, on a grid from 0 to just past the largest finite budget of the norm
    (L-inf in /255, L2 in [0,1] pixels); ``weights`` names the weights behind each curve."""
    frame, rows = budget_frame(studies), []
    for norm, (name, scale, unit, _) in BUDGET_NORMS.items():
        finite = frame[norm][np.isfinite(frame[norm])] * scale
        grid = np.linspace(0.0, 1.05 * float(finite.max()) if len(finite) else 1.0, points)
        for (backbone, mode, attack), group in frame.groupby(["backbone", "mode", "attack"], sort=False):
            shares = robustness_curve(group[norm].to_numpy() * scale, grid)
            rows += [
                {
                    "norm": f"{name} ({unit})",
                    "backbone": backbone,
                    "weights": _weights(studies, backbone),
                    "mode": mode,
                    "attack": attack_label(attack),
                    "budget": float(g),
                    "broken": float(v),
                }
                for g, v in zip(grid, shares)
            ]
    return pd.DataFrame(rows)


def _median(values: np.ndarray, scale: float, digits: int) -> str:
    """'median [95% bootstrap interval]' of the budgets, 'not reached' where under half are broken."""

    def show(v: float) -> str:
        return f"{v * scale:.{digits}f}" if math.isfinite(v) else "∞"

    median, low, high = median_budget(values)
    return f"{show(median)} [{show(low)}, {show(high)}]" if math.isfinite(median) else f"not reached [{show(low)}, ∞]"


def budget_table(studies: StudiesResults) -> pd.DataFrame:
    """Per backbone (its weights named), mode and attack: how many images broke, the median L-inf
    and L2 budget with its 95% bootstrap interval over images, the forward+backward passes and wall
    time per image and how the budget was found (searched, minimal-norm, measured after the fact)."""
    frame, rows = budget_frame(studies), {}
    for (backbone, mode, attack), group in frame.groupby(["backbone", "mode", "attack"], sort=False):
        rows[(_weights(studies, backbone), mode, attack_label(attack))] = {
            "broken": f"{int(np.isfinite(group['linf']).sum())} of {len(group)}",
            "median L-inf (/255) [95%]": _median(group["linf"].to_numpy(), 255.0, 2),
            "median L2 ([0,1]) [95%]": _median(group["l2"].to_numpy(), 1.0, 3),
            "passes per image": f"{group['passes'].mean():.0f}",
            "seconds per image": f"{group['seconds'].mean():.2f}",
            "found by": group["how"].iloc[0],
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if rows:
        frame.index = pd.MultiIndex.from_tuples(frame.index, names=["weights", "mode", "attack"])
        frame = frame.sort_index(level=["weights", "mode"], sort_remaining=False)
    return frame


def budget_caption(studies: StudiesResults) -> str:
    """Markdown: what the budget axis measured, on how many images, with which settings and weights."""
    p, frame = studies.params, budget_frame(studies)
    return (
        f"Per image, the smallest perturbation at which each attack breaks it: "
        f"{p['budget_threshold']:.0%} of the pixels whose target differs from the clean prediction at the "
        f"target (targeted, the paper's scheme: every image toward image {PAPER_TARGET}'s prediction, that "
        f"image left out) or off the clean prediction (untargeted), on {frame['image'].nunique()} "
        f"{escape(p['images'])} image(s) at {p['size']} px. Budget attacks: a {SEARCH_STEPS}-step bisection of "
        f"the L-inf radius up to {p['budget_eps_max'] * 255:.0f}/255 with {p['budget_steps']} iterations per "
        f"radius, each image on its own bracket, the norms those of the perturbation found at the smallest "
        f"radius that broke it (DAG, unbounded, may exceed it); minimal-norm attacks (L-inf): their returned "
        f"norm; ASMA, whose budget is no input: its final norms, measured after the fact; these run once, as "
        f"many iterations as a whole search. An image not broken has no budget (∞). Weights: "
        + "; ".join(escape(_weights(studies, b)) for b in dict.fromkeys(frame["backbone"]))
        + "."
    )


def _smaller(frame: pd.DataFrame, attacks: tuple[str, str], norm: str) -> tuple[str | None, str]:
    """Which of two attacks has the smaller median ``norm`` budget in ``frame`` (None: neither), and
    the numbers."""
    name, scale, unit, digits = BUDGET_NORMS[norm]
    values = [frame.loc[frame["attack"] == a, norm].to_numpy() for a in attacks]
    (m0, l0, h0), (m1, l1, h1) = (median_budget(v) for v in values)
    labels = [attack_label(a) for a in attacks]
    numbers = f"{name} " + " vs ".join(f"{n} {_median(v, scale, digits)}" for n, v in zip(labels, values)) + f" {unit}"
    if m0 == m1:
        return None, numbers
    apart = h0 < l1 if m0 < m1 else h1 < l0
    return labels[0] if m0 < m1 else labels[1], numbers + ("" if apart else ", the intervals overlapping")


def budget_answer(studies: StudiesResults) -> str:
    """Markdown, one sentence per backbone and mode: which of the paper's two attacks (ASMA and PGD)
    needs the smaller perturbation to break an image (median budget over the images, L2 first as the
    paper compares L2, then L-inf), or why the budget axis cannot say."""
    frame, lines = budget_frame(studies), []
    attacks = typing.cast(tuple[str, str], ATTACKS.in_paper())
    both = " and ".join(attack_label(a) for a in attacks)
    for backbone in dict.fromkeys(frame["backbone"]):
        name = BACKBONE_LABEL.get(backbone, backbone)
        for mode in dict.fromkeys(frame["mode"]):
            rows = frame[(frame["backbone"] == backbone) & (frame["mode"] == mode)]
            missing = [a for a in attacks if not (rows["attack"] == a).any()]
            head = f"- **{name}, {mode}:** "
            if missing:
                untargeted = (
                    mode == "untargeted" and "targeted" not in inspect.signature(ATTACKS[missing[0]].fn).parameters
                )
                why = f"{attack_label(missing[0])} has no untargeted form" if untargeted else "a run is missing"
                lines.append(head + f"the budget axis cannot compare {both} here ({why}).")
                continue
            l2, l2_numbers = _smaller(rows, attacks, "l2")
            linf, linf_numbers = _smaller(rows, attacks, "linf")
            verdict = f"{l2} needs the smaller perturbation" if l2 else "neither needs a smaller perturbation"
            if linf is None:
                also = "and neither does in L-inf"
            else:
                also = "and in L-inf too" if linf == l2 else f"but {linf} does in L-inf"
            lines.append(
                head + f"{verdict} in L2 ({l2_numbers}), {also} ({linf_numbers}); medians over "
                f"{rows['image'].nunique()} image(s) with 95% bootstrap intervals, on {_weights(studies, backbone)}."
            )
    return "\n".join(lines)
