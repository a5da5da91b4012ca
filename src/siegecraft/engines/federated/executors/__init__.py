"""Executors that run client work: inline (default), worker processes, Ray."""

from siegecraft.engines.federated.executors.base import EXECUTORS, Executor, InlineExecutor, build_executor
from siegecraft.engines.federated.executors.processes import ProcessExecutor
from siegecraft.engines.federated.executors.ray_cluster import RayExecutor, connect_ray

__all__ = ["EXECUTORS", "Executor", "InlineExecutor", "ProcessExecutor", "RayExecutor", "build_executor", "connect_ray"]
