"""The budget axis in the report: its rules, curves, medians, caption and answer."""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import asdict, fields

import numpy as np
import pandas as pd

from segattack.attacks import ATTACKS
from segattack.evaluation.budget import PLATEAU, RTOL, median_budget, robustness_curve
from segattack.study.records import BudgetRow, StudiesResults
from segattack.study.report.runs import BACKBONE_LABEL, attack_label, escape
from segattack.study.studies import PAPER_TARGET


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


def _converged(group: pd.DataFrame) -> str:
    """'n of m', and a flag where some image's runs were still moving when they stopped."""
    done = int(group["converged"].sum())
    return f"{done} of {len(group)}" + ("" if done == len(group) else " (flagged: still moving)")


def _evidence(group: pd.DataFrame) -> str:
    """The share of pixels reached, at the largest radius tried, by the images not broken ('—': none)."""
    left = group.loc[~np.isfinite(group["linf"]), "success"]
    return ", ".join(f"{v:.2f}" for v in sorted(left)) if len(left) else "—"


def budget_table(studies: StudiesResults) -> pd.DataFrame:
    """Per backbone (its weights named), mode and attack: how many images broke, the median L-inf
    and L2 budget with its 95% bootstrap interval over images, the forward+backward passes and wall
    time per image, how the budget was found (searched, minimal-norm, measured), how many images'
    runs had stopped moving, and the success the unbroken images reached (the evidence)."""
    frame, rows = budget_frame(studies), {}
    for (backbone, mode, attack), group in frame.groupby(["backbone", "mode", "attack"], sort=False):
        rows[(_weights(studies, backbone), mode, attack_label(attack))] = {
            "broken": f"{int(np.isfinite(group['linf']).sum())} of {len(group)}",
            "median L-inf (/255) [95%]": _median(group["linf"].to_numpy(), 255.0, 2),
            "median L2 ([0,1]) [95%]": _median(group["l2"].to_numpy(), 1.0, 3),
            "passes per image": f"{group['passes'].mean():.0f}",
            "seconds per image": f"{group['seconds'].mean():.2f}",
            "found by": group["how"].iloc[0],
            "converged": _converged(group),
            "success where not broken": _evidence(group),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if rows:
        frame.index = pd.MultiIndex.from_tuples(frame.index, names=["weights", "mode", "attack"])
        frame = frame.sort_index(level=["weights", "mode"], sort_remaining=False)
    return frame


def _measured_steps(plan: typing.Literal["paper", "default"]) -> str:
    """The iterations, under ``plan``, of the paper's attacks the budget axis measures (ASMA's)."""
    return ", ".join(str(s.steps_for(plan)) for s in map(ATTACKS.check, ATTACKS.in_paper()) if not s.searchable)


def budget_caption(studies: StudiesResults) -> str:
    """Markdown: what the budget axis measured, on how many images, with which settings and weights."""
    p, frame = studies.params, budget_frame(studies)
    return (
        f"Per image, the smallest perturbation at which each attack breaks it: "
        f"{p['budget_threshold']:.0%} of the pixels whose target differs from the clean prediction at the "
        f"target (targeted, the paper's scheme: every image toward image {PAPER_TARGET}'s prediction, that "
        f"image left out) or off the clean prediction (untargeted), on {frame['image'].nunique()} "
        f"{escape(p['images'])} image(s) at {p['size']} px. Every attack runs to convergence at each radius it "
        f"is tried at: rounds of {p['budget_steps']} iterations, each from the last iterate, until the image "
        f"breaks (it then stops) or its best success gains under {PLATEAU:.1%} of the pixels over a whole "
        f"round (the first: over its second half; at most {p['budget_rounds']} rounds; an image still moving "
        f"then is flagged). PGD is searched "
        f"warm up to {p['budget_eps_max'] * 255:.0f}/255: a ladder down from the last breaking perturbation's "
        f"L-inf norm, then a bisection to 1/{round(1 / RTOL)} of the radius, each radius started from that "
        f"perturbation projected onto it; attacks without a starting point are bisected cold. Minimal-norm "
        f"attacks: their returned norm. ASMA, whose budget is no input: one run of its Table 1 iterations "
        f"({p.get('budget_run_steps') or _measured_steps(p.get('budget_plan', 'default'))}), each "
        f"image stopped at its first break and measured there. An image not broken has no budget (∞); the "
        f"table gives the success it reached. Weights: "
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


def _equal_compute(studies: StudiesResults, backbone: str, attack: str) -> dict[int, float]:
    """Mean targeted success after N forward+backward passes at the studies' fixed radius (the
    comparison cells' per-iteration success), for N in 5, 10, 20, ... up to their iterations."""
    history = studies.iteration_curves.get(backbone, {}).get(attack, [])
    marks = [n for n in (1, 5, 10, 20, 50, 100, 300) if n <= len(history)]
    return {n: float(np.mean(history[n - 1])) for n in marks}


def budget_views(studies: StudiesResults) -> pd.DataFrame:
    """The paper's two attacks per backbone, targeted, both views side by side: the smallest budget
    at convergence (median L2 and L-inf [95%], passes and seconds per image: which is *stronger*)
    and the success after equal forward+backward passes at the studies' fixed L-inf radius (which
    is more *efficient*)."""
    frame, rows = budget_frame(studies), {}
    frame = frame[frame["mode"] == "targeted"]
    eps = studies.params.get("eps", 0.0) * 255
    for backbone in dict.fromkeys(frame["backbone"]):
        for attack in ATTACKS.in_paper():
            group = frame[(frame["backbone"] == backbone) & (frame["attack"] == attack)]
            if not len(group):
                continue
            row = {
                ("smallest budget at convergence", "median L2 [95%]"): _median(group["l2"].to_numpy(), 1.0, 3),
                ("smallest budget at convergence", "median L-inf /255 [95%]"): _median(
                    group["linf"].to_numpy(), 255.0, 2
                ),
                ("smallest budget at convergence", "passes / image"): f"{group['passes'].mean():.0f}",
                ("smallest budget at convergence", "s / image"): f"{group['seconds'].mean():.2f}",
            }
            for n, success in _equal_compute(studies, backbone, attack).items():
                row[(f"success at L-inf {eps:.0f}/255 (equal compute)", f"after {n} passes")] = f"{success:.1%}"
            rows[(_weights(studies, backbone), attack_label(attack))] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    if rows:
        table.columns = pd.MultiIndex.from_tuples(table.columns)
        table.index = pd.MultiIndex.from_tuples(table.index, names=["weights", "attack"])
    return table


def _what_would_change(rows: pd.DataFrame, attacks: tuple[str, str], verdict: bool, apart: bool) -> str:
    """What in these numbers could reverse the verdict (or give one): overlapping intervals, flagged
    runs, unbroken images and the success they reached."""
    if not verdict:
        first = (
            "no verdict: a median is ∞ (or both equal) where under half the images break; more rounds, a larger "
            "budget_eps_max or more ASMA iterations could give one"
        )
    elif apart:
        first = "its intervals are apart, so more images would not reverse it"
    else:
        first = f"the intervals overlap: more than {rows['image'].nunique()} images could reverse it"
    parts = [first]
    for attack in attacks:
        mine = rows[rows["attack"] == attack]
        moving, left = int((~mine["converged"]).sum()), mine[~np.isfinite(mine["linf"])]
        reached = ", ".join(f"{v:.2f}" for v in sorted(left["success"]))
        if moving:
            parts.append(
                f"{moving} {attack_label(attack)} image(s) were still moving when flagged: more rounds "
                f"could lower their budgets"
            )
        if len(left):
            parts.append(
                f"{attack_label(attack)} left {len(left)} image(s) unbroken (success {reached}"
                f" at the largest radius or last iteration): each counts as ∞, so breaking them could only "
                f"lower its median"
            )
    parts.append(
        "PGD's budgets are upper bounds within 1/16 of the search's smallest breaking radius: a stronger budget "
        "attack could lower them, and ASMA's are the norm at its first break, so more ASMA iterations add "
        "budgets for unbroken images, never lower one"
    )
    return "; ".join(parts)


def _efficiency(studies: StudiesResults, backbone: str, attacks: tuple[str, str]) -> str:
    """One sentence: which attack has the higher success after the same passes at the fixed radius."""
    curves = [_equal_compute(studies, backbone, a) for a in attacks]
    common = sorted(set(curves[0]) & set(curves[1]))
    if not common:
        return ""
    n = common[-1]
    first, second = curves[0][n], curves[1][n]
    eps = studies.params.get("eps", 0.0) * 255
    labels = [attack_label(a) for a in attacks]
    leader = "neither" if first == second else labels[0] if first > second else labels[1]
    return (
        f" At equal compute ({n} forward+backward passes at L-inf {eps:.0f}/255, the comparison's images) "
        f"{leader} is ahead: {labels[0]} {first:.1%} vs {labels[1]} {second:.1%} success."
    )


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
            apart = "overlapping" not in l2_numbers
            verdict = f"{l2} needs the smaller perturbation" if l2 else "neither needs a smaller perturbation"
            if linf is None:
                also = "and neither does in L-inf"
            else:
                also = "and in L-inf too" if linf == l2 else f"but {linf} does in L-inf"
            lines.append(
                head + f"{verdict} in L2 ({l2_numbers}), {also} ({linf_numbers}); medians over "
                f"{rows['image'].nunique()} image(s) with 95% bootstrap intervals, on {_weights(studies, backbone)}."
                + _efficiency(studies, backbone, attacks)
                + f" What would change it: {_what_would_change(rows, attacks, bool(l2), apart)}."
            )
    return "\n".join(lines)
