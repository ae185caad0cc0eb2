"""Bad input: one clear error each, the exit code, and no earlier result damaged."""

from __future__ import annotations

import errno
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segattack import checkpoints
from segattack.attacks import AttackDiverged, asma, targeted_pgd
from segattack.cli import main
from segattack.data import ImageError, load_image
from segattack.models import build_network, wrap_model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small checkpoint, a folder of bad images, and an earlier finished run to protect."""
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    ckpt = root / "mnv3.pt"
    checkpoints.atomic_save(checkpoints.pack(build_network("mobilenet_v3_large").state_dict(), "mobilenet_v3_large",
                                             {"image_size": 48, "heldout_miou": 0.1}, int8=True), ckpt)
    images = root / "images"
    images.mkdir()
    for name, mode in (("gray", "L"), ("rgba", "RGBA"), ("sixteen", "I;16"), ("palette", "P")):
        (images / name).mkdir()
        Image.new(mode, (32, 32)).save(images / name / "a.png")
    (images / "text").mkdir()
    (images / "text" / "a.png").write_text("not an image")
    (images / "empty").mkdir()
    (images / "empty" / "a.png").write_bytes(b"")
    (images / "huge").mkdir()
    Image.fromarray(np.zeros((4, 9000, 3), np.uint8)).save(images / "huge" / "a.png")
    (images / "nothing").mkdir()
    earlier = root / "earlier"
    assert main(["attack", "--backbone", "mobilenet_v3_large", "--attack", "pgd", "--weights", str(ckpt),
                 "--out", str(earlier), "--num-images", "2", "--steps", "1"]) == 0
    evil = root / "evil.pt"
    torch.save({"x": Path.cwd}, evil)  # a pickle of a callable: not weights
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    return {"root": root, "ckpt": ckpt, "images": images, "earlier": earlier, "evil": evil, "corrupt": corrupt}


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


CLI_CASES = [
    # (id, extra argv (placeholders filled from the workspace), attack, expected message)
    ("missing image folder", ["--images", "{root}/absent"], "pgd", "is none of them"),
    ("empty image folder", ["--images", "{images}/nothing"], "pgd", "no .png/.jpg/.bmp images"),
    ("grayscale image", ["--images", "{images}/gray"], "pgd", "has mode L"),
    ("RGBA image", ["--images", "{images}/rgba"], "pgd", "has mode RGBA"),
    ("16-bit image", ["--images", "{images}/sixteen"], "pgd", "has mode I;16"),
    ("palette image", ["--images", "{images}/palette"], "pgd", "has mode P"),
    ("not an image", ["--images", "{images}/text"], "pgd", "not a readable image"),
    ("zero-byte image", ["--images", "{images}/empty"], "pgd", "not a readable image"),
    ("huge image", ["--images", "{images}/huge"], "pgd", "sides must be between 1 and 8192"),
    ("image size too small", ["--size", "8"], "pgd", "must be >= 16"),
    ("no images", ["--num-images", "0"], "pgd", "number of images must be > 0"),
    ("eps zero", ["--eps", "0"], "pgd", "eps must be > 0, got 0.0"),
    ("eps negative", ["--eps", "-0.1"], "pgd", "eps must be > 0, got -0.1"),
    ("alpha zero", ["--alpha", "0"], "pgd", "alpha must be > 0"),
    ("steps zero", ["--steps", "0"], "pgd", "steps must be > 0, got 0"),
    ("steps negative", ["--steps", "-5"], "asma", "steps must be > 0, got -5"),
    ("beta negative", ["--beta=-1e-4"], "asma", "beta must be > 0"),
    ("tau negative", ["--tau=-1e-5"], "asma", "tau must be > 0"),
    ("target index outside batch", ["--target-index", "7"], "pgd", "outside the batch of 2 images"),
    ("unknown weights name", ["--weights", "coco"], "pgd", "unknown weights 'coco'"),
    ("missing checkpoint", ["--weights", "{root}/absent.pt"], "pgd", "checkpoint not found"),
    ("corrupt checkpoint", ["--weights", "{corrupt}"], "pgd", "not a readable PyTorch checkpoint"),
    ("code-running checkpoint", ["--weights", "{evil}"], "pgd", "refused to load"),
    ("checkpoint of another backbone", ["--weights", "{ckpt}", "--backbone", "resnet50"], "pgd",
     "holds mobilenet_v3_large weights, not resnet50"),
    ("output is a file", ["--out", "{ckpt}"], "pgd", "is a file"),
]


@pytest.mark.parametrize("case, argv, attack, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(workspace, tmp_path, capsys, case, argv, attack, message):
    out = tmp_path / "run"
    shutil.copytree(workspace["earlier"], out)
    before, ckpt_before = digest(out), workspace["ckpt"].read_bytes()
    args = ["attack", "--backbone", "mobilenet_v3_large", "--attack", attack, "--weights", str(workspace["ckpt"]),
            "--out", str(out), "--num-images", "2", "--steps", "1"]
    args += [a.format(**{k: v for k, v in workspace.items()}) for a in argv]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("segattack attack: error:") and message in err and len(err.splitlines()) == 1, err
    assert digest(out) == before and workspace["ckpt"].read_bytes() == ckpt_before


@pytest.mark.parametrize("argv, message", [
    (["--backbone", "vgg16"], "invalid choice: 'vgg16'"),
    (["--attack", "fgsm"], "invalid choice: 'fgsm'"),
])
def test_cli_unknown_names(workspace, capsys, argv, message):
    args = ["attack", "--backbone", "mobilenet_v3_large", "--attack", "pgd", "--out", str(workspace["root"] / "x")]
    with pytest.raises(SystemExit) as info:
        main(args + argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["-p", "stepz=3"], "unknown run parameters: stepz"),
])
def test_report_bad_options(tmp_path, capsys, argv, message):
    assert main(["report", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EACCES])
def test_failing_write_keeps_the_earlier_result(workspace, tmp_path, monkeypatch, capsys, failure):
    """A full disk or a read-only folder (simulated: tests run as root) fails cleanly."""
    out = tmp_path / "run"
    shutil.copytree(workspace["earlier"], out)
    before = digest(out)

    def failing_save(*args, **kwargs):
        raise OSError(failure, "simulated: " + ("No space left on device" if failure == errno.ENOSPC else "Permission denied"))

    monkeypatch.setattr(torch, "save", failing_save)
    code = main(["attack", "--backbone", "mobilenet_v3_large", "--attack", "asma", "--weights", str(workspace["ckpt"]),
                 "--out", str(out), "--num-images", "2", "--steps", "1"])
    assert code == 2 and "simulated" in capsys.readouterr().err
    assert digest(out) == before
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_library_bad_input(tmp_path):
    model = wrap_model(torch.nn.Conv2d(3, 21, 1), normalize=False)
    x, t = torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ImageError, match="is not a file"):
        load_image(tmp_path, 32)
    with pytest.raises(ValueError, match="NaN"):
        targeted_pgd(model, x.masked_fill(x > 0.5, float("nan")), t)
    with pytest.raises(ValueError, match="target masks must be"):
        asma(model, x, t[:, :4], beta=1e-3)
    with pytest.raises(ValueError, match="outside 0..20"):
        asma(model, x, t - 1, beta=1e-3)


class NaNGradient(torch.nn.Module):
    """Finite logits, NaN gradient w.r.t. the input (sqrt at 0)."""

    def forward(self, x):
        return torch.sqrt(x - x).sum(1, keepdim=True).expand(-1, 21, -1, -1)


def test_nan_gradients_stop_with_a_clear_error():
    x, t = torch.rand(1, 3, 4, 4), torch.ones(1, 4, 4, dtype=torch.long)
    with pytest.raises(AttackDiverged, match="non-finite gradients at iteration 0") as info:
        targeted_pgd(wrap_model(NaNGradient(), normalize=False), x, t, steps=3)
    assert torch.equal(info.value.partial.adv, x)
