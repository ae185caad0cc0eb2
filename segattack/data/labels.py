"""Label spaces: the classes a model predicts and a dataset's masks hold, with their colours.

A :class:`LabelSpace` is the class names (id order), the palette and the ignore index. The
shipped spaces are VOC-21 (the study's), Cityscapes-19 (its train ids; :data:`CITYSCAPES_TRAIN_ID`
maps the official label ids onto them, everything else ignored, as ``cityscapesscripts`` does) and
ADE20K-150 (the SceneParsing benchmark's: file value 0, "other", is ignored and every other value
shifted down by one, as its official evaluation and MMSeg's ``reduce_zero_label`` do). A Hugging
Face config's ``id2label`` (:func:`from_id2label`) and a ``classes.txt`` beside a ``pairs:`` folder
(:func:`from_classes_file`) give a user's own.

A :class:`LabelMap` reads a dataset's masks in a model's label space when the two differ (a
Cityscapes model on ADE20K, a VOC model on Cityscapes): each listed dataset class becomes a model
class, every other pixel is ignored, so metrics, targets and figures are in the model's classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segattack.data.classes import IGNORE_INDEX, VOC_CLASSES, bit_palette, voc_palette


@dataclass(frozen=True)
class LabelSpace:
    """A set of classes: ``names[i]`` is class ``i``; ``palette`` (C,3) uint8; ``ignore`` is never a class."""

    name: str
    names: tuple[str, ...]
    palette: np.ndarray
    ignore: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError(f"label space {self.name!r} has no classes")
        seen: dict[str, int] = {}
        for i, name in enumerate(self.names):  # one rule: names are told apart as class_id reads them
            key = name.strip().lower()
            if not key:
                raise ValueError(f"label space {self.name!r}: class {i} has no name")
            if key in seen:
                raise ValueError(
                    f"label space {self.name!r} names one class twice: {self.names[seen[key]]!r} (class "
                    f"{seen[key]}) and {name!r} (class {i}); names are case-insensitive, give each class its own"
                )
            seen[key] = i
        if self.palette.shape != (len(self.names), 3) or self.palette.dtype != np.uint8:
            raise ValueError(f"label space {self.name!r}: palette must be ({len(self.names)}, 3) uint8")
        if 0 <= self.ignore < len(self.names):
            raise ValueError(f"label space {self.name!r}: the ignore index {self.ignore} is a class id")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def class_id(self, name_or_id: str | int) -> int:
        """A class given by name (case-insensitive) or id, checked."""
        text = str(name_or_id).strip()
        if text.isdigit():
            if int(text) < self.num_classes:
                return int(text)
            raise ValueError(f"{self.name} has classes 0..{self.num_classes - 1}, got {text}")
        lowered = [n.lower() for n in self.names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        raise ValueError(f"{self.name} has no class {text!r}; its classes: {', '.join(self.names)}")

    def same_classes(self, other: LabelSpace) -> bool:
        return self.names == other.names

    def check_matches(self, other: LabelSpace, what: str = "the model", against: str = "the dataset") -> None:
        """One error naming both spaces when their classes differ."""
        if not self.same_classes(other):
            raise ValueError(
                f"{what} predicts {self.name} ({self.num_classes} classes: {_head(self.names)}) but "
                f"{against} is labelled in {other.name} ({other.num_classes} classes: {_head(other.names)})"
            )


def _head(names: tuple[str, ...]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


VOC = LabelSpace("VOC-21", VOC_CLASSES, voc_palette())

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip
# the official label ids of the 19 evaluated classes, in train-id order (cityscapesscripts' labels.py)
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES = LabelSpace("Cityscapes-19", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip
ADE20K = LabelSpace("ADE20K-150", ADE20K_CLASSES, bit_palette(len(ADE20K_CLASSES)))

SPACES: dict[str, LabelSpace] = {s.name: s for s in (VOC, CITYSCAPES, ADE20K)}


def cityscapes_lut() -> np.ndarray:
    """(256,) uint8: a Cityscapes ``*_labelIds.png`` value -> its train id (255 for the rest)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[list(CITYSCAPES_LABEL_IDS)] = np.arange(len(CITYSCAPES_LABEL_IDS), dtype=np.uint8)
    return lut


@dataclass(frozen=True)
class FileIds:
    """How a dataset's mask files store classes: values ``0..count-1`` are its own ids (anything else in a
    file is a damaged or foreign mask, refused before the lookup), ``lut[value]`` the class id."""

    name: str  # what the values are, for messages
    count: int
    lut: np.ndarray  # (256,) uint8


