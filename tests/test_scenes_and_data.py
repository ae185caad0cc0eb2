import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from segattack.data.scenes import class_recipe, render_scene, scene_batch
from segattack.data.sets import ImageError, image_set, load_image, study_images
from segattack.data.targets import target_masks, target_sources
from segattack.metrics import confusion_matrix, dataset_scores


def test_same_seed_same_bytes():
    a, b = render_scene(3, "train", 17, 64), render_scene(3, "train", 17, 64)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert render_scene(4, "train", 17, 64)[0].tobytes() != a[0].tobytes()


def test_heldout_differs_from_train():
    assert render_scene(0, "heldout", 0, 64)[0].tobytes() != render_scene(0, "train", 0, 64)[0].tobytes()


def test_mask_ids_and_class_coverage():
    images, masks = scene_batch(0, "train", 0, 64, 48)
    assert images.dtype == torch.float32 and images.min() >= 0 and images.max() <= 1
    ids = set(masks.unique().tolist())
    assert ids <= set(range(21)) and 0 in ids and len(ids) >= 18


def test_class_recipes_are_unique():
    recipes = {class_recipe(c)[:2] for c in range(1, 21)}
    assert len(recipes) == 20
    with pytest.raises(ValueError, match="object class ids are 1..20"):
        class_recipe(0)


def test_bad_scene_arguments():
    with pytest.raises(ValueError, match="split must be"):
        render_scene(0, "test", 0, 64)
    with pytest.raises(ValueError, match="size must be >= 16"):
        render_scene(0, "train", 0, 8)


def test_load_image_and_photos():
    images, names, truth = study_images("photos", 4, 64)
    assert images.shape == (4, 3, 64, 64) and names == ["astronaut", "chelsea", "coffee", "rocket"]
    assert truth is None and images.min() >= 0 and images.max() <= 1
    with pytest.raises(ImageError, match="holds 4 images; asked for 5"):
        study_images("photos", 5, 64)


@pytest.mark.parametrize(
    "mode, message", [("L", "mode L"), ("RGBA", "mode RGBA"), ("I;16", "mode I;16"), ("P", "mode P")]
)
def test_load_image_refuses_other_modes(tmp_path, mode, message):
    path = tmp_path / "img.png"
    Image.new(mode, (20, 20)).save(path)
    with pytest.raises(ImageError, match=message):
        load_image(path, 32)


