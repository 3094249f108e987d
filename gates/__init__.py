"""Quality gates on evidence bound to an image digest (issue #3)."""