def cityscapes_ids() -> FileIds:
    """Cityscapes' ``*_gtFine_labelIds.png``: label ids 0..33 (cityscapesscripts draws no other)."""
    return FileIds("Cityscapes label ids", 34, cityscapes_lut())


def ade20k_ids() -> FileIds:
    """ADEChallengeData2016 annotations: 0 ("other") and the 150 classes."""
    return FileIds("ADE20K annotation values", len(ADE20K_CLASSES) + 1, ade20k_lut())


def ade20k_lut() -> np.ndarray:
    """(256,) uint8: an ADEChallengeData2016 annotation value -> class id (0 "other" ignored, the rest - 1)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[1 : len(ADE20K_CLASSES) + 1] = np.arange(len(ADE20K_CLASSES), dtype=np.uint8)
    return lut


def from_id2label(id2label: Mapping[int | str, str], name: str = "id2label") -> LabelSpace:
    """A Hugging Face config's ``id2label`` (ids 0..C-1, keys as ints or strings) as a label space;
    a space with the same names is returned as itself (so VOC models match VOC data)."""
    ids = sorted(int(k) for k in id2label)
    if ids != list(range(len(ids))):
        raise ValueError(f"{name}: class ids must be 0..{len(ids) - 1}, got {ids[:5]}...")
    names = tuple(str(id2label[i] if i in id2label else id2label[str(i)]) for i in ids)
    return _known(names) or LabelSpace(name, names, bit_palette(len(names)))


def from_classes_file(path: str | Path) -> LabelSpace:
    """``classes.txt``: one class name per line in id order (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    lines = [line.strip() for line in read_text(path, "classes file", "one class name per line").splitlines()]
    names = tuple(line for line in lines if line and not line.startswith("#"))
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"{path}: {len(names)} classes; masks are 8-bit with {IGNORE_INDEX} as ignore")
    try:
        return _known(names) or LabelSpace(f"{path.parent.name}/classes.txt", names, bit_palette(len(names)))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_text(path: Path, what: str, form: str) -> str:
    """A label file's text; an unreadable, binary or non-UTF-8 file is one message naming it and its form."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            f"write it as text: {form}"
        ) from None
    if "\x00" in text:
        raise ValueError(
            f"{what} {path} holds binary data (a NUL byte at offset {text.index(chr(0))}); write it as text: {form}"
        )
    return text


def _known(names: tuple[str, ...]) -> LabelSpace | None:
    lowered = tuple(n.lower() for n in names)
    return next((s for s in SPACES.values() if tuple(n.lower() for n in s.names) == lowered), None)


@dataclass(frozen=True)
class LabelMap:
    """Masks in ``source``'s classes read in ``target``'s: ``lut[v]`` is the target class of source
    class ``v`` (``target.ignore`` for unlisted classes and for ``source.ignore``)."""

    source: LabelSpace
    target: LabelSpace
    lut: np.ndarray  # (256,) uint8
    path: str


def read_label_map(path: str | Path, source: LabelSpace, target: LabelSpace) -> LabelMap:
    """A label map file: one ``DATASET_CLASS -> MODEL_CLASS`` per line (names, case-insensitive, or
    ids; blank lines and ``#`` comments skipped); several dataset classes may share a model class
    (``rider -> person``), a dataset class may appear once; unlisted dataset classes are ignored."""
    path = Path(path)
    text = read_text(path, "label map", "'DATASET_CLASS -> MODEL_CLASS' per line")
    lut = np.full(256, target.ignore, dtype=np.uint8)
    seen: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        left, arrow, right = line.partition("->")
        if not arrow or not left.strip() or not right.strip():
            raise ValueError(f"label map {path}, line {number}: expected 'DATASET_CLASS -> MODEL_CLASS', got {line!r}")
        try:
            src, dst = source.class_id(left), target.class_id(right)
        except ValueError as exc:
            raise ValueError(f"label map {path}, line {number}: {exc}") from None
        if src in seen:
            again = f"{source.names[src]!r} is mapped on line {seen[src]} too"
            raise ValueError(f"label map {path}, line {number}: {again}")
        seen[src], lut[src] = number, dst
    if not seen:
        raise ValueError(f"label map {path} maps no class ('DATASET_CLASS -> MODEL_CLASS' per line)")
    return LabelMap(source, target, lut, str(path))
