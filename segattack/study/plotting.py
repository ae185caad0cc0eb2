"""Figures in the paper's layout, and per-iteration curves with intervals over images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

from segattack.data.labels import VOC, LabelSpace

if TYPE_CHECKING:
    from segattack.study.records import Curve

COLUMNS = ("original image", "adversarial image", "prediction on original", "prediction on adversarial")


def colorize(mask: torch.Tensor, labels: LabelSpace = VOC) -> np.ndarray:
    """(H,W) class ids -> (H,W,3) uint8 colours of ``labels`` (any other id, ignore included, white)."""
    palette = np.vstack([labels.palette, np.full((256 - labels.num_classes, 3), 255, np.uint8)])
    return palette[mask.cpu().numpy().astype(np.int64)]


def _image(t: torch.Tensor) -> np.ndarray:
    return t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def attack_figure(
    images: Sequence[torch.Tensor],
    adv: Sequence[torch.Tensor],
    clean_pred: Sequence[torch.Tensor],
    adv_pred: Sequence[torch.Tensor],
    title: str,
    target_index: int | None = None,
    max_rows: int = 8,
    labels: LabelSpace = VOC,
) -> plt.Figure:
    """The paper's figure layout: one row per image; original, adversarial, both predictions.

    Each argument is a batch or a list of per-image tensors (images may differ in size). The row
    whose prediction is every image's target (``target_index``) is marked; the legend names the
    classes drawn, in ``labels``' names and colours.
    """
    rows = min(len(images), max_rows)
    fig, axes = plt.subplots(rows, 4, figsize=(8.4, 2.1 * rows + 0.6), squeeze=False)
    for r in range(rows):
        panels = (_image(images[r]), _image(adv[r]), colorize(clean_pred[r], labels), colorize(adv_pred[r], labels))
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=8)
        if r == target_index:
            axes[r, 0].set_ylabel("TARGET", color="crimson", fontsize=9, fontweight="bold")
            for ax in axes[r]:
                for spine in ax.spines.values():
                    spine.set_edgecolor("crimson")
                    spine.set_linewidth(2.5)
    drawn = set(torch.cat([m.flatten() for m in (*clean_pred[:rows], *adv_pred[:rows])]).tolist())
    present = sorted(drawn & set(range(labels.num_classes)))
    palette = labels.palette / 255.0
    handles = [Patch(color=palette[c], label=labels.names[c]) for c in present[:12]]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig


def curve_figure(curves: dict[str, Curve], quantity: str, title: str) -> plt.Figure:
    """Per iteration, the mean over images of ``quantity`` with its 95% interval shaded, one line
    per run (``curves[run]`` as a run's results hold it)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, curve in curves.items():
        mean = np.asarray([np.nan if v is None else v for v in curve.mean], dtype=float)
        half = np.asarray([0.0 if v is None else v for v in curve.ci95], dtype=float)
        steps = np.arange(1, len(mean) + 1)
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel(quantity)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
