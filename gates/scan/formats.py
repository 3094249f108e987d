"""Which scan format a document is (from its content, never its file name), and `parse`.

The formats, their fields and the media types that promise each: docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gates.base import MAX_EVIDENCE_BYTES, Evidence, EvidenceError, check_size
from gates.common import JSONError, first_char, gc_paused, load_json
from gates.scan.grype import looks_like_grype, parse_grype
from gates.scan.model import Format, ScanReport
from gates.scan.sarif import looks_like_sarif, parse_sarif
from gates.scan.trivy import looks_like_trivy, parse_trivy
from registry import mediatypes

# Artifact types (docs/design.md) and the format each promises.
MEDIA_TYPES: dict[str, Format] = {
    mediatypes.SCAN_REPORT_TRIVY: "trivy",
    mediatypes.SCAN_REPORT_GRYPE: "grype",
    mediatypes.SARIF: "sarif",
}

_PARSERS: dict[Format, Callable[[Any, str], ScanReport]] = {
    "trivy": parse_trivy,
    "grype": parse_grype,
    "sarif": parse_sarif,
}


def detect_doc(doc: Any) -> Format | None:
    """The format of a parsed JSON document, from its marker keys; None if none."""
    if isinstance(doc, list):
        return "trivy" if looks_like_trivy(doc) else None
    if not isinstance(doc, dict):
        return None
    if looks_like_trivy(doc):
        return "trivy"
    if looks_like_grype(doc):
        return "grype"
    if looks_like_sarif(doc):
        return "sarif"
    return None


def detect(data: bytes) -> Format | None:
    """Which scan report format `data` holds, from its content; None if none (or not JSON).

    Duplicate keys do not hide the format: `parse` refuses them, naming the key."""
    try:
        return detect_doc(load_json(data, unique_keys=False))
    except JSONError:
        return None


def _what_it_is(doc: Any) -> str:
    """A hint for the wrong-format message."""
    if isinstance(doc, dict):
        if "tests" in doc or ("summary" in doc and "exitcode" in doc):
            return " (it looks like a pytest-json-report test report)"
        if "bomFormat" in doc or "spdxVersion" in doc:
            return " (it looks like an SBOM)"
        keys = ", ".join(list(doc)[:5])
        return f" (a JSON object with keys {keys})" if keys else " (an empty JSON object)"
    return f" (a JSON {type(doc).__name__})"


def parse(evidence: Evidence, *, limit: int = MAX_EVIDENCE_BYTES) -> ScanReport:
    """Read a Trivy, Grype or SARIF report; EvidenceError (one line) on anything malformed.

    One JSON parse and one pass over the findings; `limit` caps the size of the evidence."""
    src = evidence.source
    check_size(evidence, limit)
    if first_char(evidence.data) == "<":
        raise EvidenceError(f"{src}: XML, not a scan report (Trivy, Grype and SARIF are JSON)")
    with gc_paused():
        try:
            doc = load_json(evidence.data)
        except JSONError as e:
            raise EvidenceError(f"{src}: invalid JSON: {e}") from None
        fmt = detect_doc(doc)
        if fmt is None:
            raise EvidenceError(f"{src}: not a Trivy, Grype or SARIF report{_what_it_is(doc)}")
        _check_media_type(evidence.media_type, fmt, src)
        try:
            return _PARSERS[fmt](doc, src)
        except EvidenceError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
            # Backstop for shapes the explicit checks missed: refuse, never crash or pass.
            raise EvidenceError(
                f"{src}: malformed {fmt} report ({type(e).__name__}: {e})"
            ) from None


def _check_media_type(mt: str | None, fmt: Format, src: str) -> None:
    """The artifact type, when there is one, must promise the format the content holds."""
    if mt in MEDIA_TYPES and MEDIA_TYPES[mt] != fmt:
        raise EvidenceError(f"{src}: the artifact type says {MEDIA_TYPES[mt]} but it holds {fmt}")
    if mt is not None and mt not in MEDIA_TYPES and mt.startswith("application/vnd.airlock."):
        raise EvidenceError(f"{src}: artifact type {mt} is not a scan report")
