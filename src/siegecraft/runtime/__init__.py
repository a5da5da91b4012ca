"""Executors that run client work: inline (default), worker processes, Ray."""

from siegecraft.runtime.executor import EXECUTORS, Executor, InlineExecutor, build_executor

__all__ = ["EXECUTORS", "Executor", "InlineExecutor", "build_executor"]
