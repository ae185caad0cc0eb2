"""The evaluation report's tables and figures from ``evaluation.json`` records (``evaluate.ipynb`` calls these).

Every table comes with the protocol card it was measured under (:func:`beside`), so a number is
never read without its attacks, iterations, radii, data and numerics.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch

from segattack.data.labels import LabelSpace
from segattack.study.evalrecord import Evaluation, read_evaluation
from segattack.study.leaderboard import find_records
from segattack.study.plotting import colorize


def load(out_dir: str | Path) -> list[tuple[Path, Evaluation]]:
    """Every model's folder and record under ``out_dir``, in folder order."""
    return [(p.parent, read_evaluation(p)) for p in find_records([out_dir])]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _eps_text(eps: float, norm: str) -> str:
    return f"{eps * 255:.3g}/255" if norm == "linf" else f"{eps:.3g}"


def headline(records: list[Evaluation]) -> pd.DataFrame:
    """Model x eps: clean mIoU/aAcc, the worst case's robust mIoU/aAcc and each attack's robust mIoU
    (percent; ``*``: the attack's objective was still moving)."""
    rows = []
    for record in records:
        norm = record.protocol.norm
        for worst in record.worst:
            row: dict[str, Any] = {
                "model": record.model.spec,
                "eps": _eps_text(worst.eps, norm),
                "clean mIoU": _pct(record.clean.miou),
                "clean aAcc": _pct(record.clean.aacc),
                "worst-case mIoU": _pct(worst.scores.miou),
                "worst-case aAcc": _pct(worst.scores.aacc),
            }
            if worst.targeted is not None:
                row["targeted success (changed px)"] = _pct(worst.targeted.success_changed)
                row["target mIoU"] = _pct(worst.targeted.target_miou)
            for cell in record.cells:
                if cell.eps == worst.eps and cell.scores is not None:
                    row[f"{cell.attack} mIoU"] = _pct(cell.scores.miou) + ("" if cell.converged else "*")
            rows.append(row)
    return pd.DataFrame(rows)


def protocol_card(record: Evaluation) -> pd.DataFrame:
    """The protocol as (item, value) rows: attacks, radii, model and weights hash, data, numerics."""
    p = record.protocol
    items: list[tuple[str, str]] = [
        ("model", record.model.spec),
        ("weights", f"{record.model.weights}: {record.model.description}"),
        ("weights sha256", record.model.weights_sha256[:16] or "n/a"),
    ]
    for attack in p.attacks:
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in attack.params.items())
        items.append((f"attack {attack.name}", f"{attack.label} ({attack.kind}), {attack.steps} iterations; {params}"))
        items.append((f"{attack.name} radius", attack.radius))
    items += [
        ("norm, eps [0,1]", f"{p.norm}: " + ", ".join(f"{e:.6g}" for e in p.eps)),
        ("eps /255", ", ".join(f"{e * 255:.3g}" for e in p.eps)),
        ("targeted", p.targeted),
        ("dataset", f"{p.images} ({p.labels}), {p.num_images or 'all'} images, seed {p.seed}"),
        ("resize, window", f"{p.resize} to {p.size or 'the weights own'} px; window {p.window or 'none'}"),
        ("label map", p.label_map or "none"),
        ("broken", f"{p.break_share:.0%} of the pixels won"),
        ("numerics", f"{p.device}, {p.threads} threads, deterministic {p.deterministic}"),
        ("segattack", p.segattack_version),
    ]
    return pd.DataFrame(items, columns=["protocol", "value"])


def beside(table: pd.DataFrame, record: Evaluation, title: str) -> str:
    """HTML: ``table`` with the protocol card of ``record`` beside it."""
    card = protocol_card(record).to_html(index=False, classes="protocol")
    return (
        f'<div class="evaluation-table"><h3>{html.escape(title)}</h3><div style="display:flex;gap:2em;'
        f'align-items:flex-start">{table.to_html(index=False)}<div><b>protocol</b>{card}</div></div></div>'
    )


