"""Deterministic synthetic segmentation scenes: the training and held-out data of the embedded models.

Each of the 20 VOC object classes is a family of shape x texture x colour: five shapes (ellipse,
rectangle, triangle, cross, ring), four textures (shaded, stripes, checker, dots) and a class hue.
No single cue names a class: hues of neighbouring classes overlap under jitter, and every shape and
texture is shared by four classes. Objects vary in scale, aspect, rotation and colour, overlap one
another (partial occlusion) and sit on crops of the CC0/public-domain photos in ``data/photos`` or
on procedural clutter.

A scene is a pure function of ``(seed, split, index, size)``: same arguments, same bytes.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segattack.data.classes import NUM_CLASSES
from segattack.util.paths import photos_dir

GENERATOR_VERSION = 1
SPLITS = {"train": 0, "heldout": 1}
SHAPES = ("ellipse", "rectangle", "triangle", "cross", "ring")
TEXTURES = ("shaded", "stripes", "checker", "dots")


def class_recipe(label: int) -> tuple[str, str, float]:
    """(shape, texture, hue in [0,1)) of object class ``label`` in 1..20."""
    if not 1 <= label < NUM_CLASSES:
        raise ValueError(f"object class ids are 1..{NUM_CLASSES - 1}, got {label}")
    k = label - 1
    return SHAPES[k % 5], TEXTURES[k // 5], ((k * 7) % 20) / 20.0


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a unit-sized shape in object coordinates (u, v)."""
    if shape == "ellipse":
        return u * u + v * v <= 1.0
    if shape == "rectangle":
        return (np.abs(u) <= 0.95) & (np.abs(v) <= 0.6)
    if shape == "triangle":
        return (v >= -0.55) & (v <= 1.0 - np.sqrt(3.0) * np.abs(u))
    if shape == "cross":
        return ((np.abs(u) <= 0.32) & (np.abs(v) <= 1.0)) | ((np.abs(u) <= 1.0) & (np.abs(v) <= 0.32))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.3)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, up: np.ndarray, vp: np.ndarray, period: float) -> np.ndarray:
    """Texture intensity in [0,1] from object coordinates in pixels (it rotates with the object)."""
    if texture == "shaded":
        return 0.5 + 0.5 * np.clip(up / (3 * period), -1, 1)
    if texture == "stripes":
        return (np.sin(2 * np.pi * up / period) > 0).astype(np.float32)
    if texture == "checker":
        return ((np.floor(up / period) + np.floor(vp / period)) % 2).astype(np.float32)
    if texture == "dots":
        du = np.mod(up, period) - period / 2
        dv = np.mod(vp, period) - period / 2
        return (du * du + dv * dv <= (period / 3.2) ** 2).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}")


@lru_cache(maxsize=1)
def _background_photos() -> tuple[np.ndarray, ...]:
    """The shipped photos as float32 RGB arrays in [0,1] (grayscale textures are replicated)."""
    files = sorted(p for p in Path(photos_dir()).iterdir() if p.suffix.lower() in {".png", ".jpg"})
    return tuple(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in files)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo crop (desaturated, contrast-reduced) or smooth procedural clutter, (size, size, 3)."""
    photos = _background_photos()
    if photos and rng.random() < 0.7:
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray((photo[y : y + side, x : x + side] * 255).astype(np.uint8))
        bg = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
    else:
        coarse = rng.random((4 + int(rng.integers(5)),) * 2 + (3,)).astype(np.float32)
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        bg = np.asarray(img, dtype=np.float32) / 255.0
    gray = bg.mean(axis=2, keepdims=True)
    keep = rng.uniform(0.2, 0.6)
    bg = keep * bg + (1 - keep) * gray
    return 0.2 + 0.6 * bg


def render_scene(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: an (size, size, 3) uint8 RGB image and an (size, size) uint8 mask in 0..20."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if size < 16:
        raise ValueError(f"scene size must be >= 16 px, got {size}")
    rng = np.random.default_rng(np.random.SeedSequence([GENERATOR_VERSION, seed, SPLITS[split], index]))
    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    for _ in range(int(rng.integers(1, 4))):
        label = int(rng.integers(1, NUM_CLASSES))
        shape, texture, hue = class_recipe(label)
        radius = size * rng.uniform(0.16, 0.32)
        aspect = rng.uniform(0.75, 1.33)
        theta = rng.uniform(0, 2 * np.pi)
        cx, cy = rng.uniform(0.15, 0.85, size=2) * size
        dx, dy = xx - cx, yy - cy
        up = dx * np.cos(theta) + dy * np.sin(theta)
        vp = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = _shape_mask(shape, up / (radius * aspect), vp / (radius / aspect))
        period = max(3.0, size * rng.uniform(0.045, 0.075))
        t = _texture(texture, up, vp, period)[..., None]
        h = (hue + rng.normal(0, 0.02)) % 1.0
        light = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.55, 0.95), rng.uniform(0.75, 1.0)))
        dark = light * rng.uniform(0.35, 0.55)
        texel = t * light + (1 - t) * dark
        image = np.where(inside[..., None], texel, image)
        mask[inside] = label
    image = image * rng.uniform(0.85, 1.15) + rng.normal(0, 0.025, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def scene_batch(seed: int, split: str, start: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes ``start .. start+count-1`` as a float (B,3,H,W) batch in [0,1] and a long (B,H,W) mask."""
    pairs = [render_scene(seed, split, start + i, size) for i in range(count)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float().div_(255)
    masks = torch.from_numpy(np.stack([p[1] for p in pairs])).long()
    return images.contiguous(), masks
