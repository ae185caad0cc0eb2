"""Image-set specs resolve to absolute paths; listings refuse what would corrupt a set and list
what they leave out, naming the file."""

import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from segattack.data.scenes import render_scene
from segattack.data.sets import ImageError, image_set, resolve_source


def test_resolve_source_makes_every_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path.resolve()
    assert resolve_source("scenes") == "scenes" and resolve_source("photos") == "photos"
    assert resolve_source("voc:data/voc") == f"voc:{root / 'data' / 'voc'}"
    assert resolve_source("pairs:./a/../b") == f"pairs:{root / 'b'}"
    assert resolve_source("imgs") == str(root / "imgs")
    assert resolve_source("~/imgs") == str(root / "home" / "imgs")
    assert resolve_source("voc:~/voc") == f"voc:{root / 'home' / 'voc'}"
    assert resolve_source(str(root / "imgs")) == str(root / "imgs")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert resolve_source("pairs:link") == f"pairs:{root / 'real'}"  # the folder itself, not the link's name
    for empty in ("voc:", "pairs: ", ""):
        with pytest.raises(ImageError, match="PATH needs a folder|got ''"):
            resolve_source(empty)


def test_a_relative_folder_lists_absolute_files_that_survive_a_change_of_directory(tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    Image.fromarray(render_scene(0, "heldout", 0, 24)[0]).save(tmp_path / "imgs" / "a.png")
    monkeypatch.chdir(tmp_path)
    images = image_set("imgs", 16)
    assert images.files == [tmp_path.resolve() / "imgs" / "a.png"]
    monkeypatch.chdir(tmp_path / "imgs")  # a worker in another working directory
    assert images.load([0]).images[0].shape == (3, 16, 16)


def _voc_copy(voc_folder, tmp_path):
    copy = tmp_path / "voc"
    shutil.copytree(voc_folder, copy)
    base = copy / "VOCdevkit" / "VOC2012"
    return copy, base, base / "ImageSets" / "Segmentation" / "val.txt"


def test_voc_ids_repeated_or_reaching_outside_the_dataset_are_refused(voc_folder, tmp_path):
    copy, base, split = _voc_copy(voc_folder, tmp_path)
    names = split.read_text().split()
    split.write_text("\n".join(names + [names[1]]) + "\n")
    where = re.escape(str(split))
    with pytest.raises(
        ImageError,
        match=rf"{where} lists '2007_000001' twice \(lines 2 and 6\): the image would be "
        r"attacked and averaged twice",
    ):
        image_set(f"voc:{copy}", 32)
    # an id climbing out of JPEGImages/ to files that exist there: refused, not read
    (base / "extra").mkdir()
    shutil.copy(base / "JPEGImages" / f"{names[0]}.jpg", base / "extra" / "x.jpg")
    shutil.copy(base / "SegmentationClass" / f"{names[0]}.png", base / "extra" / "x.png")
    for bad in ("../extra/x", "..", "/etc/passwd", "a\\b"):
        split.write_text("\n".join(names + [bad]) + "\n")
        with pytest.raises(ImageError, match=rf"{where} line 6: id '.*' is not a plain file name"):
            image_set(f"voc:{copy}", 32)
    # blank lines name nothing: passed over, the listed images and their order kept
    split.write_text("\n".join(names[:2] + ["", "  "] + names[2:]) + "\n\n")
    voc = image_set(f"voc:{copy}", 32)
    assert [p.stem for p in voc.files] == names and [p.stem for p in voc.masks] == names


def _png(path, size=(20, 20)):
    Image.new("RGB", size).save(path)


def test_a_folder_lists_broken_and_looping_links_and_sub_folders(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "linked.png").symlink_to(tmp_path / "a.png")  # a working link is an image like any other
    (tmp_path / "broken.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "notes.txt").write_text("x")
    folder = image_set(str(tmp_path), 16)
    assert [p.name for p in folder.files] == ["a.png", "linked.png"]
    assert folder.skipped == [
        f"broken.png (broken symlink to {tmp_path / 'missing.png'})",
        "loop.png (symlink loop)",
        "notes.txt",
        "pipe.jpg (not a regular file)",
        "sub/ (a folder: not searched)",
    ]


def test_two_images_with_one_name_are_refused(tmp_path):
    _png(tmp_path / "a.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "a.jpg")
    _png(tmp_path / "b.png")
    where = re.escape(str(tmp_path))
    with pytest.raises(ImageError, match=rf"{where} holds a.jpg and a.png, both named 'a': results name images"):
        image_set(str(tmp_path), 16)


def _pair(root, name, mask_value=0, mask_name=None):
    image, mask = render_scene(0, "heldout", 0, 40)
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(np.full_like(mask, mask_value), mode="L").save(root / "masks" / (mask_name or f"{name}.png"))


def test_pairs_list_every_file_they_leave_out(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    _pair(tmp_path, "a")
    _pair(tmp_path, "b")
    (tmp_path / "masks" / "b.png").unlink()
    (tmp_path / "masks" / "b.png").symlink_to(tmp_path / "gone.png")  # a dangling mask: b has no mask
    _pair(tmp_path, "c", mask_name="orphan.png")  # a mask without an image; c without a mask
    (tmp_path / "images" / "readme.txt").write_text("x")
    (tmp_path / "masks" / "c.jpg").write_text("x")
    pairs = image_set(f"pairs:{tmp_path}", 32)
    assert [p.name for p in pairs.files] == ["a.png"] and [p.name for p in pairs.masks] == ["a.png"]
    assert pairs.skipped == [
        "images/readme.txt",
        f"masks/b.png (broken symlink to {tmp_path / 'gone.png'})",
        "masks/c.jpg",
        "images/b.png (no masks/b.png)",
        "images/c.png (no masks/c.png)",
        "masks/orphan.png (no image)",
    ]
    shutil.copy(tmp_path / "masks" / "a.png", tmp_path / "masks" / "a.PNG")
    where = re.escape(str(tmp_path / "masks"))
    with pytest.raises(ImageError, match=rf"{where} holds a.PNG and a.png, both named 'a'"):
        image_set(f"pairs:{tmp_path}", 32)


def test_mask_ids_are_checked_over_the_whole_mask_not_only_the_crop(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.new("RGB", (40, 20), (90, 120, 30)).save(tmp_path / "images" / "wide.png")
    mask = np.zeros((20, 40), np.uint8)
    mask[:, 0] = 99  # in the left margin the centre crop cuts away
    mask[5, 20] = 255  # ignore is fine
    Image.fromarray(mask, mode="L").save(tmp_path / "masks" / "wide.png")
    pairs = image_set(f"pairs:{tmp_path}", 16, "crop")
    path = re.escape(str(tmp_path / "masks" / "wide.png"))
    with pytest.raises(ImageError, match=rf"mask {path} holds class ids \[99\] \(20 pixels\)"):
        pairs.load([0])
    mask[:, 0] = 3
    Image.fromarray(mask, mode="L").save(tmp_path / "masks" / "wide.png")
    assert set(pairs.load([0]).truth[0].unique().tolist()) <= {0, 255}  # a valid id in the margin: loads, cut away
