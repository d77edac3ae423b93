"""Assistants, threads, runs, the run queue and the LangGraph checkpointer, per backend."""
