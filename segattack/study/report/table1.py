"""Table 1 (the paper's table beside ours) and the readings table."""

from __future__ import annotations

import pandas as pd

from segattack.attacks import ATTACKS
from segattack.study.records import Pooled
from segattack.study.report.runs import Run, _fmt, _fmt_pooled, paper_table
from segattack.study.report.setting import in_paper_setting


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
