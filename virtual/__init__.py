"""Virtual repositories over real registries: one entry point per audience (docs/virtual.md)."""
