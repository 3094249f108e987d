"""Prefect flows: gated promotion through the pipeline stages (issue #4)."""
