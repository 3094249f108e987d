"""Virtual repositories over real registries: one entry point per audience (issue #7)."""
