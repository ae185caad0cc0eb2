"""The study's inputs: image sets, listed first and read a few images at a time.

An image set (:func:`image_set`) is a named source of RGB images, with ground-truth masks where
the source has them:

- ``"scenes"``: the embedded models' held-out synthetic scenes (endless, with ground truth);
- ``"photos"``: the four shipped CC0/public-domain photos (the real weights' domain);
- ``"voc:PATH"``: Pascal VOC 2012 val through ``torchvision.datasets.VOCSegmentation`` (the user's
  own copy, never downloaded), masks with their 255 borders kept as ignore;
- ``"pairs:PATH"``: ``PATH/images/NAME.(jpg|png)`` with ``PATH/masks/NAME.png`` (palette or 8-bit
  class ids, 255 = ignore), in VOC-21's classes or those ``PATH/classes.txt`` names;
- ``"cityscapes:PATH"``: Cityscapes val (fine) through ``torchvision.datasets.Cityscapes``, label ids
  mapped to the 19 train ids (:mod:`segattack.data.labels`);
- ``"ade20k:PATH"``: ADEChallengeData2016 validation (``images/validation``, ``annotations/validation``),
  0 ignored and the rest shifted down by one;
- a folder of images (no ground truth).

:func:`resolve_source` makes a spec's path absolute: the form to hash into a run's identity and
to send to a worker, whose working directory may differ. A listing refuses what would corrupt
the set (two images with one name, a ``val.txt`` id repeated or reaching outside the dataset)
and lists what it leaves out, with the reason (other files, sub-folders, broken or looping
symbolic links, images without a mask, masks without an image).

Files are checked from their header before decoding (format against extension, size, mode, bit
depth, frames) and refused with a message naming the file; EXIF orientation is applied as every
viewer does and noted. ``resize`` is the named resize protocol: ``"crop"`` (centre square crop,
then ``size`` x ``size``), ``"shorter"`` (shorter side to ``size``, aspect kept: the transforms
of torchvision's segmentation weights and of its reference evaluation) or ``"squash"`` (the whole
image to ``size`` x ``size``, aspect not kept: reference [5]'s ``T.Resize((520, 520))``). Masks
follow the image with nearest-neighbour resampling.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shlex
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from segattack.data.labels import (
    ADE20K,
    CITYSCAPES,
    VOC,
    FileIds,
    LabelMap,
    LabelSpace,
    ade20k_ids,
    cityscapes_ids,
    from_classes_file,
)
from segattack.data.scenes import render_scene
from segattack.util.paths import photos_dir

STUDY_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}
MAX_SIDE, MIN_SIDE = 8192, 16
Resize = Literal["crop", "shorter", "squash"]
RESIZES = ("crop", "shorter", "squash")
DATASET_PREFIXES = ("voc:", "pairs:", "cityscapes:", "ade20k:")
SOURCE_FORMS = "'scenes', 'photos', 'voc:PATH', 'pairs:PATH', 'cityscapes:PATH', 'ade20k:PATH' or a folder"
VOC_LAYOUT = (
    "a Pascal VOC 2012 folder: PATH/VOCdevkit/VOC2012/ with JPEGImages/, SegmentationClass/ and "
    "ImageSets/Segmentation/val.txt (torchvision's VOCSegmentation layout; PATH may also be the "
    "VOCdevkit or VOC2012 folder itself)"
)


class ImageError(ValueError):
    """An input that cannot be used: missing, not an image, wrong mode, depth or size, bad mask."""


@dataclass
class Loaded:
    """Images read from a set: (3,H,W) tensors in [0,1], (H,W) masks (or None), names, notes."""

    images: list[torch.Tensor]
    truth: list[torch.Tensor] | None
    names: list[str]
    notes: list[str] = field(default_factory=list)


def _open(path: Path) -> Image.Image:
    """Open an image file lazily and check everything its header says, before any decoding."""
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if not path.is_file():
        raise ImageError(f"{path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(f"{path} is larger than {MAX_SIDE}x{MAX_SIDE} px (refused before decoding)") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path} is not a readable image: {exc}") from None
    expected = FORMATS.get(path.suffix.lower())
    if expected and img.format != expected:
        img.close()
        raise ImageError(f"{path} holds {img.format} data, not {expected} as its name says; rename it")
    w, h = img.size
    if max(w, h) > MAX_SIDE or min(w, h) < MIN_SIDE:
        img.close()
        raise ImageError(f"{path} is {w}x{h}; sides must be between {MIN_SIDE} and {MAX_SIDE} px")
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        img.close()
        raise ImageError(f"{path} holds {frames} frames (animation or multi-page); give one image per file")
    return img


def _open_rgb(path: Path) -> Image.Image:
    """An image file whose header says 8-bit RGB (still undecoded)."""
    img = _open(path)
    if img.mode != "RGB" or any(";16" in str(tile.args) for tile in getattr(img, "tile", [])):
        mode = "16-bit RGB" if img.mode == "RGB" else img.mode
        img.close()
        raise ImageError(
            f"{path} has mode {mode}; segattack needs 8-bit RGB (convert it first, e.g. PIL's Image.convert('RGB'))"
        )
    return img


def _read_rgb(path: Path) -> tuple[Image.Image, str | None]:
    """An 8-bit RGB image, EXIF orientation applied; the note says when it was applied."""
    img = _open_rgb(path)
    try:
        img.load()
    except OSError as exc:
        raise ImageError(f"{path} is not a readable image: {exc}") from None
    orientation = img.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        return ImageOps.exif_transpose(img), f"{path.name}: EXIF orientation {orientation} applied"
    return img, None


def _geometry(w: int, h: int, size: int, resize: Resize) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """(crop box, output size) of the resize protocol for a w x h image."""
    if resize == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return (left, top, left + side, top + side), (size, size)
    if resize == "shorter":  # as torchvision's resize to an int: the longer side truncated
        out = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        return (0, 0, w, h), out
    if resize == "squash":  # both sides to size, as torchvision's resize to a (size, size) pair
        return (0, 0, w, h), (size, size)
    raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")


def load_image(path: str | os.PathLike, size: int, resize: Resize = "crop") -> torch.Tensor:
    """An 8-bit RGB image file as a (3,H,W) tensor in [0,1] under the resize protocol."""
    return _load_pair(Path(path), None, size, resize)[0]


def _load_pair(
    path: Path,
    mask_path: Path | None,
    size: int,
    resize: Resize,
    labels: LabelSpace = VOC,
    ids: FileIds | None = None,
    remap: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    if size < MIN_SIDE:
        raise ImageError(f"image size must be >= {MIN_SIDE} px, got {size}")
    img, note = _read_rgb(path)
    notes = [note] if note else []
    box, out = _geometry(*img.size, size, resize)
    if min(box[2] - box[0], box[3] - box[1]) < min(out):
        notes.append(f"{path.name}: upscaled from {img.size[0]}x{img.size[1]}")
    data = np.asarray(img.crop(box).resize(out, Image.Resampling.BILINEAR), dtype=np.uint8)
    image = torch.from_numpy(data.copy()).permute(2, 0, 1).float().div(255)
    mask = None
    if mask_path is not None:
        mask = _load_mask(mask_path, img.size, box, out, labels, ids, remap)
    return image, mask, notes


def _load_mask(
    path: Path,
    image_size: tuple[int, int],
    box: tuple[int, int, int, int],
    out: tuple[int, int],
    labels: LabelSpace = VOC,
    ids: FileIds | None = None,
    remap: np.ndarray | None = None,
) -> torch.Tensor:
    """The mask's class ids (``ids.lut[value]`` when the dataset maps its file values, each value first
    checked against the dataset's own ids) under the image's crop and resize; every pixel of the whole
    file is checked against ``labels`` (a bad id outside the crop, or one that resampling drops, still
    marks a bad mask), then read in another label space through ``remap`` (a
    :class:`~segattack.data.labels.LabelMap`'s) where one is given."""
    img = _open(path)
    if img.mode not in ("P", "L"):
        img.close()
        raise ImageError(f"mask {path} has mode {img.mode}; masks are palette or 8-bit images of class ids")
    if img.size != image_size:
        img.close()
        raise ImageError(f"mask {path} is {img.size[0]}x{img.size[1]}, its image {image_size[0]}x{image_size[1]}")
    try:
        full = np.asarray(img, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"mask {path} is not a readable image: {exc}") from None
    if ids is not None:  # a value outside the dataset's ids would read as ignore: a mask of another set
        raw = np.bincount(full.ravel(), minlength=256)
        raw[: ids.count] = 0
        if raw.any():
            raise ImageError(
                f"mask {path} holds values {np.flatnonzero(raw)[:5].tolist()} ({int(raw.sum())} pixels); "
                f"{ids.name} are 0..{ids.count - 1}: is it a mask of another dataset or of other ids?"
            )
        full = ids.lut[full]
    counts = np.bincount(full.ravel(), minlength=256)
    counts[[*range(labels.num_classes), labels.ignore]] = 0
    bad = np.flatnonzero(counts)
    if bad.size:
        raise ImageError(
            f"mask {path} holds class ids {bad[:5].tolist()} ({int(counts.sum())} pixels); expected "
            f"0..{labels.num_classes - 1} ({labels.name}) and {labels.ignore} (ignore)"
        )
    if remap is not None:
        full = remap[full]
    mapped = img if ids is None and remap is None else Image.fromarray(full)
    classes = np.asarray(mapped.crop(box).resize(out, Image.Resampling.NEAREST), dtype=np.uint8)
    return torch.from_numpy(classes.astype(np.int64))


@dataclass
class ImageSet:
    """A finite list of image files (with masks or not), or the endless synthetic scenes."""

    source: str
    size: int
    resize: Resize = "crop"
    files: list[Path] | None = None  # None: synthetic scenes
    masks: list[Path] | None = None
    seed: int = 0
    skipped: list[str] = field(default_factory=list)
    labels: LabelSpace = VOC  # the masks' classes as loaded (a label map's target where one is set)
    ids: FileIds | None = field(default=None, compare=False)  # the mask files' own ids, where the set maps them
    label_map: LabelMap | None = field(default=None, compare=False)  # the dataset's classes -> a model's

    @property
    def count(self) -> int | None:
        """How many images the set holds (None: endless)."""
        return None if self.files is None else len(self.files)

    @property
    def has_truth(self) -> bool:
        return self.files is None or self.masks is not None

    def select(self, num_images: int) -> int:
        """How many images a run of ``num_images`` attacks (0: all of a finite set)."""
        if num_images < 0 or (num_images == 0 and self.count is None):
            raise ImageError(f"the number of images must be > 0 for {self.source}, got {num_images}")
        if self.count is not None and num_images > self.count:
            raise ImageError(f"{self.source} holds {self.count} images; asked for {num_images}")
        return num_images or typing.cast(int, self.count)  # a finite set here: 0 on an endless one is refused

    def check(self, count: int) -> None:
        """Read the headers of the first ``count`` files (and masks): a bad file is refused before any work."""
        for i in range(count):
            if self.files is None:
                return
            _open_rgb(self.files[i]).close()
            if self.masks is not None:
                _open(self.masks[i]).close()

    def mapped(self, label_map: LabelMap) -> ImageSet:
        """This set with its masks read in ``label_map.target``'s classes (refused unless the map reads
        this set's classes)."""
        if self.label_map is not None:
            raise ImageError(f"{self.source} is already read through the label map {self.label_map.path}")
        if not label_map.source.same_classes(self.labels):
            raise ImageError(
                f"label map {label_map.path} reads masks in {label_map.source.name} but {self.source} is "
                f"labelled in {self.labels.name}"
            )
        return dataclasses.replace(self, labels=label_map.target, label_map=label_map)

    def load(self, indices: Sequence[int]) -> Loaded:
        """The images (and masks) at ``indices``."""
        remap = None if self.label_map is None else self.label_map.lut
        if self.files is None:
            scenes = [render_scene(self.seed, "heldout", i, self.size) for i in indices]
            return Loaded(
                [torch.from_numpy(img).permute(2, 0, 1).float().div(255) for img, _ in scenes],
                [torch.from_numpy(mask if remap is None else remap[mask]).long() for _, mask in scenes],
                [f"scene {i}" for i in indices],
            )
        out = Loaded([], [] if self.masks is not None else None, [])
        for i in indices:
            mask_path = self.masks[i] if self.masks else None
            file_labels = self.labels if self.label_map is None else self.label_map.source
            image, mask, notes = _load_pair(
                self.files[i], mask_path, self.size, self.resize, file_labels, self.ids, remap
            )
            out.images.append(image)
            out.names.append(self.files[i].stem)
            out.notes += notes
            if out.truth is not None and mask is not None:
                out.truth.append(mask)
        return out


def _link_problem(entry: Path) -> str | None:
    """Why a symbolic link cannot be read (None: not a link, or a working one)."""
    if not entry.is_symlink():
        return None
    try:
        entry.stat()
    except OSError as exc:
        return "symlink loop" if exc.errno == errno.ELOOP else f"broken symlink to {os.readlink(entry)}"
    return None


def _folder_files(folder: Path, suffixes: Sequence[str] = tuple(FORMATS)) -> tuple[list[Path], list[str]]:
    """The regular files of ``folder`` with one of ``suffixes``, sorted, and every other entry
    with the reason it is left out; two files with one name (``a.png``, ``a.jpg``) are refused,
    as results name images by file stem."""
    files, skipped = [], []
    for entry in sorted(folder.iterdir()):
        problem = _link_problem(entry)
        if problem:
            skipped.append(f"{entry.name} ({problem})")
        elif entry.is_dir():
            skipped.append(f"{entry.name}/ (a folder: not searched)")
        elif entry.suffix.lower() not in suffixes:
            skipped.append(entry.name)
        elif not entry.is_file():
            skipped.append(f"{entry.name} (not a regular file)")
        else:
            files.append(entry)
    seen: dict[str, Path] = {}
    for file in files:
        if file.stem in seen:
            raise ImageError(
                f"{folder} holds {seen[file.stem].name} and {file.name}, both named {file.stem!r}: "
                f"results name images by file name without extension; rename or remove one"
            )
        seen[file.stem] = file
    return files, skipped


def _voc_root(path: Path) -> Path:
    for root in (path, path.parent, path.parent.parent):
        if (root / "VOCdevkit" / "VOC2012").is_dir():
            return root
    raise ImageError(f"{path} is not {VOC_LAYOUT}")


def _voc_ids(split: Path) -> list[str]:
    """The ids of ``val.txt``, one a line as torchvision reads them; blank lines name nothing and
    are passed over, while a repeated id or one that is not a plain file name is refused."""
    with open(split) as f:
        ids = [line.strip() for line in f.readlines()]
    first: dict[str, int] = {}
    for number, name in enumerate(ids, 1):
        if not name:
            continue
        if name in (".", "..") or Path(name).name != name or "\\" in name:
            raise ImageError(
                f"{split} line {number}: id {name!r} is not a plain file name; ids name files inside "
                f"JPEGImages/ and SegmentationClass/, never elsewhere"
            )
        if name in first:
            raise ImageError(
                f"{split} lists {name!r} twice (lines {first[name]} and {number}): the image would be "
                f"attacked and averaged twice; remove the repeat"
            )
        first[name] = number
    return ids


def _voc(path: Path) -> tuple[list[Path], list[Path]]:
    from torchvision.datasets import VOCSegmentation

    root = _voc_root(path)
    try:
        voc = VOCSegmentation(str(root), year="2012", image_set="val", download=False)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ImageError(f"{path} is not {VOC_LAYOUT} ({exc})") from None
    ids = _voc_ids(root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt")
    if len(ids) != len(voc.images):  # torchvision read the file differently: do not guess which line is which
        raise ImageError(f"{path}: val.txt lists {len(ids)} lines but torchvision read {len(voc.images)} images")
    files = [Path(p) for p, name in zip(voc.images, ids) if name]
    masks = [Path(p) for p, name in zip(voc.masks, ids) if name]
    missing = [str(p) for p in files + masks if not p.is_file()]
    if missing or not files:
        raise ImageError(
            f"{path} is not {VOC_LAYOUT}: "
            + (f"{len(missing)} listed files are missing, e.g. {missing[0]}" if missing else "val.txt lists no images")
        )
    return files, masks


def _pairs(path: Path) -> tuple[list[Path], list[Path], list[str]]:
    if not (path / "images").is_dir() or not (path / "masks").is_dir():
        raise ImageError(f"{path} must hold images/NAME.(jpg|png) and masks/NAME.png")
    images, image_skips = _folder_files(path / "images")
    mask_files, mask_skips = _folder_files(path / "masks", (".png",))
    masks = {p.stem: p for p in mask_files}
    paired = [p for p in images if p.stem in masks]
    named = {p.stem for p in images}
    skipped = (
        [f"images/{entry}" for entry in image_skips]
        + [f"masks/{entry}" for entry in mask_skips]
        + [f"images/{p.name} (no masks/{p.stem}.png)" for p in images if p.stem not in masks]
        + [f"masks/{p.name} (no image)" for p in mask_files if p.stem not in named]
    )
    if not paired:
        raise ImageError(f"{path}/images holds no image with a mask in {path}/masks")
    return paired, [masks[p.stem] for p in paired], skipped


CITYSCAPES_ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")


def _cityscapes(path: Path) -> tuple[list[Path], list[Path], list[str]]:
    """Cityscapes val (fine), listed in name order (city, then file): ``leftImg8bit/val/CITY/*_leftImg8bit.png``
    with ``gtFine/val/CITY/*_gtFine_labelIds.png``. Only read: the official zip archives are never
    extracted here (torchvision's ``Cityscapes`` would unpack them into the user's dataset folder)."""
    images, masks = path / "leftImg8bit" / "val", path / "gtFine" / "val"
    if not images.is_dir() or not masks.is_dir():
        zips = [path / name for name in CITYSCAPES_ZIPS if (path / name).is_file()]
        if zips:
            command = " && ".join(f"unzip -q {shlex.quote(str(z))} -d {shlex.quote(str(path))}" for z in zips)
            raise ImageError(
                f"{path} holds the Cityscapes archives ({', '.join(z.name for z in zips)}), not their folders; "
                f"segattack never writes into a dataset folder: extract them first ({command})"
            )
        raise ImageError(f"{path} is not a Cityscapes folder (leftImg8bit/val, gtFine/val)")
    files, mask_files, skipped = [], [], []
    for city in sorted(p for p in images.iterdir() if p.is_dir()):
        listed, other = _folder_files(city, (".png",))
        skipped += [f"leftImg8bit/val/{city.name}/{entry}" for entry in other]
        for image in listed:
            if not image.name.endswith("_leftImg8bit.png"):
                skipped.append(f"leftImg8bit/val/{city.name}/{image.name}")
                continue
            mask = masks / city.name / image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
            if mask.is_file():
                files.append(image)
                mask_files.append(mask)
            else:
                skipped.append(f"leftImg8bit/val/{city.name}/{image.name} (no gtFine/val/{city.name}/{mask.name})")
    if not files:
        raise ImageError(f"{images} holds no *_leftImg8bit.png image with its *_gtFine_labelIds.png in {masks}")
    return files, mask_files, skipped


def _ade20k(path: Path) -> tuple[list[Path], list[Path], list[str]]:
    root = path / "ADEChallengeData2016" if (path / "ADEChallengeData2016").is_dir() else path
    images, annotations = root / "images" / "validation", root / "annotations" / "validation"
    if not images.is_dir() or not annotations.is_dir():
        raise ImageError(f"{path} is not ADEChallengeData2016 (images/validation, annotations/validation)")
    files, skipped = _folder_files(images, (".jpg",))
    masks = [annotations / f"{p.stem}.png" for p in files]
    kept = [i for i, m in enumerate(masks) if m.is_file()]
    skipped += [f"images/validation/{files[i].name} (no annotation)" for i in range(len(files)) if i not in kept]
    if not kept:
        raise ImageError(f"{images} holds no image with an annotation in {annotations}")
    return [files[i] for i in kept], [masks[i] for i in kept], skipped


def source_labels(source: str) -> LabelSpace:
    """The label space of an image set's masks, from its spec alone (a classes.txt is read)."""
    if source.startswith("cityscapes:"):
        return CITYSCAPES
    if source.startswith("ade20k:"):
        return ADE20K
    classes = Path(source[6:]) / "classes.txt"
    if source.startswith("pairs:") and classes.is_file():
        try:
            return from_classes_file(classes)
        except (ValueError, OSError) as exc:
            raise ImageError(str(exc)) from None
    return VOC


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def resolve_source(source: str) -> str:
    """The image-set spec ``source`` with its path made absolute (``~`` expanded, symbolic links
    followed): ``voc:rel`` -> ``voc:/abs``, ``pairs:rel`` -> ``pairs:/abs``, a folder -> its absolute
    path; ``scenes`` and ``photos`` unchanged. A relative spec names different images from another
    working directory (a later run, a Dask worker): hash and send this form instead."""
    if source in ("scenes", "photos"):
        return source
    for prefix in DATASET_PREFIXES:
        if source.startswith(prefix):
            if not source[len(prefix) :].strip():
                raise ImageError(f"{prefix}PATH needs a folder after {prefix!r}, got {source!r}")
            return prefix + _absolute(source[len(prefix) :])
    if not source.strip():
        raise ImageError(f"image set must be {SOURCE_FORMS}; got ''")
    return _absolute(source)


def image_set(source: str, size: int, resize: Resize = "crop", seed: int = 0) -> ImageSet:
    """The image set named ``source`` (see the module docstring), listed but not yet read."""
    if resize not in RESIZES:
        raise ImageError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
    if size < MIN_SIDE:
        raise ImageError(f"image size must be >= {MIN_SIDE} px, got {size}")
    if source == "scenes":
        return ImageSet(source, size, "crop", seed=seed)
    if source == "photos":
        return ImageSet(source, size, resize, [photos_dir() / name for name in STUDY_PHOTOS])
    resolved = resolve_source(source)  # listed files stay valid if the working directory changes
    if source.startswith("voc:"):
        files, masks = _voc(Path(resolved[4:]))
        return ImageSet(source, size, resize, files, masks)
    if source.startswith("pairs:"):
        files, masks, skipped = _pairs(Path(resolved[6:]))
        return ImageSet(source, size, resize, files, masks, skipped=skipped, labels=source_labels(resolved))
    if source.startswith("cityscapes:"):
        files, masks, skipped = _cityscapes(Path(resolved[11:]))
        return ImageSet(source, size, resize, files, masks, skipped=skipped, labels=CITYSCAPES, ids=cityscapes_ids())
    if source.startswith("ade20k:"):
        files, masks, skipped = _ade20k(Path(resolved[7:]))
        return ImageSet(source, size, resize, files, masks, skipped=skipped, labels=ADE20K, ids=ade20k_ids())
    folder = Path(resolved)
    if not folder.is_dir():
        raise ImageError(f"image set must be {SOURCE_FORMS}; {folder} is none of them")
    files, skipped = _folder_files(folder)
    if not files:
        raise ImageError(f"no {', '.join(sorted(FORMATS))} images in {folder}")
    return ImageSet(source, size, resize, files, skipped=skipped)


def study_images(
    source: str, count: int, size: int, seed: int = 0, resize: Resize = "crop"
) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """The first ``count`` images of a set as one (B,3,size,size) batch, names and masks (or None)."""
    images = image_set(source, size, resize, seed)
    loaded = images.load(range(images.select(count)))
    return (torch.stack(loaded.images), loaded.names, None if loaded.truth is None else torch.stack(loaded.truth))
