"""Federated learning: rounds, client sampling, strategies, checkpoints."""

from siegecraft.engines.federated.client import ClientTrainer, ClientUpdate
from siegecraft.engines.federated.engine import Federation, run_federated
from siegecraft.engines.federated.sampling import client_seed, sample_clients
from siegecraft.engines.federated.strategy import STRATEGIES, FedAvg, FedAvgM, Strategy

__all__ = [
    "STRATEGIES", "ClientTrainer", "ClientUpdate", "FedAvg", "FedAvgM", "Federation", "Strategy",
    "client_seed", "run_federated", "sample_clients",
]
