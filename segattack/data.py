"""The study's inputs: image sets read a few images at a time, and the target masks built from them.

An image set (:func:`image_set`) is a named source of RGB images, with ground-truth masks where
the source has them:

- ``"scenes"``: the embedded models' held-out synthetic scenes (endless, with ground truth);
- ``"photos"``: the four shipped CC0/public-domain photos (the real weights' domain);
- ``"voc:PATH"``: Pascal VOC 2012 val through ``torchvision.datasets.VOCSegmentation`` (the user's
  own copy, never downloaded), masks with their 255 borders kept as ignore;
- ``"pairs:PATH"``: ``PATH/images/NAME.(jpg|png)`` with ``PATH/masks/NAME.png`` (palette or 8-bit
  class ids 0..20, 255 = ignore);
- a folder of images (no ground truth).

Files are checked from their header before decoding (format against extension, size, mode, bit
depth, frames) and refused with a message naming the file; EXIF orientation is applied as every
viewer does and noted. ``resize`` is the named resize protocol: ``"crop"`` (centre square crop,
then ``size`` x ``size``), ``"shorter"`` (shorter side to ``size``, aspect kept: the transforms
of torchvision's segmentation weights and of its reference evaluation) or ``"squash"`` (the whole
image to ``size`` x ``size``, aspect not kept: reference [5]'s ``T.Resize((520, 520))``). Masks
follow the image with nearest-neighbour resampling.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .classes import IGNORE_INDEX, NUM_CLASSES
from .paths import photos_dir
from .scenes import render_scene

STUDY_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}
MAX_SIDE, MIN_SIDE = 8192, 16
Resize = Literal["crop", "shorter", "squash"]
RESIZES = ("crop", "shorter", "squash")
VOC_LAYOUT = ("a Pascal VOC 2012 folder: PATH/VOCdevkit/VOC2012/ with JPEGImages/, SegmentationClass/ and "
              "ImageSets/Segmentation/val.txt (torchvision's VOCSegmentation layout; PATH may also be the "
              "VOCdevkit or VOC2012 folder itself)")


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
    if getattr(img, "n_frames", 1) > 1:
        img.close()
        raise ImageError(f"{path} holds {img.n_frames} frames (animation or multi-page); give one image per file")
    return img


def _open_rgb(path: Path) -> Image.Image:
    """An image file whose header says 8-bit RGB (still undecoded)."""
    img = _open(path)
    if img.mode != "RGB" or any(";16" in str(tile.args) for tile in img.tile):
        mode = "16-bit RGB" if img.mode == "RGB" else img.mode
        img.close()
        raise ImageError(f"{path} has mode {mode}; segattack needs 8-bit RGB (convert it first, "
                         f"e.g. PIL's Image.convert('RGB'))")
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


def _load_pair(path: Path, mask_path: Path | None, size: int,
               resize: Resize) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    if size < MIN_SIDE:
        raise ImageError(f"image size must be >= {MIN_SIDE} px, got {size}")
    img, note = _read_rgb(path)
    notes = [note] if note else []
    box, out = _geometry(*img.size, size, resize)
    if min(box[2] - box[0], box[3] - box[1]) < min(out):
        notes.append(f"{path.name}: upscaled from {img.size[0]}x{img.size[1]}")
    data = np.asarray(img.crop(box).resize(out, Image.BILINEAR), dtype=np.uint8)
    image = torch.from_numpy(data.copy()).permute(2, 0, 1).float().div(255)
    mask = None
    if mask_path is not None:
        mask = _load_mask(mask_path, img.size, box, out)
    return image, mask, notes


def _load_mask(path: Path, image_size: tuple[int, int], box: tuple[int, int, int, int],
               out: tuple[int, int]) -> torch.Tensor:
    img = _open(path)
    if img.mode not in ("P", "L"):
        img.close()
        raise ImageError(f"mask {path} has mode {img.mode}; masks are palette or 8-bit images of class ids")
    if img.size != image_size:
        img.close()
        raise ImageError(f"mask {path} is {img.size[0]}x{img.size[1]}, its image {image_size[0]}x{image_size[1]}")
    ids = np.asarray(img.crop(box).resize(out, Image.NEAREST), dtype=np.uint8)
    bad = np.setdiff1d(np.unique(ids), [*range(NUM_CLASSES), IGNORE_INDEX])
    if bad.size:
        raise ImageError(f"mask {path} holds class ids {bad[:5].tolist()}; expected 0..{NUM_CLASSES - 1} "
                         f"and {IGNORE_INDEX} (ignore)")
    return torch.from_numpy(ids.astype(np.int64))


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
        return num_images or self.count

    def check(self, count: int) -> None:
        """Read the headers of the first ``count`` files (and masks): a bad file is refused before any work."""
        for i in range(count if self.files is not None else 0):
            _open_rgb(self.files[i]).close()
            if self.masks is not None:
                _open(self.masks[i]).close()

    def load(self, indices: Sequence[int]) -> Loaded:
        """The images (and masks) at ``indices``."""
        if self.files is None:
            scenes = [render_scene(self.seed, "heldout", i, self.size) for i in indices]
            return Loaded([torch.from_numpy(img).permute(2, 0, 1).float().div(255) for img, _ in scenes],
                          [torch.from_numpy(mask).long() for _, mask in scenes], [f"scene {i}" for i in indices])
        out = Loaded([], [] if self.masks is not None else None, [])
        for i in indices:
            image, mask, notes = _load_pair(self.files[i], self.masks[i] if self.masks else None, self.size,
                                            self.resize)
            out.images.append(image)
            out.names.append(self.files[i].stem)
            out.notes += notes
            if out.truth is not None:
                out.truth.append(mask)
        return out


def _folder_files(folder: Path) -> tuple[list[Path], list[str]]:
    entries = sorted(p for p in folder.iterdir() if p.is_file())
    files = [p for p in entries if p.suffix.lower() in FORMATS]
    return files, [p.name for p in entries if p not in files]


def _voc_root(path: Path) -> Path:
    for root in (path, path.parent, path.parent.parent):
        if (root / "VOCdevkit" / "VOC2012").is_dir():
            return root
    raise ImageError(f"{path} is not {VOC_LAYOUT}")


def _voc(path: Path) -> tuple[list[Path], list[Path]]:
    from torchvision.datasets import VOCSegmentation

    root = _voc_root(path)
    try:
        voc = VOCSegmentation(str(root), year="2012", image_set="val", download=False)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ImageError(f"{path} is not {VOC_LAYOUT} ({exc})") from None
    files, masks = [Path(p) for p in voc.images], [Path(p) for p in voc.masks]
    missing = [str(p) for p in files + masks if not p.is_file()]
    if missing or not files:
        raise ImageError(f"{path} is not {VOC_LAYOUT}: " + (f"{len(missing)} listed files are missing, e.g. "
                                                            f"{missing[0]}" if missing else "val.txt lists no images"))
    return files, masks


def _pairs(path: Path) -> tuple[list[Path], list[Path], list[str]]:
    if not (path / "images").is_dir() or not (path / "masks").is_dir():
        raise ImageError(f"{path} must hold images/NAME.(jpg|png) and masks/NAME.png")
    images, skipped = _folder_files(path / "images")
    masks = {p.stem: p for p in (path / "masks").iterdir() if p.suffix.lower() == ".png"}
    paired = [p for p in images if p.stem in masks]
    skipped += [f"images/{p.name} (no masks/{p.stem}.png)" for p in images if p.stem not in masks]
    if not paired:
        raise ImageError(f"{path}/images holds no image with a mask in {path}/masks")
    return paired, [masks[p.stem] for p in paired], skipped


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
    if source.startswith("voc:"):
        files, masks = _voc(Path(source[4:]).expanduser())
        return ImageSet(source, size, resize, files, masks)
    if source.startswith("pairs:"):
        files, masks, skipped = _pairs(Path(source[6:]).expanduser())
        return ImageSet(source, size, resize, files, masks, skipped=skipped)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ImageError(f"image set must be 'scenes', 'photos', 'voc:PATH', 'pairs:PATH' or a folder; "
                         f"{folder} is none of them")
    files, skipped = _folder_files(folder)
    if not files:
        raise ImageError(f"no {', '.join(sorted(FORMATS))} images in {folder}")
    return ImageSet(source, size, resize, files, skipped=skipped)


def study_images(source: str, count: int, size: int, seed: int = 0,
                 resize: Resize = "crop") -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """The first ``count`` images of a set as one (B,3,size,size) batch, names and masks (or None)."""
    images = image_set(source, size, resize, seed)
    loaded = images.load(range(images.select(count)))
    return (torch.stack(loaded.images), loaded.names,
            None if loaded.truth is None else torch.stack(loaded.truth))


def target_masks(clean_pred: torch.Tensor, scheme: Literal["single", "roll"] = "single",
                 target_index: int = 1) -> torch.Tensor:
    """Target masks from the clean predictions (B,H,W) of a whole set.

    ``"single"`` (the paper's figures): every image gets the prediction of image ``target_index``.
    ``"roll"``: image i gets the prediction of image i+1 (mod B), so no image targets itself.
    """
    b = clean_pred.shape[0]
    sources = target_sources(range(b), b, scheme, target_index)
    return clean_pred[sources].clone()


def target_sources(indices: Sequence[int], total: int, scheme: str, target_index: int) -> list[int]:
    """For each image index, the index of the image whose clean prediction is its target, defined
    over the whole set, so splitting a set into shards never changes an image's target."""
    if scheme == "single":
        if not 0 <= target_index < total:
            raise ValueError(f"target_index {target_index} is outside the set of {total} images")
        return [target_index for _ in indices]
    if scheme == "roll":
        if total < 2:
            raise ValueError("the 'roll' target scheme needs at least 2 images")
        return [(i + 1) % total for i in indices]
    raise ValueError(f"target scheme must be 'single' or 'roll', got {scheme!r}")
