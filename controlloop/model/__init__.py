"""Queueing model of one LLM inference replica and SLO sizing (pure numpy, no I/O)."""
