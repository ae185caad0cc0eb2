"""The studies' tables: attack comparison, transfer, difficulty, iterations, the paper's figures."""

from __future__ import annotations

import typing

import pandas as pd

from segattack.study.records import StudiesResults
from segattack.util.paths import data_dir


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
