"""controlloop: SLO-driven, cost-optimal autoscaling for LLM inference servers."""

__version__ = "0.1.0"
