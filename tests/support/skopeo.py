"""skopeo, as the tests run it (TLS checks off: the registries here are plain HTTP)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from airlock.demo import layout_digest

__all__ = ["SKOPEO", "layout_digest", "push_through", "skopeo"]

SKOPEO = [
    "skopeo",
    "--insecure-policy",
    "copy",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
]


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SKOPEO, *args], capture_output=True, text=True, timeout=120)


def push_through(source: str, target: str, layout: Path, creds: str) -> None:
    """What a person does with skopeo: pull `source` into an OCI layout, then push that to
    `target` as `creds` (user:password), digests preserved. Both must succeed."""
    pulled = skopeo("--preserve-digests", f"docker://{source}", f"oci:{layout}")
    assert pulled.returncode == 0, pulled.stderr
    pushed = skopeo(
        "--preserve-digests", "--dest-creds", creds, f"oci:{layout}", f"docker://{target}"
    )
    assert pushed.returncode == 0, pushed.stderr
