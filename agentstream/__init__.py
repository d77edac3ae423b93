"""agentstream: a self-hosted server for LangGraph graphs that speaks the LangGraph Server API."""

__version__ = "0.1.0"
