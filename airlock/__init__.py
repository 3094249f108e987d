"""airlock: promote container images by digest through gated stages."""

__version__ = "0.1.0"
