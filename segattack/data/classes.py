"""The 21 Pascal VOC classes and their palette, shared by every model, mask and figure."""

from __future__ import annotations

import numpy as np

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)
IGNORE_INDEX = 255


def bit_palette(count: int) -> np.ndarray:
    """The VOC colour map's rule for ``count`` classes, (count, 3) uint8: each id's bits spread over R, G, B."""
    palette = np.zeros((count, 3), dtype=np.uint8)
    for label in range(count):
        c, r, g, b = label, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[label] = (r, g, b)
    return palette


def voc_palette() -> np.ndarray:
    """The standard VOC colour map, (21, 3) uint8: class id -> RGB."""
    return bit_palette(NUM_CLASSES)
