"""Same seed and parameters, same numbers and same adversarial images (CPU)."""

import torch

from segattack.study.config import RunConfig
from segattack.study.runner import run


def test_runs_are_reproducible(small_checkpoint, tmp_path):
    for attack in ("pgd", "asma"):
        cfg = RunConfig(
            backbone="mobilenet_v3_large",
            attack=attack,
            weights=str(small_checkpoint),
            num_images=2,
            steps=3,
            attack_params={"mode": "linf", "random_start": True} if attack == "pgd" else {},
        )
        (first, first_saved), (second, second_saved) = (
            run(cfg, tmp_path / f"{attack}{i}", progress=False) for i in range(2)
        )
        assert all(torch.equal(a, b) for a, b in zip(first_saved.adv, second_saved.adv))
        assert first.per_image == second.per_image and first.history == second.history
        assert first.pooled == second.pooled


def test_parameter_hash_is_stable_and_sensitive():
    a = RunConfig(attack="asma", attack_params={"beta": 1e-4, "tau": 1e-5})
    assert a.digest() == RunConfig(attack="asma", attack_params={"tau": 1e-5, "beta": 1e-4}).digest()
    assert a.digest() != RunConfig(attack="asma", attack_params={"beta": 2e-4, "tau": 1e-5}).digest()
    assert a.digest() != RunConfig(attack="asma", seed=1, attack_params={"beta": 1e-4, "tau": 1e-5}).digest()
    assert a.digest() == RunConfig(attack="asma", attack_params={"beta": "1e-4", "tau": "1e-5"}).digest()


def test_time_per_iteration_counts_the_passes_an_early_stopped_run_made(small_checkpoint, tmp_path):
    cfg = RunConfig(
        backbone="mobilenet_v3_large",
        attack="segpgd",
        weights=str(small_checkpoint),
        num_images=1,
        target_index=0,
        steps=5,
        attack_params={"adv_threshold": 1.0},
    )  # target = clean prediction
    res, _ = run(cfg, tmp_path / "run", progress=False)
    assert res.iterations == [1]
    assert res.seconds_per_iteration == res.seconds


def test_save_images_keeps_the_first_images_only_and_changes_no_number(small_checkpoint, tmp_path):
    base = dict(
        backbone="mobilenet_v3_large",
        attack="pgd",
        weights=str(small_checkpoint),
        num_images=5,
        batch=2,
        steps=2,
        target_scheme="roll",
    )
    (few, few_saved), (all_, all_saved) = (
        run(RunConfig(**base, save_images=k), tmp_path / f"keep{k}", progress=False) for k in (3, 8)
    )
    assert few_saved.index == [0, 1, 2] and all_saved.index == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "keep3").glob("??_adv.png")) == ["00_adv.png", "01_adv.png", "02_adv.png"]
    assert all(torch.equal(a, b) for a, b in zip(few_saved.adv, all_saved.adv[:3]))  # image 2: the 2nd shard
    assert len(few.per_image["l2_255"]) == 5 and few.per_image == all_.per_image
