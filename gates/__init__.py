"""Quality gates on evidence bound to an image digest (docs/evidence.md)."""
