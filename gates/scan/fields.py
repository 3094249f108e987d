"""Reading the fields of a parsed JSON scan report, for the Trivy, Grype and SARIF parsers.

Each reader takes the value, the evidence's source and where in the document the value is, and
raises a one-line EvidenceError naming both when the value is not what the format promises.
Digests are checked with the one reference grammar (registry.reference.is_digest).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gates.base import EvidenceError
from gates.common import parse_time
from gates.scan.model import SEVERITY_NAMES, Severity
from registry.reference import is_digest


def severity(value: object, src: str, where: str) -> Severity:
    sev = SEVERITY_NAMES.get(value) if isinstance(value, str) else None  # fast path
    if sev is None:
        try:
            sev = Severity.parse(value)
        except ValueError:
            raise EvidenceError(f"{src}: unknown severity {value!r} at {where}") from None
    return sev


def string(value: object, src: str, where: str) -> str:
    """A required, non-empty string."""
    if isinstance(value, str) and value:
        return value
    raise EvidenceError(f"{src}: {where} must be a non-empty string, not {value!r}")


def opt_string(value: object, src: str, where: str) -> str | None:
    """An optional string; "" and null are None."""
    return string(value, src, where) if value not in (None, "") else None


def array(value: object, src: str, where: str) -> list[Any]:
    """A JSON array; null or absent counts as empty (Trivy writes null for "none")."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise EvidenceError(f"{src}: {where} must be an array, not {type(value).__name__}")
    return value


def obj(value: object, src: str, where: str) -> dict[str, Any]:
    """A JSON object; null or absent counts as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EvidenceError(f"{src}: {where} must be an object, not {type(value).__name__}")
    return value


def digest(value: object, src: str, where: str) -> str:
    """A digest by the reference grammar (sha256/sha512, lowercase hex, exact length)."""
    if not isinstance(value, str) or not is_digest(value):
        raise EvidenceError(f"{src}: {where} is not a digest: {value!r}")
    return value


def repo_digests(values: object, src: str, where: str) -> list[str]:
    """The digests of a `name@digest` list (Trivy's and Grype's RepoDigests)."""
    out = []
    for i, v in enumerate(array(values, src, where)):
        _name, at, found = v.rpartition("@") if isinstance(v, str) else ("", "", "")
        if not at:
            raise EvidenceError(f"{src}: {where}[{i}] is not name@digest: {v!r}")
        out.append(digest(found, src, f"{where}[{i}]"))
    return out


def time(value: object, src: str, where: str) -> dt.datetime | None:
    """An ISO 8601 time; null or "" is None (unknown)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str):
            return parse_time(value)
    except ValueError:
        pass
    raise EvidenceError(f"{src}: {where} is not an ISO 8601 time: {value!r}")


def not_a_scan(src: str, why: str) -> EvidenceError:
    """The document has the format's marker keys but does not show that a scan happened."""
    return EvidenceError(f"{src}: not a scan: {why}")