def robust_curves(records: list[Evaluation]) -> plt.Figure:
    """Robust pixel accuracy against eps per attack, the worst case bold, one panel per model."""
    fig, axes = plt.subplots(1, len(records), figsize=(5 * len(records), 3.6), squeeze=False)
    for ax, record in zip(axes[0], records):
        eps = [e * 255 if record.protocol.norm == "linf" else e for e in record.protocol.eps]
        for attack in dict.fromkeys(c.attack for c in record.cells if c.eps is not None):
            values = [record.cell(attack, e).scores.aacc for e in record.protocol.eps]  # type: ignore[union-attr]
            ax.plot([0, *eps], [record.clean.aacc, *values], marker="o", label=attack)
        worst = [w.scores.aacc for w in record.worst]
        ax.plot([0, *eps], [record.clean.aacc, *worst], "k-", lw=2.5, label="worst case")
        ax.set(title=record.model.spec, xlabel="eps" + (" (/255)" if record.protocol.norm == "linf" else ""))
        ax.set_ylabel("robust aAcc")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def smallest_curves(records: list[Evaluation]) -> plt.Figure:
    """Share of images not yet broken against eps, per attack and the worst case (per-image smallest eps)."""
    fig, axes = plt.subplots(1, len(records), figsize=(5 * len(records), 3.6), squeeze=False)
    for ax, record in zip(axes[0], records):
        eps = [e * 255 if record.protocol.norm == "linf" else e for e in record.protocol.eps]
        for small in record.smallest:
            style = {"color": "k", "lw": 2.5} if small.attack == "worst" else {}
            ax.step([0, *eps], [1.0, *small.robust_share], where="post", label=small.attack, **style)
        ax.set(title=record.model.spec, xlabel="eps", ylabel="images not broken", ylim=(-0.05, 1.05))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def class_table(record: Evaluation) -> pd.DataFrame:
    """Per class (the dataset's names): clean IoU and the worst case's robust IoU at each eps."""
    table: dict[str, Any] = {"class": record.class_names, "clean IoU": [_pct(v) for v in record.clean.class_iou]}
    for worst in record.worst:
        table[f"worst @ {_eps_text(worst.eps, record.protocol.norm)}"] = [_pct(v) for v in worst.scores.class_iou]
    frame = pd.DataFrame(table)
    return frame[frame["clean IoU"] != "n/a"]


def cost_table(record: Evaluation) -> pd.DataFrame:
    """Per cell: forward+backward passes and seconds per image, and whether the objective had settled."""
    return pd.DataFrame(
        [
            {
                "attack": c.attack,
                "eps": "own search" if c.eps is None else _eps_text(c.eps, record.protocol.norm),
                "passes / image": f"{c.passes_per_image:.1f}",
                "s / image": f"{c.seconds_per_image:.3f}",
                "converged": "yes" if c.converged else f"no (still moving {100 * c.objective_change:.1f}%)",
            }
            for c in record.cells
        ]
    )


def worst_images(folder: Path, labels: LabelSpace, count: int = 4) -> plt.Figure | None:
    """The saved images the worst case hurt most at the largest eps: image, adversarial image, and the
    clean and adversarial predictions in the dataset's palette."""
    if not (folder / "worst.pt").is_file():  # a record copied without its images
        return None
    stored = torch.load(folder / "worst.pt", weights_only=True)
    items = stored["items"][:count]
    if not items:
        return None
    fig, axes = plt.subplots(len(items), 4, figsize=(10, 2.6 * len(items)), squeeze=False)
    for row, item in zip(axes, items):
        panels = [
            (item["image"].permute(1, 2, 0).numpy(), item["name"]),
            (item["adv"].permute(1, 2, 0).numpy(), f"{item['attack']} at eps {stored['eps'] * 255:.3g}/255"),
            (colorize(item["clean_pred"], labels), "clean prediction"),
            (colorize(item["adv_pred"], labels), f"adversarial (aAcc {_pct(item['accuracy'])}%)"),
        ]
        for ax, (picture, title) in zip(row, panels):
            ax.imshow(picture)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig
