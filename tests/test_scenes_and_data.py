import numpy as np
import pytest
import torch
from PIL import Image

from segattack.data import ImageError, load_image, study_images, target_masks
from segattack.scenes import class_recipe, render_scene, scene_batch


def test_same_seed_same_bytes():
    a, b = render_scene(3, "train", 17, 64), render_scene(3, "train", 17, 64)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert render_scene(4, "train", 17, 64)[0].tobytes() != a[0].tobytes()


def test_heldout_differs_from_train():
    assert render_scene(0, "heldout", 0, 64)[0].tobytes() != render_scene(0, "train", 0, 64)[0].tobytes()


def test_mask_ids_and_class_coverage():
    images, masks = scene_batch(0, "train", 0, 64, 48)
    assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
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
    assert truth is None and 0 <= images.min() and images.max() <= 1
    with pytest.raises(ImageError, match="holds 4 images; asked for 5"):
        study_images("photos", 5, 64)


@pytest.mark.parametrize("mode, message", [("L", "mode L"), ("RGBA", "mode RGBA"), ("I;16", "mode I;16"),
                                           ("P", "mode P")])
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
    with pytest.raises(ImageError, match="no .png"):
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
    with pytest.raises(ValueError, match="outside the batch"):
        target_masks(pred, target_index=5)
