"""Shared fixtures: a tiny segmentation net trained in a second on 32 px scenes, and what the slow
end-to-end tests share: the tiny report and a local-cluster report, each built once per test run."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# No test reaches a real host: the Hugging Face hub and any HTTP(S) proxy are a closed loopback port (read when
# huggingface_hub is imported); loopback itself (Dask, the browser test's pages) goes direct.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
for _proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ[_proxy] = "http://127.0.0.1:9"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
os.environ.pop("HF_HUB_OFFLINE", None)

import pytest
import torch
from PIL import Image
from torch import nn

from segattack.data.classes import voc_palette
from segattack.data.scenes import render_scene, scene_batch
from segattack.engine.store import atomic_save
from segattack.models import checkpoints
from segattack.models.backbones import build_network
from segattack.models.wrapper import wrap_model

ROOT = Path(__file__).resolve().parent.parent


class TinySegNet(nn.Module):
    """Three dilated convolutions: enough to learn the scenes' colours at 32 px, fast on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 24, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(24, 21, 1),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


@pytest.fixture(scope="session")
def tiny_model():
    """A TinySegNet trained for 150 steps (seeded), wrapped like the study's models."""
    torch.manual_seed(0)
    net = TinySegNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(150):
        images, masks = scene_batch(0, "train", step * 8, 8, 32)
        loss = nn.functional.cross_entropy(net(images)["out"], masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return wrap_model(net, "tiny test net", normalize=False)


@pytest.fixture(scope="session")
def scene_inputs():
    """Four held-out 32 px scenes and their ground-truth masks."""
    return scene_batch(0, "heldout", 0, 4, 32)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """An (untrained) int8 MobileNetV3 DeepLabV3 checkpoint whose metadata says 48 px."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "mnv3.pt"
    meta = {"heldout_miou": 0.1, "image_size": 48, "description": "untrained test network"}
    atomic_save(
        checkpoints.pack(build_network("mobilenet_v3_large").state_dict(), "mobilenet_v3_large", meta, int8=True), path
    )
    return path


@pytest.fixture(scope="session")
def linear_model():
    """logits = W x + b per pixel: class c in {0,1,2} scores channel c, every other class -10 (hand-checkable)."""
    conv = nn.Conv2d(3, 21, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(-10.0)
        conv.bias[:3] = 0.0
        for c in range(3):
            conv.weight[c, c] = 1.0
    return wrap_model(conv, normalize=False)


def write_voc(root, count: int = 5, size: int = 48):
    """A Pascal VOC 2012 folder (torchvision's layout) of ``count`` held-out scenes: JPEG images of
    alternating landscape/portrait shape, palette masks with a 255 border, and val.txt."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_palette().flatten().tolist() + [224, 224, 192] * (256 - 21)
    names = []
    for i in range(count):
        image, mask = render_scene(0, "heldout", i, size)
        keep = slice(0, size - 8)
        image, mask = (image[:, keep], mask[:, keep]) if i % 2 == 0 else (image[keep], mask[keep])
        mask = mask.copy()
        mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 255, 255, 255, 255  # void border, as VOC draws
        name = f"2007_{i:06d}"
        Image.fromarray(image).save(base / "JPEGImages" / f"{name}.jpg", quality=98)
        label = Image.fromarray(mask, mode="P")
        label.putpalette(palette)
        label.save(base / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="session")
def voc_folder(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc"))


def chromium_path() -> str | None:
    """Headless Chromium for tests/test_browser.py: ``$SEGATTACK_CHROMIUM`` or Debian's ``chromium``."""
    return os.environ.get("SEGATTACK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_MISSING = (
    "headless Chromium is needed by tests/test_browser.py and is missing: `make test` installs it "
    "(apt-get install chromium, as root or through sudo), or set SEGATTACK_CHROMIUM to a Chromium executable"
)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop before any test runs when a selected test needs a program that is missing (a skipped
    browser check would pass without looking; a failure after 20 minutes of tests wastes them)."""
    if not chromium_path() and any(item.path.name == "test_browser.py" for item in session.items):
        pytest.exit(CHROMIUM_MISSING, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if not path:
        pytest.fail(CHROMIUM_MISSING)
    return path


def fingerprint(folder: Path) -> dict[str, str]:
    """Each file under ``folder`` (relative path) and the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@contextlib.contextmanager
def read_only(folder: Path, name: str) -> Iterator[None]:
    """Fail when a file under ``folder`` changed by the end of the block (the test run)."""
    before = fingerprint(folder)
    yield
    changed = sorted(set(before.items()) ^ set(fingerprint(folder).items()))
    assert not changed, f"a test changed the shared {name} (copy it before writing): {changed[:5]}"


@dataclass(frozen=True)
class BuiltReport:
    """A report folder built once per test run, and the state of each task its command printed."""

    out: Path
    states: dict[str, str]


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltReport]:
    """The tiny profile's whole report (4 runs, the studies, index.html), built once per test run by
    the report command as a user runs it (on the in-process cluster), and read by every test that
    reads a report. Read-only: a test that changes a file under it fails at the end of the run; a
    test that writes works on a copy (``shutil.copytree``), never on a rebuild."""
    from segattack.cli import main

    out = tmp_path_factory.mktemp("tiny-report")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["report", "--profile", "tiny", "--out", str(out), "--cluster", "inprocess"])
    assert code == 0, printed.getvalue()
    (line,) = [text for text in printed.getvalue().splitlines() if text.startswith("runs: ")]
    states = dict(item.rsplit(" ", 1) for item in line.removeprefix("runs: ").split(", "))
    with read_only(out, "tiny report"):
        yield BuiltReport(out, states)


@dataclass(frozen=True)
class ReportCommand:
    """What one ``segattack report`` command, run in a process of its own, left: its folder, exit
    status and standard error."""

    out: Path
    returncode: int
    stderr: str


@pytest.fixture(scope="session")
def local_cluster_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportCommand]:
    """One report command on the default (local) Dask cluster, as a user types it: MobileNetV3, the
    worst case of PGD and SegPGD (``ensemble:pgd,segpgd``), no studies. Read by the ensemble test and
    by the test of what the command prints; read-only like ``tiny_report``."""
    out = tmp_path_factory.mktemp("local-report")
    command = ["report", "--profile", "tiny", "--out", str(out), "--backbones", "mobilenet_v3_large"]
    command += ["--attacks", "ensemble:pgd,segpgd", "--studies", "none"]  # --cluster local: the default
    run = subprocess.run(
        [sys.executable, "-m", "segattack", *command], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    with read_only(out, "local-cluster report"):
        yield ReportCommand(out, run.returncode, run.stderr)
