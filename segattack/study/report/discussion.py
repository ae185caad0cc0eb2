"""The discussion: the paper's claims checked against the runs, the L2 space, convergence."""

from __future__ import annotations

import math
from collections.abc import Collection

from segattack.attacks import ATTACKS
from segattack.metrics import IMAGENET_STD
from segattack.models.backbones import UNVERIFIED_SOURCE
from segattack.study.report.runs import BACKBONE_LABEL, Run, attack_label, paper_table
from segattack.study.report.setting import in_paper_setting, other_setting_lines
from segattack.study.report.stability import _stability_lines


def saturated_pgd_l2(size: int, eps: float = 0.1) -> float:
    """L2 (0-255 units) of a perturbation at +-eps in ImageNet-normalised space on every pixel."""
    return 255 * eps * math.sqrt(size * size * sum(s * s for s in IMAGENET_STD))


def max_l2(size: int) -> float:
    """The largest L2 (0-255 units) any two [0,1] RGB images of ``size`` px can differ by."""
    return 255 * math.sqrt(3 * size * size)


PAPER_SIZE = 520  # the paper attacks torchvision's DeepLabV3 at its 520 px evaluation size


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
