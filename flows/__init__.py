"""Prefect flows: gated promotion through the pipeline stages (docs/pipeline.md)."""
