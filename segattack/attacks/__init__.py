"""Attacks: pure functions ``attack(model, images, labels, **hyperparameters) -> AttackResult``.

Images are (B,3,H,W) in [0,1]; labels are (B,H,W) class ids (255 = ignore): the target masks
of a targeted attack, the true or clean labels of an untargeted one. Normalisation is the model
wrapper's business (``segattack.models``), never an attack's. ``ATTACKS`` maps the names the CLI,
the notebooks and the report accept to the functions.
"""

from ._common import AttackDiverged, AttackResult
from .asma import PAPER_BETA, PAPER_TAU, asma
from .cospgd import cospgd
from .dag import dag
from .pgd import PAPER_ALPHA, PAPER_EPS, pgd, targeted_pgd
from .segpgd import segpgd

ATTACKS = {"pgd": pgd, "asma": asma, "dag": dag, "segpgd": segpgd, "cospgd": cospgd}

__all__ = ["ATTACKS", "AttackDiverged", "AttackResult", "PAPER_ALPHA", "PAPER_BETA", "PAPER_EPS", "PAPER_TAU",
           "asma", "cospgd", "dag", "pgd", "segpgd", "targeted_pgd"]