def test_load_image_errors(tmp_path):
    with pytest.raises(ImageError, match="image not found"):
        load_image(tmp_path / "missing.png", 32)
    with pytest.raises(ImageError, match="is not a file"):
        load_image(tmp_path, 32)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(tmp_path / "text.png", 32)
    with pytest.raises(ImageError, match="is none of them"):
        study_images(str(tmp_path / "absent"), 2, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no .bmp, .jpeg, .jpg, .png, .webp images"):
        study_images(str(tmp_path / "empty"), 2, 32)


def test_load_image_centre_crop(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 255  # the central square is white
    Image.fromarray(arr).save(tmp_path / "wide.png")
    assert load_image(tmp_path / "wide.png", 16).min() == 1.0


def test_target_masks():
    pred = torch.arange(3).view(3, 1, 1).expand(3, 2, 2)
    assert target_masks(pred).unique().tolist() == [1]
    assert target_masks(pred, "roll")[:, 0, 0].tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="outside the set of 3 images"):
        target_masks(pred, target_index=5)


def test_targets_do_not_depend_on_the_shards():
    assert target_sources([4, 5], 6, "roll", 0) == [5, 0]  # the last shard wraps to the set's first image
    assert target_sources([2, 3], 6, "single", 1) == [1, 1]  # the target image lies in another shard
    whole = target_sources(range(6), 6, "roll", 0)
    assert [s for k in range(0, 6, 4) for s in target_sources(range(k, min(k + 4, 6)), 6, "roll", 0)] == whole


def test_voc_folder_loads_images_and_masks_with_their_ignore_border(voc_folder):
    voc = image_set(f"voc:{voc_folder}", 32, "crop")
    assert voc.count == 5 and voc.has_truth and voc.select(0) == 5
    loaded = voc.load([0, 1])
    assert loaded.names == ["2007_000000", "2007_000001"]
    assert all(x.shape == (3, 32, 32) for x in loaded.images)
    assert all(set(m.unique().tolist()) <= set(range(21)) | {255} and (m == 255).any() for m in loaded.truth)
    # the VOCdevkit and VOC2012 folders themselves are accepted too
    assert image_set(f"voc:{voc_folder / 'VOCdevkit' / 'VOC2012'}", 32).count == 5
    shorter = image_set(f"voc:{voc_folder}", 32, "shorter").load([0, 1])
    # image 0 is 40 wide x 48 high, image 1 48 x 40: the shorter side goes to 32, the other to int(32 * 48 / 40)
    assert shorter.images[0].shape == (3, 38, 32) and shorter.images[1].shape == (3, 32, 38)
    assert shorter.truth[0].shape == (38, 32)
    squash = image_set(f"voc:{voc_folder}", 32, "squash").load([0, 1])
    assert all(x.shape == (3, 32, 32) for x in squash.images) and all(m.shape == (32, 32) for m in squash.truth)


def test_squash_resizes_both_sides_and_keeps_the_mask_aligned(tmp_path):
    """Reference [5]'s resize: the whole 64x16 image to 32x32 (no crop, aspect not kept), the mask
    with it by nearest neighbour."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    image = np.zeros((16, 64, 3), np.uint8)
    image[:, :16, 0] = 255  # a red quarter on the left, class 1
    image[:, 16:, 2] = 255  # blue elsewhere, class 2
    mask = np.full((16, 64), 2, np.uint8)
    mask[:, :16] = 1
    mask[0] = 255  # a void top row
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    Image.fromarray(mask, mode="L").save(tmp_path / "masks" / "a.png")
    loaded = image_set(f"pairs:{tmp_path}", 32, "squash").load([0])
    x, m = loaded.images[0], loaded.truth[0]
    assert x.shape == (3, 32, 32) and m.shape == (32, 32)
    # the red quarter is still a quarter of the width: x squeezed by 2, y stretched by 2
    assert (m[2:, :8] == 1).all() and (m[2:, 8:] == 2).all() and (m[:2] == 255).all()
    assert (x[0, :, :7] == 1).all() and (x[2, :, :7] == 0).all() and (x[0, :, 9:] == 0).all()
    assert torch.equal(m == 1, (x[0] > 0.5) & (torch.arange(32) > 1).view(32, 1))  # mask and image edges agree
    # the same as resizing the whole file to 32x32
    whole = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
    assert torch.equal(x, torch.from_numpy(whole.copy()).permute(2, 0, 1).float().div(255))
    assert (image_set(f"pairs:{tmp_path}", 32, "crop").load([0]).truth[0][2:] == 2).all()  # a crop loses the red


def test_malformed_voc_folder_names_the_expected_layout(tmp_path, voc_folder):
    with pytest.raises(ImageError, match="JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/val.txt"):
        image_set(f"voc:{tmp_path}", 32)
    broken = tmp_path / "broken"
    shutil.copytree(voc_folder, broken)
    (broken / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000003.png").unlink()
    with pytest.raises(ImageError, match="1 listed files are missing"):
        image_set(f"voc:{broken}", 32)


def test_pairs_folder_and_bad_masks(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    image, mask = render_scene(0, "heldout", 0, 40)
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    Image.fromarray(mask, mode="L").save(tmp_path / "masks" / "a.png")  # 8-bit class ids
    Image.fromarray(image).save(tmp_path / "images" / "b.png")  # no mask: listed as skipped
    pairs = image_set(f"pairs:{tmp_path}", 40)
    assert pairs.count == 1 and pairs.skipped == ["images/b.png (no masks/b.png)"]
    assert torch.equal(pairs.load([0]).truth[0], torch.from_numpy(mask).long())
    Image.fromarray(np.full((40, 40), 99, np.uint8), mode="L").save(tmp_path / "masks" / "a.png")
    with pytest.raises(ImageError, match=r"holds class ids \[99\]"):
        pairs.load([0])


def test_clean_miou_is_one_confusion_matrix_over_all_images():
    truth = torch.tensor([[[0, 0, 1, 1]], [[0, 0, 0, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1]], [[0, 0, 1, 1]]])
    # one confusion matrix over both images, the 255 pixel ignored:
    # class 0: true {a0,a1,b0,b1,b2}=5, predicted 0 at {a0,b0,b1}=3 -> inter 3, union 5
    # class 1: true {a2,a3}=2, predicted 1 at {a1,a2,a3,b2}=4 -> inter 2, union 4
    scores = dataset_scores(confusion_matrix(pred, truth))
    assert scores["miou"] == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 7)


def test_folder_lists_the_files_it_skips(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    Image.new("RGB", (20, 20)).save(tmp_path / "b.tif")
    folder = image_set(str(tmp_path), 32)
    assert folder.count == 1 and folder.skipped == ["b.tif", "notes.txt"]
    with pytest.raises(ImageError, match="holds 1 images; asked for 2"):
        folder.select(2)
