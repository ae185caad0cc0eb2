"""segattack: targeted adversarial attacks on semantic segmentation (PGD, multiclass ASMA, DAG, SegPGD, CosPGD).

import segattack as sa
model = sa.load_model("mobilenet_v3_large", weights="embedded")   # or wrap_model(my_net)
result = sa.targeted_pgd(model, images, target_masks)            # images in [0,1]
"""

__version__ = "0.1.0"

from .attacks import ATTACKS, AttackDiverged, AttackResult, asma, cospgd, dag, pgd, segpgd, targeted_pgd
from .metrics import attack_metrics, mean_iou, perturbation_norm, pixel_accuracy, predict_classes, targeted_success
from .models import WeightsUnavailable, fold_batchnorm, load_model, wrap_model

__all__ = [
    "ATTACKS",
    "AttackDiverged",
    "AttackResult",
    "WeightsUnavailable",
    "asma",
    "attack_metrics",
    "cospgd",
    "dag",
    "fold_batchnorm",
    "load_model",
    "mean_iou",
    "perturbation_norm",
    "pgd",
    "pixel_accuracy",
    "predict_classes",
    "segpgd",
    "targeted_pgd",
    "targeted_success",
    "wrap_model",
]
