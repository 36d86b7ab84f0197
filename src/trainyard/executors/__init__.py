"""Backends that start trial workers: one interface (base.Executor), one module per backend."""

from trainyard.executors.base import Executor, WorkerLaunch
from trainyard.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "WorkerLaunch"]
