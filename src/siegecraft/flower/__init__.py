"""The Flower bridge: siegecraft's aggregators, defenses, attacks and secure aggregation inside a Flower
federation, and siegecraft configs run on Flower (`[fl] engine = "flower"`).

Flower users: `strategy("krum", f=1)` is a Flower `Strategy`; `attack_client("hijackfl", honest, ...)`
wraps an honest `NumPyClient`. siegecraft users: set `engine = "flower"` under `[fl]`. Needs Flower 1.41
(`pip install 'siegecraft[flower]'`).
"""

try:
    import flwr  # noqa: F401
except ImportError as err:  # the bridge is an optional extra: say how to get it, in one line
    raise ImportError("siegecraft.flower needs Flower (flwr 1.41): pip install 'siegecraft[flower]'") from err

from siegecraft.flower.arrays import arrays_of, flat_of, model_arrays
from siegecraft.flower.clients import AttackClient, SiegecraftClient, attack_client
from siegecraft.flower.context import federation_context, load_experiment
from siegecraft.flower.runner import FlowerRunner
from siegecraft.flower.secure import ZeroSumStrategy
from siegecraft.flower.strategy import SiegecraftStrategy, strategy, strategy_names

__all__ = [
    "AttackClient", "FlowerRunner", "SiegecraftClient", "SiegecraftStrategy", "ZeroSumStrategy", "arrays_of",
    "attack_client", "federation_context", "flat_of", "load_experiment", "model_arrays", "strategy",
    "strategy_names",
]
