"""Attacks on collaborative training, registered by name in `ATTACKS`."""

# Importing each module registers its attacks: poisoning (label_flip, sign_flip, gaussian_noise, backdoor),
# hijackfl (hijackfl) and baselines (poison, chameleon, uap, reprogram).
from siegecraft.attacks import baselines, hijackfl, poisoning  # noqa: F401
from siegecraft.attacks.base import ATTACKS, Adversary, AttackOptions, FederationContext, build_adversary

__all__ = ["ATTACKS", "Adversary", "AttackOptions", "FederationContext", "build_adversary"]
