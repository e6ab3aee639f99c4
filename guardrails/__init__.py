"""Inference-aware guardrails for agentic LLM traffic: the core package."""

__version__ = "0.1.0"
