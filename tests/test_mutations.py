"""Mutation check: each wrong version of the protocol below, applied to a copy of the package, must
make the tests named beside it fail. A mutation whose text no longer occurs fails here too, so the
list follows the code.

Each mutant's tests run in a fresh process forked from a warm one that has imported torch, pytest
and hypothesis but nothing of segattack or the tests: the mutant's modules are imported anew, and
the 35 runs do not pay those imports each (most of a one-test pytest process's time)."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# (id, file, correct text, wrong text, tests that must catch it)
MUTATIONS = [
    (
        "untargeted SegPGD pixel groups swapped",
        "segattack/attacks/segpgd.py",
        "settled = on_label if targeted else ~on_label",
        "settled = on_label if targeted else on_label",
        ["tests/test_protocol.py::test_untargeted_segpgd_weighs_correct_pixels_first"],
    ),
    (
        "paper PGD defaults to per-image means",
        "segattack/attacks/pgd.py",
        'reduction = ("batch" if paper else "image") if reduction is None else reduction',
        'reduction = "image" if reduction is None else reduction',
        ["tests/test_protocol.py::test_paper_pgd_is_ref5s_batch_mean_step"],
    ),
    (
        "batch mean computed as per-image means",
        "segattack/attacks/pgd.py",
        'weights=batch_mean_weights(labels) if reduction == "batch" else None',
        "weights=None",
        ["tests/test_protocol.py::test_paper_pgd_is_ref5s_batch_mean_step"],
    ),
    (
        "best_of keeps the worst restart",
        "segattack/attacks/pgd.py",
        "better = other.success > best.success",
        "better = other.success < best.success",
        ["tests/test_protocol.py::test_best_of_keeps_each_images_best_restart"],
    ),
    (
        "ASMA L2 penalty with its sign flipped",
        "segattack/attacks/asma.py",
        "objective = objective - squared_l2",
        "objective = objective + squared_l2",
        ["tests/test_protocol.py::test_asma_l2_penalty_step_by_hand"],
    ),
    (
        "ASMA L2 penalty halved",
        "segattack/attacks/asma.py",
        "objective = objective - squared_l2",
        "objective = objective - squared_l2 / 2",
        ["tests/test_protocol.py::test_asma_l2_penalty_step_by_hand"],
    ),
    (
        "ASMA ignores l2_penalty (caught by the adv_lib cross-check)",
        "segattack/attacks/asma.py",
        "        if l2_penalty:\n",
        "        if False:\n",
        ["tests/test_adv_lib.py::test_asma_matches_adv_libs_images_where_the_l2_term_matters"],
    ),
    (
        "CosPGD defaults to the sigmoid cosine",
        "segattack/attacks/cospgd.py",
        '    cosine: Cosine = "softmax",\n    random_start',
        '    cosine: Cosine = "sigmoid",\n    random_start',
        ["tests/test_attack_suite.py::test_cospgd_default_is_the_authors_softmax_cosine"],
    ),
    (
        "L2 projection scales every perturbation onto the sphere",
        "segattack/attacks/_projected.py",
        "return delta * (eps / _per_sample_l2(delta)).clamp(max=1.0)",
        "return delta * (eps / _per_sample_l2(delta))",
        [
            "tests/test_attack_suite.py::test_l2_projection_leaves_the_balls_interior_alone",
            "tests/test_attack_suite.py::test_l2_step_is_the_normalised_gradient",
        ],
    ),
    (
        "L2-mode PGD and CosPGD take sign steps",
        "segattack/attacks/_projected.py",
        '            elif norm == "linf":\n',
        '            elif norm in ("linf", "l2"):\n',
        ["tests/test_attack_suite.py::test_l2_step_is_the_normalised_gradient"],
    ),
    (
        "ASMA steps the whole batch by one step size",
        "segattack/attacks/asma.py",
        "moved = x_adv.detach() + alpha.view(-1, 1, 1, 1).to(grad) * grad",
        "moved = x_adv.detach() + alpha.mean().to(grad) * grad",
        ["tests/test_protocol.py::test_asma_steps_each_image_by_its_own_iou"],
    ),
    (
        "batch-mean weights renormalised when a sample stops",
        "segattack/attacks/_projected.py",
        "objective = loss if weights is None else loss * weights[rows]",
        "objective = loss if weights is None else loss * weights[rows] / weights[rows].sum()",
        ["tests/test_protocol.py::test_paper_pgd_keeps_the_batch_denominator_when_a_sample_stops"],
    ),
    (
        "transfer evaluated on the crafting model",
        "segattack/study/studies.py",
        "other_model = cached_model(study.model_key(other))",
        "other_model = cached_model(study.model_key(backbone))",
        ["tests/test_protocol.py::test_transfer_evaluates_the_other_backbone"],
    ),
    (
        "APGD without momentum",
        "segattack/attacks/apgd.py",
        "1.0 if it == 0 else 0.75",
        "1.0",
        ["tests/test_apgd.py::test_second_step_mixes_in_momentum"],
    ),
    (
        "APGD halves only below rho (strict)",
        "segattack/attacks/apgd.py",
        "(rises <= spacing * rho)",
        "(rises < spacing * rho)",
        ["tests/test_apgd.py::test_halving_rule"],
    ),
    (
        "APGD restarts from the current point, not the best",
        "segattack/attacks/apgd.py",
        "current = torch.where(halve.view(-1, 1, 1, 1), best_x[rows], current)",
        "current = current",
        ["tests/test_apgd.py::test_iterates_equal_the_sea_authors_apgd_train"],
    ),
    (
        "mask-CE masks the pixels already won",
        "segattack/attacks/losses.py",
        "(~at_label if targeted else at_label)",
        "(at_label if targeted else ~at_label)",
        ["tests/test_apgd.py::test_losses_by_hand"],
    ),
    (
        "SEA stages all at eps",
        "segattack/attacks/sea.py",
        "STAGE_SHARES, STAGE_RADII = (0.3, 0.3), (2.0, 1.5, 1.0)",
        "STAGE_SHARES, STAGE_RADII = (0.3, 0.3), (1.0, 1.0, 1.0)",
        ["tests/test_apgd.py::test_sea_runs_the_authors_schedule_and_keeps_each_images_worst_case"],
    ),
    (
        "worst_case keeps the weakest member",
        "segattack/attacks/sea.py",
        "chosen = success.argmax(0)",
        "chosen = success.argmin(0)",
        ["tests/test_apgd.py::test_worst_case_by_hand"],
    ),
    (
        "ALMA prox multiplier EMA weights swapped",
        "segattack/attacks/alma_prox.py",
        "mu = torch.lerp(mu, target_mu, 1 - alpha)",
        "mu = torch.lerp(mu, target_mu, alpha)",
        ["tests/test_adv_lib_minimal.py::test_alma_prox_takes_adv_libs_iterates"],
    ),
    (
        "ALMA prox penalty readings swapped",
        "segattack/attacks/alma_prox.py",
        'first = mu * y if reading == "adv_lib" else mu',
        'first = mu if reading == "adv_lib" else mu * y',
        ["tests/test_minimal_norm.py::test_p2_penalty_and_its_two_derivative_readings"],
    ),
    (
        "PDPGD dual ascent turned to descent",
        "segattack/attacks/pdpgd.py",
        "lam = (lam + dual_step * m.detach().sign() * keep)",
        "lam = (lam - dual_step * m.detach().sign() * keep)",
        ["tests/test_adv_lib_minimal.py::test_pdpgd_takes_adv_libs_iterates"],
    ),
    (
        "FMN radius ignores the boundary estimate",
        "segattack/attacks/fmn.py",
        "torch.where(found, eps * (1 + gamma), size + to_boundary)",
        "torch.where(found, eps * (1 + gamma), size)",
        ["tests/test_minimal_norm.py::test_fmn_radius_rule_on_its_first_steps"],
    ),
    (
        "attacks leave the model in train mode",
        "segattack/attacks/_common.py",
        "        model.eval()\n",
        "        pass\n",
        ["tests/test_model_state.py::test_every_attack_runs_in_eval_mode_and_restores_the_model_exactly"],
    ),
    (
        "ensemble drops the members' own keywords",
        "segattack/attacks/ensemble.py",
        'kwargs: Params = {"steps": steps, "progress": progress, **given.get(name, {})}',
        'kwargs: Params = {"steps": steps, "progress": progress}',
        ["tests/test_ensemble.py::test_the_worst_case_is_at_least_each_member_and_is_the_chosen_members_image"],
    ),
    (
        "ensemble runs every member targeted",
        "segattack/attacks/ensemble.py",
        'kwargs["targeted"] = targeted',
        'kwargs["targeted"] = True',
        ["tests/test_ensemble.py::test_untargeted_the_worst_case_has_the_lowest_accuracy"],
    ),
    (
        "budget bisection keeps the wrong half",
        "segattack/evaluation/budget.py",
        "        if probe.broken:\n            best, high = probe.result, radius",
        "        if not probe.broken:\n            best, high = probe.result, radius",
        [
            "tests/test_budget.py::test_the_cold_bisection_brackets_the_known_smallest_radius",
            "tests/test_budget.py::test_the_warm_search_finds_the_cold_radius_with_fewer_passes",
        ],
    ),
    (
        "budget norms read from the run at eps_max, not the bracket's end",
        "segattack/evaluation/budget.py",
        "            best, high = probe.result, radius\n",
        "            high = radius\n",
        ["tests/test_budget.py::test_the_cold_bisection_brackets_the_known_smallest_radius"],
    ),
    (
        "the warm start is not projected onto the new radius",
        "segattack/evaluation/budget.py",
        "start = project(best.adv - image, radius, image)",
        "start = best.adv - image",
        ["tests/test_budget.py::test_the_warm_search_finds_the_cold_radius_with_fewer_passes"],
    ),
    (
        "the warm search starts every radius cold",
        "segattack/evaluation/budget.py",
        "start = project(best.adv - image, radius, image)",
        "start = None",
        ["tests/test_budget.py::test_the_warm_search_finds_the_cold_radius_with_fewer_passes"],
    ),
    (
        "a radius runs one round whatever its success does",
        "segattack/evaluation/budget.py",
        "for _ in range(rounds if warm else 1):",
        "for _ in range(1):",
        ["tests/test_budget.py::test_a_radius_runs_until_success_stops_moving"],
    ),
    (
        "a round restarts from zero instead of its last iterate",
        "segattack/evaluation/budget.py",
        "        start = result.adv - image\n",
        "        start = None\n",
        ["tests/test_budget.py::test_a_radius_runs_until_success_stops_moving"],
    ),
    (
        "minimal-norm budget counts a failed image as broken",
        "segattack/evaluation/budget.py",
        "broken = result.success >= adv_threshold",
        "broken = result.success >= 0",
        ["tests/test_budget.py::test_a_minimal_norm_attack_that_fails_reads_inf"],
    ),
    (
        "robustness curve counts only budgets below the grid point",
        "segattack/evaluation/budget.py",
        "return (values[None, :] <= points[:, None]).mean(1)",
        "return (values[None, :] < points[:, None]).mean(1)",
        ["tests/test_budget.py::test_the_curve_and_the_median_by_hand"],
    ),
    (
        "label map sends unlisted dataset classes to class 0 instead of ignoring them",
        "segattack/data/labels.py",
        "    lut = np.full(256, target.ignore, dtype=np.uint8)\n",
        "    lut = np.full(256, 0, dtype=np.uint8)\n",
        ["tests/test_label_map.py::test_a_map_read_by_hand"],
    ),
    (
        "sliding windows' overlaps summed, not averaged",
        "segattack/models/wrapper.py",
        "*windows) / count\n",
        "*windows) / count.clamp(max=1)\n",
        ["tests/test_window.py::test_overlaps_are_averaged_as_by_hand"],
    ),
    (
        "sliding windows not flush with the image's far edge",
        "segattack/models/wrapper.py",
        "            boxes.append((max(bottom - wh, 0), max(right - ww, 0), bottom, right))\n",
        "            boxes.append((r * sh, c * sw, bottom, right))\n",
        ["tests/test_window.py::test_windows_are_placed_as_mmseg_places_them"],
    ),
    (
        "channels_last logits read as rows with height and width swapped",
        "segattack/attacks/losses.py",
        "rows = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])",
        "rows = logits.permute(0, 3, 2, 1).reshape(-1, logits.shape[1])",
        ["tests/test_apgd.py::test_channels_last_logits_give_the_same_losses_and_gradients"],
    ),
    (
        "JS's p log p term with its sign flipped",
        "segattack/attacks/losses.py",
        "js = math.log(2) - (ce * p + (1 + p) * torch.log1p(p)) / 2",
        "js = math.log(2) - (-ce * p + (1 + p) * torch.log1p(p)) / 2",
        ["tests/test_apgd.py::test_losses_by_hand"],
    ),
    (
        "channels_last softmax taken over the width",
        "segattack/attacks/losses.py",
        "return logits.permute(0, 2, 3, 1).softmax(-1).permute(0, 3, 1, 2)",
        "return logits.permute(0, 2, 3, 1).softmax(2).permute(0, 3, 1, 2)",
        ["tests/test_apgd.py::test_channels_last_logits_give_the_same_losses_and_gradients"],
    ),
    (
        "evaluation: robust mIoU averaged over batches, not pooled",
        "segattack/study/evalassemble.py",
        "scores=None if eps is None else pooled_scores(conf),",
        "scores=None if eps is None else __import__('dataclasses').replace(pooled_scores(conf), "
        "miou=sum(pooled_scores(c).miou or 0 for c in conf.split(cfg.batch)) / len(conf.split(cfg.batch))),",
        ["tests/test_evaluate.py::test_scores_are_pooled_over_the_dataset_whatever_the_shards"],
    ),
    (
        "evaluation: the worst case taken by the highest pixel accuracy",
        "segattack/evaluation/robustness.py",
        "choice = acc.argmin(0)",
        "choice = image_accuracy(conf).nan_to_num(-1).argmax(0)",
        ["tests/test_evaluation.py::test_the_worst_case_picks_the_lowest_accuracy_not_the_highest"],
    ),
    (
        "evaluation: the worst case by max also fails the property",
        "segattack/evaluation/robustness.py",
        "choice = acc.argmin(0)",
        "choice = image_accuracy(conf).nan_to_num(-1).argmax(0)",
        ["tests/test_evaluation.py::test_the_worst_case_is_at_most_every_member_per_image_and_pooled"],
    ),
    (
        "evaluation: eps handed to the attacks in /255 units",
        "segattack/study/evaluate.py",
        "kwargs.update(spec.budget_params(eps, self.steps, self.model))",
        "kwargs.update(spec.budget_params(eps * 255, self.steps, self.model))",
        ["tests/test_evaluate.py::test_scores_are_pooled_over_the_dataset_whatever_the_shards"],
    ),
    (
        "evaluation: --eps 4/255 read as 4",
        "segattack/cli/evaluate.py",
        "value = float(top) / float(bottom) if slash else float(part)",
        "value = float(top) if slash else float(part)",
        ["tests/test_evaluate.py::test_cli_eps_reads_fractions"],
    ),
    (
        "evaluation: an image broken only past the share, not at it",
        "segattack/evaluation/robustness.py",
        "broken = success.double() >= break_share",
        "broken = success.double() > break_share",
        ["tests/test_evaluation.py::test_a_linear_models_smallest_breaking_eps_is_its_closed_form"],
    ),
    (
        "a model loaded without the lock (two task threads load it twice)",
        "segattack/study/cache.py",
        "    with _MODELS_LOCK:\n        if key in _MODELS:",
        "    if True:\n        if key in _MODELS:",
        ["tests/test_any_model_end_to_end.py::test_two_tasks_of_one_hf_model_load_it_once"],
    ),
    (
        "a (B,H,W) class map read as class scores",
        "segattack/models/wrapper.py",
        "if out.dim() != 4 or out.shape[0] != x.shape[0]:",
        "if out.shape[0] != x.shape[0]:",
        ["tests/test_any_model_end_to_end.py::test_a_class_map_output_is_refused_not_read_as_classes"],
    ),
    (
        "an smp checkpoint's head not read (every smp model taken as 21 classes)",
        "segattack/models/classcheck.py",
        "return int(head.shape[0]) if head is not None else NUM_CLASSES",
        "return NUM_CLASSES",
        ["tests/test_any_model_end_to_end.py::test_an_smp_checkpoints_head_gives_its_class_count_before_loading"],
    ),
    (
        "a label map left out of the paper's setting check",
        "segattack/study/report/setting.py",
        "    if config.label_map:\n",
        "    if False:\n",
        ["tests/test_any_model_end_to_end.py::test_the_papers_claims_are_judged_on_runs_in_its_setting_only"],
    ),
    (
        "the paper's claims judged on every run",
        "segattack/study/report/discussion.py",
        "_paper_claims([r for r in runs if in_paper_setting(r.results.config)], unstable)",
        "_paper_claims(runs, unstable)",
        ["tests/test_any_model_end_to_end.py::test_the_papers_claims_are_judged_on_runs_in_its_setting_only"],
    ),
    (
        "APGD's least checkpoint spacing 1 instead of 0.06 N",
        "segattack/attacks/apgd.py",
        "since_check, spacing = 0, max(spacing - shrink, least)",
        "since_check, spacing = 0, max(spacing - shrink, 1)",
        ["tests/test_apgd_rules.py::test_a_flat_loss_halves_the_step_at_seas_checkpoints"],
    ),
    (
        "APGD's first checkpoint applies condition 2",
        "segattack/attacks/apgd.py",
        "halved_last = torch.ones(n, dtype=torch.bool, device=x.device)",
        "halved_last = torch.zeros(n, dtype=torch.bool, device=x.device)",
        [
            "tests/test_apgd_rules.py::test_the_first_checkpoint_has_no_condition_2_and_a_restart_reads_the_first_best_point"
        ],
    ),
    (
        "APGD keeps the earlier iterate on success ties",
        "segattack/attacks/apgd.py",
        "better = success >= best_success[rows]",
        "better = success > best_success[rows]",
        [
            "tests/test_apgd_rules.py::test_the_first_checkpoint_has_no_condition_2_and_a_restart_reads_the_first_best_point"
        ],
    ),
    (
        "APGD's best point moves on loss ties",
        "segattack/attacks/apgd.py",
        "improved = track > best_track[rows]",
        "improved = track >= best_track[rows]",
        [
            "tests/test_apgd_rules.py::test_the_first_checkpoint_has_no_condition_2_and_a_restart_reads_the_first_best_point"
        ],
    ),
    (
        "APGD's step size in float32",
        "segattack/attacks/apgd.py",
        "step_size = torch.full_like(real, 2 * eps)",
        "step_size = torch.full_like(real, 2 * eps, dtype=torch.float32)",
        ["tests/test_apgd_rules.py::test_the_step_size_keeps_the_inputs_precision"],
    ),
    (
        "APGD's authors' checkpoint rule reads the start's loss",
        "segattack/attacks/apgd.py",
        'last_track[rows] = torch.zeros_like(track) if it == 0 and checkpoint_rule == "authors" else track',
        "last_track[rows] = track",
        ["tests/test_apgd.py::test_the_authors_checkpoint_rule_takes_their_iterates_where_the_papers_does_not"],
    ),
    (
        "SEA's whole-batch stop never stops",
        "segattack/attacks/apgd.py",
        "and it > 0 and best_success.min() >= adv_threshold:",
        "and it > 0 and best_success.min() > 1:",
        ["tests/test_apgd.py::test_sea_under_the_authors_readings_is_their_apgd_largereps"],
    ),
    (
        "SEA runs every iteration by default",
        "segattack/attacks/sea.py",
        "adv_threshold: float | None = 1.0,",
        "adv_threshold: float | None = None,",
        ["tests/test_apgd_rules.py::test_sea_stops_an_image_once_fully_won_by_default"],
    ),
    (
        "mask-CE-bal's VOC table with two digits swapped",
        "segattack/attacks/losses.py",
        "    0.1394,\n",
        "    0.1349,\n",
        ["tests/test_any_model.py::test_the_voc_weights_are_the_sea_authors_table"],
    ),
    (
        "mask-CE-bal's label weights not normalised",
        "segattack/attacks/losses.py",
        "return inverse / inverse.sum(1, keepdim=True).clamp_min(1e-300)",
        "return inverse",
        ["tests/test_any_model.py::test_label_frequency_weights_by_hand"],
    ),
    (
        "minimal-norm success counts ignored pixels",
        "segattack/attacks/_minimal.py",
        "return (won & valid).flatten(1)",
        "return won.flatten(1)",
        ["tests/test_minimal_pinned.py::test_success_counts_labelled_pixels_only"],
    ),
    (
        "FMN's masked loss counts ignored pixels",
        "segattack/attacks/fmn.py",
        'counted = valid & ~won if loss == "masked" else valid',
        'counted = ~won if loss == "masked" else valid',
        ["tests/test_minimal_pinned.py::test_fmn_loss_and_success_leave_ignored_pixels_out"],
    ),
    (
        "FMN's radius uncapped",
        "segattack/attacks/fmn.py",
        "            eps = torch.minimum(eps, worst_norm)\n",
        "",
        ["tests/test_minimal_pinned.py::test_fmn_radius_is_capped_at_the_largest_norm_an_image_allows"],
    ),
    (
        "ALMA prox decays from a success after half the run",
        "segattack/attacks/alma_prox.py",
        "if i < steps // 2:",
        "if i < steps:",
        ["tests/test_minimal_pinned.py::test_alma_prox_decays_its_step_from_the_first_success_before_half_the_run"],
    ),
    (
        "ALMA prox's prox search in float32",
        "segattack/attacks/alma_prox.py",
        "lo = torch.zeros_like(hi)",
        "lo = torch.zeros(len(delta), device=delta.device)",
        [
            "tests/test_any_model.py::test_every_registered_attack_runs_on_any_class_count_and_precision[19-untargeted-float64]"
        ],
    ),
    (
        "ALMA prox's decay divided in our order, not adv_lib's",
        "segattack/attacks/alma_prox.py",
        "lam = lr * (tangent / ((i - first_success).clamp_min(0) + tangent))",
        "lam = lr * tangent / ((i - first_success).clamp_min(0) + tangent)",
        ["tests/test_adv_lib_minimal.py::test_alma_prox_takes_adv_libs_iterates[False]"],
    ),
    (
        "PDPGD's random start left outside [0,1]",
        "segattack/attacks/pdpgd.py",
        "        r = (x + r).clamp(0, 1) - x\n    exp_avg",
        "    exp_avg",
        ["tests/test_minimal_pinned.py::test_pdpgd_random_start_stays_in_the_image_range"],
    ),
    (
        "Cityscapes train id 16 read from label id 30",
        "segattack/data/labels.py",
        "25, 26, 27, 28, 31, 32, 33)",
        "25, 26, 27, 28, 30, 32, 33)",
        ["tests/test_labels.py::test_the_whole_cityscapes_label_id_to_train_id_table"],
    ),
    (
        "an output folder of the other kind accepted",
        "segattack/engine/store.py",
        "if owner is not None and owner != kind:",
        "if owner is not None and owner == 'none':",
        ["tests/test_folders.py::test_an_attack_never_replaces_a_report_folder"],
    ),
    (
        "input files left out of the config hash",
        "segattack/study/config.py",
        "return digest(self, self.input_files())",
        "return digest(self)",
        ["tests/test_folders.py::test_a_resume_after_a_replaced_checkpoint_never_mixes_shards"],
    ),
    (
        "Cityscapes mask values checked after the lookup only",
        "segattack/data/sets.py",
        "raw[: ids.count] = 0",
        "raw[:] = 0",
        ["tests/test_labels.py::test_cityscapes_and_ade20k_masks_outside_their_ids_are_refused"],
    ),
    (
        "Cityscapes cities in directory order",
        "segattack/data/sets.py",
        "for city in sorted(p for p in images.iterdir() if p.is_dir()):",
        "for city in (p for p in images.iterdir() if p.is_dir()):",
        ["tests/test_labels.py::test_cityscapes_images_come_in_name_order_whatever_the_file_system_says"],
    ),
    (
        "a window's gradient taken from the wrong box",
        "segattack/models/wrapper.py",
        "return (None, None, *(grad[..., top:bottom, left:right] for top, left, bottom, right in ctx.boxes))",
        "return (None, None, *(grad[..., top:bottom, left:right] for left, top, right, bottom in ctx.boxes))",
        ["tests/test_bounds.py::test_a_window_is_padded_only_to_its_own_size"],
    ),
    (
        "studies' per-class table in VOC's names",
        "segattack/study/studies.py",
        "class_difficulty(attack, backbone, res.pred, targets, clean, indices, names)",
        "class_difficulty(attack, backbone, res.pred, targets, clean, indices)",
        ["tests/test_report_models.py::test_a_compare_cell_names_the_images_classes"],
    ),
    (
        "studies' clean confusion matrix over VOC's 21 classes",
        "segattack/study/studies.py",
        "confusion_matrix(clean, truth, len(names))",
        "confusion_matrix(clean, truth)",
        ["tests/test_report_models.py::test_a_compare_cell_names_the_images_classes"],
    ),
    (
        "studies' cell key without the model's weights",
        "segattack/study/study_config.py",
        '{self.weights_for(model)}".encode()',
        '".encode()',
        ["tests/test_report_models.py::test_cells_key_on_the_model_and_its_weights"],
    ),
    (
        "report studies ignoring --models",
        "segattack/study/profiles.py",
        "    if tuple(backbones) != BACKBONE_ORDER:\n",
        "    if False:\n",
        ["tests/test_report_models.py::test_named_models_and_images_are_the_studies"],
    ),
]


# The warm process: reads one JSON request a line (pytest's arguments, a log file), forks a child that
# runs them with its output in the log, and answers the child's exit status.
FORK_SERVER = """
import json, os, sys
import filelock, hypothesis, numpy, PIL.Image, pytest, scipy, torch, torchvision, tqdm
assert not [m for m in sys.modules if m.split(".")[0] in ("segattack", "conftest")]
for line in sys.stdin:
    args, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = pytest.main(args)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code))
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""
TIMEOUT = 600


