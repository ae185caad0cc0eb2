"""Attacks: pure functions ``attack(model, images, labels, **hyperparameters) -> AttackResult``.

Images are (B,3,H,W) in [0,1]; labels are (B,H,W) class ids (255 = ignore): the target masks
of a targeted attack, the true or clean labels of an untargeted one. Normalisation is the model
wrapper's business (``segattack.models``), never an attack's. Each module registers its attack's
:class:`AttackSpec` in :data:`ATTACKS`, the registry every part of the study reads (the import
order below is the order the studies compare them in).
"""
# ruff: noqa: I001  (the imports register the attacks: their order is the studies' order)

from ._common import AttackDiverged, AttackResult
from .pgd import pgd, targeted_pgd
from .segpgd import segpgd
from .cospgd import cospgd
from .dag import dag
from .asma import asma
from .apgd import apgd
from .sea import sea, worst_case
from .alma_prox import alma_prox
from .pdpgd import pdpgd
from .fmn import fmn
from .ensemble import ensemble
from .registry import ATTACKS, DEFAULT_ATTACK, ENTRY_POINT_GROUP, AttackSpec, register, register_family

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACK",
    "ENTRY_POINT_GROUP",
    "AttackDiverged",
    "AttackResult",
    "AttackSpec",
    "alma_prox",
    "apgd",
    "asma",
    "cospgd",
    "dag",
    "ensemble",
    "fmn",
    "pdpgd",
    "pgd",
    "register",
    "register_family",
    "sea",
    "segpgd",
    "targeted_pgd",
    "worst_case",
]
