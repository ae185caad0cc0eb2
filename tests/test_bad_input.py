"""Bad input: one clear error each, the exit code, and no earlier result damaged."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segattack.attacks import AttackDiverged, asma, targeted_pgd
from segattack.cli import main
from segattack.data.sets import ImageError, image_set, load_image
from segattack.engine.store import atomic_save, json_matches
from segattack.models import checkpoints
from segattack.models.backbones import build_network
from segattack.models.wrapper import wrap_model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small checkpoint, a folder of bad images, and an earlier finished run to protect."""
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    ckpt = root / "mnv3.pt"
    atomic_save(
        checkpoints.pack(
            build_network("mobilenet_v3_large").state_dict(),
            "mobilenet_v3_large",
            {"image_size": 48, "heldout_miou": 0.1},
            int8=True,
        ),
        ckpt,
    )
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
    for name, size in (("thin", (1, 500)), ("two", (32, 32))):
        (images / name).mkdir()
        for i in range(1 if name == "thin" else 2):
            Image.new("RGB", size).save(images / name / f"{i}.png")
    (images / "rgb16").mkdir()
    write_png16(images / "rgb16" / "a.png", 24, 24)
    (images / "animated").mkdir()
    Image.new("RGB", (24, 24), "red").save(
        images / "animated" / "a.png", save_all=True, append_images=[Image.new("RGB", (24, 24), "blue")]
    )
    (images / "webp_as_png").mkdir()
    Image.new("RGB", (24, 24)).save(images / "webp_as_png" / "a.png", format="WEBP")
    earlier = root / "earlier"
    assert (
        main(
            [
                "attack",
                "--backbone",
                "mobilenet_v3_large",
                "--attack",
                "pgd",
                "--weights",
                str(ckpt),
                "--out",
                str(earlier),
                "--num-images",
                "2",
                "--steps",
                "1",
            ]
        )
        == 0
    )
    evil = root / "evil.pt"
    torch.save({"x": Path.cwd}, evil)  # a pickle of a callable: not weights
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    return {"root": root, "ckpt": ckpt, "images": images, "earlier": earlier, "evil": evil, "corrupt": corrupt}


