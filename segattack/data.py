"""The study's inputs: image files, the shipped photos, held-out scenes, and target masks.

Every loader returns (B,3,H,W) float tensors in [0,1]. Targets follow the paper: the target mask
is the model's prediction on another image of the set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError

from .paths import photos_dir
from .scenes import scene_batch

STUDY_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
MAX_SIDE = 8192


class ImageError(ValueError):
    """An input image that cannot be used: missing, not an image, wrong mode or size."""


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Load an 8-bit RGB image as a (3,size,size) tensor in [0,1]: centre square crop, then resize.

    Other modes (grayscale, RGBA, 16-bit, palette) are refused rather than silently converted, so a
    study never attacks an image that differs from the file it names.
    """
    path = Path(path)
    if size < 16:
        raise ImageError(f"image size must be >= 16 px, got {size}")
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if not path.is_file():
        raise ImageError(f"{path} is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            mode, (w, h) = img.mode, img.size
            if mode != "RGB":
                raise ImageError(f"{path} has mode {mode}; segattack needs 8-bit RGB (convert it first, "
                                 f"e.g. PIL's Image.convert('RGB'))")
            if min(w, h) < 1 or max(w, h) > MAX_SIDE:
                raise ImageError(f"{path} is {w}x{h}; sides must be between 1 and {MAX_SIDE} px")
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
            img = img.crop(box).resize((size, size), Image.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path} is not a readable image: {exc}") from None
    return data.view(size, size, 3).permute(2, 0, 1).float().div(255)


def load_images(paths: list[str | os.PathLike], size: int) -> torch.Tensor:
    """A (B,3,size,size) batch from image files."""
    if not paths:
        raise ImageError("no image files given")
    return torch.stack([load_image(p, size) for p in paths])


def study_images(source: str, count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """Images, names and ground-truth masks (or None) of a named image set.

    ``"scenes"``: held-out synthetic scenes (the embedded models' domain; with ground truth).
    ``"photos"``: the shipped CC0/public-domain photos (the real weights' domain), at most 4.
    A directory path: its image files in name order.
    """
    if count <= 0:
        raise ValueError(f"the number of images must be > 0, got {count}")
    if source == "scenes":
        images, masks = scene_batch(seed, "heldout", 0, count, size)
        return images, [f"scene {i}" for i in range(count)], masks
    if source == "photos":
        if count > len(STUDY_PHOTOS):
            raise ImageError(f"the 'photos' set holds {len(STUDY_PHOTOS)} images; asked for {count}")
        files = [photos_dir() / name for name in STUDY_PHOTOS[:count]]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise ImageError(f"image set must be 'scenes', 'photos' or a directory; {folder} is none of them")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})[:count]
        if not files:
            raise ImageError(f"no .png/.jpg/.bmp images in {folder}")
    return load_images(files, size), [f.stem for f in files], None


def target_masks(clean_pred: torch.Tensor, scheme: Literal["single", "roll"] = "single",
                 target_index: int = 1) -> torch.Tensor:
    """Target masks from clean predictions (B,H,W).

    ``"single"`` (the paper's figures): every image gets the prediction of image ``target_index``.
    ``"roll"``: image i gets the prediction of image i+1 (mod B), so no image targets itself.
    """
    b = clean_pred.shape[0]
    if scheme == "single":
        if not 0 <= target_index < b:
            raise ValueError(f"target_index {target_index} is outside the batch of {b} images")
        return clean_pred[target_index].expand_as(clean_pred).clone()
    if scheme == "roll":
        if b < 2:
            raise ValueError("the 'roll' target scheme needs at least 2 images")
        return clean_pred.roll(-1, dims=0).clone()
    raise ValueError(f"target scheme must be 'single' or 'roll', got {scheme!r}")
