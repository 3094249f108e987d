"""OCI distribution client: references, auth, manifests, blobs, digest-exact copies.

Imports neither Prefect nor gates/ or flows/ (imports go registry <- gates <- flows).
"""

import sys
import types

if "httpx" not in sys.modules:
    # httpx imports its optional command line (click, rich, pygments: ~0.1 s here) whenever they
    # are installed — and Prefect installs them. airlock never uses it; a stub keeps it out.
    # Here, before any registry module can import httpx first.
    _cli = types.ModuleType("httpx._main")
    _cli.main = lambda: None  # type: ignore[attr-defined]
    sys.modules.setdefault("httpx._main", _cli)
