"""Data: image sets (``scenes``, ``photos``, ``voc:``, ``pairs:``, ``cityscapes:``, ``ade20k:``, a
folder), their label spaces and classes, the synthetic scenes, and the target schemes."""

from segattack.data.sets import (
    RESIZES,
    ImageError,
    ImageSet,
    Loaded,
    Resize,
    image_set,
    load_image,
    resolve_source,
    source_labels,
)

__all__ = [
    "RESIZES",
    "ImageError",
    "ImageSet",
    "Loaded",
    "Resize",
    "image_set",
    "load_image",
    "resolve_source",
    "source_labels",
]