def write_png16(path: Path, width: int, height: int) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow reads it as 8-bit RGB, silently cutting it)."""
    raw = b"".join(b"\x00" + b"\x12\x34" * 3 * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


CLI_CASES = [
    # (id, extra argv (placeholders filled from the workspace), attack, expected message)
    ("missing image folder", ["--images", "{root}/absent"], "pgd", "is none of them"),
    ("empty image folder", ["--images", "{images}/nothing"], "pgd", "no .bmp, .jpeg, .jpg, .png, .webp images"),
    ("grayscale image", ["--images", "{images}/gray"], "pgd", "has mode L"),
    ("RGBA image", ["--images", "{images}/rgba"], "pgd", "has mode RGBA"),
    ("16-bit image", ["--images", "{images}/sixteen"], "pgd", "has mode I;16"),
    ("palette image", ["--images", "{images}/palette"], "pgd", "has mode P"),
    ("not an image", ["--images", "{images}/text"], "pgd", "not a readable image"),
    ("zero-byte image", ["--images", "{images}/empty"], "pgd", "not a readable image"),
    ("huge image", ["--images", "{images}/huge"], "pgd", "sides must be between 16 and 8192"),
    ("thin image", ["--images", "{images}/thin"], "pgd", "is 1x500; sides must be between 16 and 8192"),
    ("16-bit RGB image", ["--images", "{images}/rgb16"], "pgd", "has mode 16-bit RGB"),
    ("animated PNG", ["--images", "{images}/animated"], "pgd", "holds 2 frames"),
    ("WebP data named .png", ["--images", "{images}/webp_as_png"], "pgd", "holds WEBP data, not PNG"),
    (
        "more images than the folder holds",
        ["--images", "{images}/two", "--num-images", "8"],
        "pgd",
        "holds 2 images; asked for 8",
    ),
    ("eps infinite", ["--eps", "inf"], "pgd", "eps must be a finite number, got inf"),
    ("alpha infinite", ["--alpha", "inf"], "pgd", "alpha must be a finite number"),
    ("tau infinite", ["--tau", "inf"], "asma", "tau must be a finite number"),
    ("eps not a number", ["-a", "eps=abc"], "pgd", "eps must be a number, got 'abc'"),
    ("boolean not a boolean", ["-a", "targeted=maybe"], "pgd", "targeted must be true or false, got 'maybe'"),
    ("unknown attack keyword", ["-a", "gamma=0.1"], "pgd", "pgd has no parameter 'gamma'"),
    ("steps as an attack keyword", ["-a", "steps=3"], "pgd", "steps is a run parameter"),
    ("empty output path", ["--out", ""], "pgd", "output folder is empty text"),
    ("negative seed", ["--seed", "-1"], "pgd", "seed must be >= 0, got -1"),
    ("batch zero", ["--batch", "0"], "pgd", "batch must be >= 1, got 0"),
    ("image size too small", ["--size", "8"], "pgd", "or >= 16 px, got 8"),
    ("no images", ["--num-images", "0"], "pgd", "number of images must be > 0 for scenes"),
    ("eps zero", ["--eps", "0"], "pgd", "eps must be > 0, got 0.0"),
    ("eps negative", ["--eps", "-0.1"], "pgd", "eps must be > 0, got -0.1"),
    ("alpha zero", ["--alpha", "0"], "pgd", "alpha must be > 0"),
    ("steps zero", ["--steps", "0"], "pgd", "steps must be >= 1, got 0"),
    ("steps negative", ["--steps", "-5"], "asma", "steps must be >= 1, got -5"),
    ("beta negative", ["--beta=-1e-4"], "asma", "beta must be > 0"),
    ("tau negative", ["--tau=-1e-5"], "asma", "tau must be > 0"),
    ("target index outside the set", ["--target-index", "7"], "pgd", "outside the set of 2 images"),
    ("unknown weights name", ["--weights", "coco"], "pgd", "unknown weights 'coco'"),
    ("missing checkpoint", ["--weights", "{root}/absent.pt"], "pgd", "checkpoint not found"),
    ("corrupt checkpoint", ["--weights", "{corrupt}"], "pgd", "not a readable PyTorch checkpoint"),
    ("code-running checkpoint", ["--weights", "{evil}"], "pgd", "refused to load"),
    (
        "checkpoint of another backbone",
        ["--weights", "{ckpt}", "--backbone", "resnet50"],
        "pgd",
        "holds mobilenet_v3_large weights, not resnet50",
    ),
    ("output is a file", ["--out", "{ckpt}"], "pgd", "is a file"),
]


@pytest.mark.parametrize("case, argv, attack, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(workspace, tmp_path, capsys, case, argv, attack, message):
    out = tmp_path / "run"
    shutil.copytree(workspace["earlier"], out)
    before, ckpt_before = digest(out), workspace["ckpt"].read_bytes()
    args = [
        "attack",
        "--backbone",
        "mobilenet_v3_large",
        "--attack",
        attack,
        "--weights",
        str(workspace["ckpt"]),
        "--out",
        str(out),
        "--num-images",
        "2",
        "--steps",
        "1",
    ]
    args += [a.format(**{k: v for k, v in workspace.items()}) for a in argv]
    if "{images}/" in " ".join(argv) and "--num-images" not in argv:
        args += ["--num-images", "1"]  # these folders hold one image
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("segattack attack: error:") and message in err and len(err.splitlines()) == 1, err
    assert digest(out) == before and workspace["ckpt"].read_bytes() == ckpt_before


def test_cli_unknown_names(workspace, capsys):
    args = ["attack", "--backbone", "mobilenet_v3_large", "--attack", "pgd", "--out", str(workspace["root"] / "x")]
    with pytest.raises(SystemExit) as info:
        main([*args, "--attack", "fgsm"])
    assert info.value.code == 2 and "unknown attack 'fgsm'; registered: pgd" in capsys.readouterr().err
    assert main([*args, "--backbone", "vgg16"]) == 2  # any model spec is accepted, so the config refuses it
    assert "unknown backbone 'vgg16': use a study backbone" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["-p", "stepz=3"], "unknown run parameters: stepz"),
    ],
)
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
        raise OSError(
            failure, "simulated: " + ("No space left on device" if failure == errno.ENOSPC else "Permission denied")
        )

    monkeypatch.setattr(torch, "save", failing_save)
    code = main(
        [
            "attack",
            "--backbone",
            "mobilenet_v3_large",
            "--attack",
            "asma",
            "--weights",
            str(workspace["ckpt"]),
            "--out",
            str(out),
            "--num-images",
            "2",
            "--steps",
            "1",
        ]
    )
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
    with pytest.raises(ValueError, match="outside 0..254"):
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


# --- Results are never lost -------------------------------------------------------------------

ATTACK = ["attack", "--backbone", "mobilenet_v3_large", "--attack", "pgd", "--steps", "1"]


def test_a_folder_segattack_did_not_write_is_refused(workspace, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text("my own results")
    (out / "00_adv.png").write_bytes(b"my own picture")
    before = digest(out)
    assert main([*ATTACK, "--weights", str(workspace["ckpt"]), "--out", str(out), "--num-images", "2"]) == 2
    assert "holds files segattack did not write" in capsys.readouterr().err
    assert digest(out) == before


def test_a_rerun_replaces_the_run_folder_whole(workspace, tmp_path):
    out = tmp_path / "run"
    args = [*ATTACK, "--weights", str(workspace["ckpt"]), "--out", str(out), "--batch", "2"]
    assert main([*args, "--num-images", "3"]) == 0
    assert (out / "02_adv.png").is_file()
    assert main([*args, "--num-images", "2"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        f"{i:02d}_{k}.png" for i in range(2) for k in ("adv", "pred_adv", "pred_clean")
    ]
    assert len(json.loads((out / "results.json").read_text())["names"]) == 2
    assert len(list((out / "shards").iterdir())) == 1  # only the current configuration's shards


def test_a_second_writer_of_a_folder_gets_a_message_naming_it(workspace, tmp_path, capsys):
    from segattack.engine.store import locked

    out = tmp_path / "run"
    with locked(out):  # as another segattack process holding it
        assert main([*ATTACK, "--weights", str(workspace["ckpt"]), "--out", str(out), "--num-images", "2"]) == 2
    assert f"another segattack process is writing {out}" in capsys.readouterr().err
    assert not out.exists()


def test_a_stop_mid_run_keeps_earlier_results_and_finished_shards(workspace, tmp_path, monkeypatch, capsys):
    import segattack.study.runner as runner

    out = tmp_path / "run"
    shutil.copytree(workspace["earlier"], out)
    before = digest(out)
    real, calls = runner.run_shard, []

    def interrupted(cfg, shard, *args, **kwargs):
        calls.append(shard)
        if shard == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second shard
        return real(cfg, shard, *args, **kwargs)

    monkeypatch.setattr(runner, "run_shard", interrupted)
    args = [*ATTACK, "--weights", str(workspace["ckpt"]), "--out", str(out), "--num-images", "4", "--batch", "2"]
    assert main(args) == 130
    err = capsys.readouterr().err.strip()  # the progress bar, then one line
    assert err.splitlines()[-1].startswith("segattack attack: stopped (Ctrl-C)") and "Traceback" not in err
    # the earlier results are untouched; the finished shard waits for the resumed run
    assert (out / "results.json").read_bytes() == (workspace["earlier"] / "results.json").read_bytes()
    assert len(list(out.glob("shards/*/*.pt"))) == 2  # the earlier run's one shard, and the new first shard
    calls.clear()
    monkeypatch.setattr(
        runner, "run_shard", lambda cfg, shard, *a, **k: calls.append(shard) or real(cfg, shard, *a, **k)
    )
    assert main(args) == 0 and calls == [1]  # only the unfinished shard
    assert digest(out) != before and len(json.loads((out / "results.json").read_text())["names"]) == 4


def test_staging_stays_on_the_destinations_file_system(workspace, tmp_path, monkeypatch):
    from segattack.engine import store

    real = tmp_path / "elsewhere" / "run"
    real.parent.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert main([*ATTACK, "--weights", str(workspace["ckpt"]), "--out", str(link), "--num-images", "2"]) == 0
    assert link.is_symlink() and (real / "results.json").is_file()
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]  # staged beside the target, not the link
    # a mount point cannot be renamed: the new content is staged inside it and swapped in entry by entry
    monkeypatch.setattr(store.os.path, "ismount", lambda p: Path(p) == real)
    (real / "00_adv.png").write_bytes(b"stale")
    store.replace_folder(real, lambda staging: (staging / "results.json").write_text("{}"))
    assert sorted(p.name for p in real.iterdir()) == [".segattack", "results.json"]


# --- Parameters cannot escape or lie --------------------------------------------------------


def test_attack_booleans_and_fractions_are_parsed_strictly(workspace, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                *ATTACK,
                "--weights",
                str(workspace["ckpt"]),
                "--out",
                str(out),
                "--num-images",
                "2",
                "-a",
                "targeted=false",
                "-a",
                "mode=linf",
                "-a",
                "eps=8/255",
            ]
        )
        == 0
    )
    params = json.loads((out / "results.json").read_text())["attack_params"]
    assert params["targeted"] is False and params["eps"] == pytest.approx(8 / 255)
    out2 = tmp_path / "asma"
    assert (
        main(
            [
                "attack",
                "--backbone",
                "mobilenet_v3_large",
                "--attack",
                "asma",
                "--steps",
                "1",
                "--weights",
                str(workspace["ckpt"]),
                "--out",
                str(out2),
                "--num-images",
                "2",
                "-a",
                "clip=FALSE",
            ]
        )
        == 0
    )
    assert json.loads((out2 / "results.json").read_text())["attack_params"]["clip"] is False


def test_huge_step_sizes_never_write_non_json(workspace, tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "attack",
            "--backbone",
            "mobilenet_v3_large",
            "--attack",
            "asma",
            "--steps",
            "2",
            "--weights",
            str(workspace["ckpt"]),
            "--out",
            str(out),
            "--num-images",
            "2",
            "--beta",
            "1e300",
        ]
    )
    assert code in (0, 1)
    if code == 0:  # strict JSON: Infinity and NaN are not JSON
        json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-p", "steps=abc"], "steps must be an integer, got 'abc'"),
        (["-p", "attack=/../../../elsewhere/runs/x"], "-p attack=... is not a grid parameter"),
        (["-p", "backbone=x"], "-p backbone=... is not a grid parameter"),
        (["-p", "seed=-1"], "seed must be >= 0, got -1"),
        (["-p", "attack_params={'eps': float('inf')}"], "attack_params must be a dict"),
        (["-p", "studies=some"], "unknown studies 'some'"),
        (["-p", "studies_size=8"], "studies size must be >= 16"),
        (["-p", "studies_colour=red"], "unknown studies settings: studies_colour"),
        (["--cluster", "udp://x"], "unknown cluster 'udp://x'"),
    ],
)
def test_report_parameters_are_checked_before_any_folder_is_touched(tmp_path, capsys, argv, message):
    out = tmp_path / "report"
    code = main(["report", "--profile", "tiny", "--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "elsewhere").exists()


def test_duplicate_backbones_and_attacks_run_once():
    from segattack.study.profiles import grid_configs

    configs = grid_configs("tiny", backbones=("resnet50", "resnet50"), attacks=("pgd", "asma", "pgd"))
    assert [(c.backbone, c.attack) for c in configs] == [("resnet50", "pgd"), ("resnet50", "asma")]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "{root}/model.json"], "must end in .pt or .pth"),
        (["--out", "{root}"], "is a folder; name the checkpoint file"),
        (["--batch", "0"], "batch must be >= 1, got 0"),
        (["--steps", "0"], "steps must be >= 1, got 0"),
        (["--stop-at", "-1"], "--stop-at >= 1"),
        (["--lr", "inf"], "lr must be a finite number > 0"),
        (["--work-dir", "{ckpt}"], "is a file"),
    ],
)
def test_train_checks_its_options_and_paths_before_training(workspace, capsys, argv, message):
    argv = [a.format(root=workspace["root"], ckpt=workspace["ckpt"]) for a in argv]
    out = [] if "--out" in argv else ["--out", str(workspace["root"] / "never.pt")]
    assert main(["train", "--backbone", "mobilenet_v3_large", "--size", "32", *out, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segattack train: error:") and message in err and len(err.splitlines()) == 1, err
    assert not (workspace["root"] / "never.pt").exists()


# --- Images are what the user sees ------------------------------------------------------------


def test_exif_orientation_is_applied_and_noted(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # the left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate the stored image 90 degrees clockwise
    Image.fromarray(wide).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    loaded = image_set(str(tmp_path), 20, "shorter").load([0])
    assert loaded.images[0].shape == (3, 40, 20)  # shown upright: portrait
    assert loaded.images[0][:, :18].mean() > 0.9 and loaded.images[0][:, 22:].mean() < 0.1  # white on top
    assert loaded.notes == ["phone.jpg: EXIF orientation 6 applied"]


def test_a_multi_page_tiff_is_refused_and_webp_files_are_read(tmp_path):
    pages = [Image.new("RGB", (24, 24), c) for c in ("red", "blue")]
    pages[0].save(tmp_path / "scan.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageError, match="holds 2 frames"):
        load_image(tmp_path / "scan.tif", 24)
    Image.new("RGB", (24, 24), "red").save(tmp_path / "a.webp")
    assert load_image(tmp_path / "a.webp", 24)[0].mean() > 0.9


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", b"x") + chunk(b"IEND", b""))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak
        with pytest.raises(ImageError, match="is 12000x12000; sides must be between 16 and 8192"):
            load_image(tmp_path / "bomb.png", 32)


# --- Checkpoints ----------------------------------------------------------------------------------


def _packed(workspace):
    return torch.load(workspace["ckpt"], weights_only=True)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.pop("state"), "without a valid 'state' entry"),
        (lambda c: next(iter(c["int8"].values())).pop("scale"), "needs an int8 'q' tensor and a float32 'scale'"),
        (lambda c: c.update(version=99), "format version 99 is not supported"),
        (lambda c: c["state"].update({k: v.to(torch.int32) for k, v in list(c["state"].items())[:1]}), "dtype int32"),
        (lambda c: c["state"].update({k: v.to(torch.uint8) for k, v in list(c["state"].items())[:1]}), "dtype uint8"),
        (
            lambda c: c["state"].update({k: v.to(torch.complex64) for k, v in list(c["state"].items())[:1]}),
            "dtype complex64",
        ),
    ],
)
def test_malformed_checkpoints_get_one_message_naming_the_file(workspace, tmp_path, capsys, edit, message):
    ckpt = _packed(workspace)
    edit(ckpt)
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    code = main([*ATTACK, "--weights", str(path), "--out", str(tmp_path / "run"), "--num-images", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and str(path) in err and len(err.splitlines()) == 1, err


def test_a_tampered_torchvision_download_is_refused(tmp_path, monkeypatch):
    from segattack.models.backbones import torchvision_weights_path
    from segattack.models.loader import load_model
    from segattack.models.wrapper import WeightsUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    tampered = tmp_path / "tampered.pth"
    torch.save({"x": torch.zeros(1)}, tampered)
    real = torch.hub.download_url_to_file
    seen = {}

    def from_disk(url, dst, hash_prefix=None, progress=True):  # the network, serving a tampered file
        seen["hash_prefix"] = hash_prefix
        return real(tampered.as_uri(), dst, hash_prefix=hash_prefix, progress=False)

    monkeypatch.setattr(torch.hub, "download_url_to_file", from_disk)
    with pytest.raises(WeightsUnavailable, match="invalid hash value"):
        load_model("mobilenet_v3_large", "torchvision")
    assert seen["hash_prefix"] == "fc3c493d" and not torchvision_weights_path("mobilenet_v3_large").exists()


# --- Clean stops ------------------------------------------------------------------------------------


def test_a_diverging_attack_ends_in_one_line_and_exit_code_1(workspace, tmp_path, capsys):
    state = checkpoints.read(workspace["ckpt"])["state"]
    name = next(k for k, v in state.items() if v.dim() == 4)
    state[name] = torch.full_like(state[name], float("nan"))  # NaN weights: NaN logits
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    out = tmp_path / "run"
    assert main([*ATTACK, "--weights", str(path), "--out", str(out), "--num-images", "2"]) == 1
    err = capsys.readouterr().err.strip()  # the progress bar, then one line
    assert (
        err.splitlines()[-1].startswith(
            "segattack attack: error: the attack diverged: the model produced non-finite logits at iteration 0"
        )
        and "Traceback" not in err
    ), err
    assert not (out / "results.json").exists()


def test_a_result_is_recognised_only_when_its_file_is_whole_and_its_parameters_match(tmp_path):
    path = tmp_path / "results.json"
    assert not json_matches(path, config_hash="abc")  # missing
    path.write_text('{"config_hash": "abc", "results_version": 3')  # cut short by a crash
    assert not json_matches(path, config_hash="abc")
    path.write_text('["abc"]')
    assert not json_matches(path, config_hash="abc")
    path.write_text('{"config_hash": "abc", "results_version": 3}')
    assert json_matches(path, config_hash="abc", results_version=3)
    assert not json_matches(path, config_hash="abc", results_version=2)
