"""Executors that run client work: inline (default), worker processes, Ray."""

from siegecraft.runtime.executor import EXECUTORS, Executor, InlineExecutor, build_executor
from siegecraft.runtime.processes import ProcessExecutor
from siegecraft.runtime.ray_executor import RayExecutor, connect_ray

__all__ = ["EXECUTORS", "Executor", "InlineExecutor", "ProcessExecutor", "RayExecutor", "build_executor", "connect_ray"]
