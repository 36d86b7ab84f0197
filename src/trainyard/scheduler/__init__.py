"""Which queued trial gets which slots: strict FIFO across experiments, no oversubscription."""

from trainyard.scheduler.fifo import LaunchRequest, plan_launches

__all__ = ["LaunchRequest", "plan_launches"]