class Sandbox:
    """A copy of the package and its tests, importable ahead of the installed one, and a warm
    process that runs pytest on it."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.server = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def pytest(self, *args: str) -> tuple[int, str]:
        """pytest's exit status and output for ``args``, run on the copy in a fresh process."""
        log = self.root / "run.log"
        assert self.server.stdin and self.server.stdout
        self.server.stdin.write(json.dumps([list(args), str(log)]) + "\n")
        self.server.stdin.flush()
        ready, _, _ = select.select([self.server.stdout], [], [], TIMEOUT)
        if not ready:
            self.server.kill()
            pytest.fail(f"pytest {' '.join(args)} ran over {TIMEOUT} s")
        answer = self.server.stdout.readline()
        assert answer, f"the warm process ended (exit {self.server.wait()})"
        return int(answer), log.read_text()

    def close(self) -> None:
        assert self.server.stdin
        self.server.stdin.close()
        self.server.wait(60)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("mutant")
    for name in ("segattack", "tests"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    env = {**os.environ, "PYTHONPATH": str(root), "SEGATTACK_DATA": str(ROOT / "data")}
    found = subprocess.run(
        [sys.executable, "-c", "import segattack; print(segattack.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(root), found  # the copy, not the installed package, is imported
    box = Sandbox(root, env)
    yield box
    box.close()


def write_source(path: Path, text: str) -> None:
    """Write a module's source and drop its cached bytecode, which a change of the same size within
    the same second as the last write would not invalidate."""
    path.write_text(text)
    for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        cached.unlink()


def test_the_sandbox_runs_the_copy_and_tells_a_pass_from_a_failure(sandbox):
    """The warm process imports the copy, and its answers are pytest's: 0 on a pass, 1 on a failure."""
    check = sandbox.root / "tests" / "test_sandbox_check.py"
    check.write_text(
        "import segattack, pathlib\n"
        f"def test_copy():\n    assert pathlib.Path(segattack.__file__).is_relative_to({str(sandbox.root)!r})\n"
        "def test_fails():\n    assert False\n"
    )
    try:
        passed, out = sandbox.pytest("-q", "-p", "no:cacheprovider", f"{check}::test_copy")
        failed, _ = sandbox.pytest("-q", "-p", "no:cacheprovider", f"{check}::test_fails")
    finally:
        check.unlink()
    assert (passed, failed) == (0, 1), out


@pytest.mark.parametrize("case, path, correct, wrong, tests", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_the_suite_catches_the_mutation(sandbox, case, path, correct, wrong, tests):
    target = sandbox.root / path
    original = target.read_text()
    assert original.count(correct) == 1, f"{case}: the text to mutate is not in {path} exactly once"
    write_source(target, original.replace(correct, wrong))
    try:
        code, out = sandbox.pytest("-q", "-x", "-p", "no:cacheprovider", *tests)
    finally:
        write_source(target, original)
    assert code == 1 and " failed" in out, f"{case} survived:\n{out[-2000:]}"
