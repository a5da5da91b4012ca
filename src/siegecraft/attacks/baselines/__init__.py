"""Baselines HijackFL is compared with, selectable by name and evaluated exactly like it.

`poison` (Salem-style data poisoning with model replacement), `chameleon` (the same with camouflaged
samples), `uap` (per-class targeted universal perturbations) and `reprogram` (one adversarial program).
"""

from siegecraft.attacks.baselines.chameleon import Camouflager, Chameleon, ChameleonOptions
from siegecraft.attacks.baselines.poison import Poison, PoisonOptions
from siegecraft.attacks.baselines.reprogram import Reprogram, search_program
from siegecraft.attacks.baselines.uap import UAP, search_uaps
from siegecraft.engines.federated.extensions import ATTACKS

ATTACKS.register("poison")(Poison)
ATTACKS.register("chameleon")(Chameleon)
ATTACKS.register("uap")(UAP)
ATTACKS.register("reprogram")(Reprogram)

__all__ = [
    "UAP",
    "Camouflager",
    "Chameleon",
    "ChameleonOptions",
    "Poison",
    "PoisonOptions",
    "Reprogram",
    "search_program",
    "search_uaps",
]
