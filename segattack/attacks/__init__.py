"""Attacks: pure functions ``attack(model, images, targets, **hyperparameters) -> AttackResult``.

Images are (B,3,H,W) in [0,1]; targets are (B,H,W) class ids (255 = ignore). Normalisation is
the model wrapper's business (``segattack.models``), never an attack's.
"""

from ._common import AttackDiverged, AttackResult
from .asma import PAPER_BETA, PAPER_TAU, asma
from .pgd import PAPER_ALPHA, PAPER_EPS, targeted_pgd

ATTACKS = {"pgd": targeted_pgd, "asma": asma}

__all__ = ["ATTACKS", "AttackDiverged", "AttackResult", "PAPER_ALPHA", "PAPER_BETA", "PAPER_EPS",
           "PAPER_TAU", "asma", "targeted_pgd"]
