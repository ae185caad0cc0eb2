"""Same seed and parameters, same numbers and same adversarial images (CPU)."""

import torch

from segattack.runner import RunConfig, config_hash, run


def test_runs_are_reproducible(small_checkpoint, tmp_path):
    for attack in ("pgd", "asma"):
        cfg = RunConfig(backbone="mobilenet_v3_large", attack=attack, weights=str(small_checkpoint), num_images=2,
                        steps=3, attack_params={"mode": "linf", "random_start": True} if attack == "pgd" else {})
        (first, first_saved), (second, second_saved) = (run(cfg, tmp_path / f"{attack}{i}", progress=False)
                                                        for i in range(2))
        assert all(torch.equal(a, b) for a, b in zip(first_saved["adv"], second_saved["adv"]))
        assert first["per_image"] == second["per_image"] and first["history"] == second["history"]
        assert first["pooled"] == second["pooled"]


def test_parameter_hash_is_stable_and_sensitive():
    a = RunConfig(attack="asma", attack_params={"beta": 1e-4, "tau": 1e-5})
    assert config_hash(a) == config_hash(RunConfig(attack="asma", attack_params={"tau": 1e-5, "beta": 1e-4}))
    assert config_hash(a) != config_hash(RunConfig(attack="asma", attack_params={"beta": 2e-4, "tau": 1e-5}))
    assert config_hash(a) != config_hash(RunConfig(attack="asma", seed=1, attack_params={"beta": 1e-4, "tau": 1e-5}))
    assert config_hash(a) == config_hash(RunConfig(attack="asma", attack_params={"beta": "1e-4", "tau": "1e-5"}))


def test_time_per_iteration_counts_the_passes_an_early_stopped_run_made(small_checkpoint, tmp_path):
    cfg = RunConfig(backbone="mobilenet_v3_large", attack="segpgd", weights=str(small_checkpoint), num_images=1,
                    target_index=0, steps=5, attack_params={"adv_threshold": 1.0})  # target = clean prediction
    res, _ = run(cfg, tmp_path / "run", progress=False)
    assert res["iterations"] == [1]
    assert res["seconds_per_iteration"] == res["seconds"]
