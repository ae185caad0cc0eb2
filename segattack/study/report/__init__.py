"""The report's content from saved run results, one module per thing it renders: the runs read
back (:mod:`.runs`), Table 1 and the readings (:mod:`.table1`), provenance, stability over
repeats, the discussion of the paper's claims, the studies' tables and the budget axis.

Everything here reads ``results.json`` / ``tensors.pt`` / ``studies.json`` files written by the
runs and studies, never notebook outputs, so the report can be rebuilt from results alone. The
report notebook imports these names from this package.
"""

from segattack.study.report.budget import (
    BUDGET_NORMS,
    budget_answer,
    budget_caption,
    budget_curves,
    budget_frame,
    budget_rules,
    budget_table,
    budget_views,
)
from segattack.study.report.discussion import PAPER_SIZE, discussion, max_l2, saturated_pgd_l2
from segattack.study.report.provenance import provenance
from segattack.study.report.runs import (
    BACKBONE_LABEL,
    Failure,
    Run,
    attack_label,
    escape,
    load_repeats,
    load_runs,
    load_studies,
    paper_table,
)
from segattack.study.report.stability import STABILITY_METRICS, Spread, spreads, stability_table
from segattack.study.report.studies import (
    SUCCESS_COLUMNS,
    PaperFigure,
    comparison_table,
    difficulty_table,
    iteration_frame,
    paper_figures,
    transfer_table,
)
from segattack.study.report.table1 import READING_METRICS, reading, readings_table, table1

__all__ = [
    "BACKBONE_LABEL",
    "BUDGET_NORMS",
    "PAPER_SIZE",
    "READING_METRICS",
    "STABILITY_METRICS",
    "SUCCESS_COLUMNS",
    "Failure",
    "PaperFigure",
    "Run",
    "Spread",
    "attack_label",
    "budget_answer",
    "budget_caption",
    "budget_curves",
    "budget_frame",
    "budget_rules",
    "budget_table",
    "budget_views",
    "comparison_table",
    "difficulty_table",
    "discussion",
    "escape",
    "iteration_frame",
    "load_repeats",
    "load_runs",
    "load_studies",
    "max_l2",
    "paper_figures",
    "paper_table",
    "provenance",
    "reading",
    "readings_table",
    "saturated_pgd_l2",
    "spreads",
    "stability_table",
    "table1",
    "transfer_table",
]
