"""Figures in the paper's layout, and per-iteration curves with intervals over images."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.patches import Patch

from .classes import VOC_CLASSES, voc_palette

COLUMNS = ("original image", "adversarial image", "prediction on original", "prediction on adversarial")


def colorize(mask: torch.Tensor) -> np.ndarray:
    """(H,W) class ids -> (H,W,3) uint8 VOC colours (255 'ignore' drawn white)."""
    palette = np.vstack([voc_palette(), np.full((235, 3), 255, np.uint8)])
    return palette[mask.cpu().numpy().astype(np.int64)]


def _image(t: torch.Tensor) -> np.ndarray:
    return t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def attack_figure(images: torch.Tensor, adv: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor,
                  title: str, target_index: int | None = None, max_rows: int = 8) -> plt.Figure:
    """The paper's figure layout: one row per image; original, adversarial, both predictions.

    The row whose prediction is every image's target (``target_index``) is marked.
    """
    rows = min(len(images), max_rows)
    fig, axes = plt.subplots(rows, 4, figsize=(8.4, 2.1 * rows + 0.6), squeeze=False)
    for r in range(rows):
        panels = (_image(images[r]), _image(adv[r]), colorize(clean_pred[r]), colorize(adv_pred[r]))
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
    present = sorted(set(torch.cat([clean_pred[:rows].flatten(), adv_pred[:rows].flatten()]).tolist()) - {255})
    palette = voc_palette() / 255.0
    handles = [Patch(color=palette[c], label=VOC_CLASSES[c]) for c in present[:12]]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig


def history_frame(histories: dict[str, list[list[float]]], quantity: str) -> pd.DataFrame:
    """Long table (run, iteration, image, value) of one per-iteration quantity of several runs."""
    rows = []
    for run, values in histories.items():
        arr = np.asarray(values, dtype=float)
        for it in range(arr.shape[0]):
            for img in range(arr.shape[1]):
                rows.append((run, it + 1, img, arr[it, img]))
    return pd.DataFrame(rows, columns=["run", "iteration", "image", quantity])


def curve_figure(histories: dict[str, list[list[float]]], quantity: str, title: str) -> plt.Figure:
    """Mean over images of ``quantity`` per iteration, one line per run, 95% interval shaded."""
    frame = history_frame(histories, quantity)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sns.lineplot(data=frame, x="iteration", y=quantity, hue="run", errorbar=("ci", 95), ax=ax)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
