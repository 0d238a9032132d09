"""Structured logs: the pipeline, streams for followers, the broadcaster."""
