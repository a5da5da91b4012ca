"""Attacks on collaborative training: add-ons that implement the engines' adversary contracts.

Importing this package registers every built-in attack: in the federated engine's `ATTACKS` poisoning
(label_flip, sign_flip, gaussian_noise, backdoor), hijackfl and the hijacking baselines (poison,
chameleon, uap, reprogram); in the Hogwild engine's `HOGWILD_ATTACKS` game_of_threads.
"""

from siegecraft.attacks import baselines, game_of_threads, hijackfl, poisoning  # noqa: F401
