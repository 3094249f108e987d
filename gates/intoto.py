"""in-toto Statements (github.com/in-toto/attestation spec/v1/statement.md): read and write.

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "…", "digest": {"sha256": "<hex>"}}],
     "predicateType": "<URI>", "predicate": {…}}

`parse` reads one from a payload (normally a `dsse.Verified` one's: `from_verified` also checks
the payloadType); `https://in-toto.io/Statement/v0.1`, which cosign's `attest` writes, is read
too (same shape). A statement that cannot be read as one — not JSON, a repeated key, `_type`
unknown, no subject, a digest that is not hex, no predicateType, a predicate that is not an
object — raises EvidenceError (exit 2) with one line. Whether it is about the right image is the
caller's question (`subject_digests()`, `names(digest)`): a statement about another digest is a
refusal, not bad input.

`statement()` writes one as compact JSON with sorted keys: the same input gives the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gates.base import EvidenceError
from gates.common import JSONError, load_json
from gates.dsse import INTOTO_PAYLOAD_TYPE, MAX_ENVELOPE_BYTES, Verified

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
STATEMENT_TYPES = (STATEMENT_V1, STATEMENT_V01)
MAX_SUBJECTS = 1024

_HEX = {"sha256": 64, "sha384": 96, "sha512": 128, "sha1": 40}
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")
_DIGEST_REF = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass(frozen=True, slots=True)
class Subject:
    name: str
    digest: dict[str, str]  # algorithm -> hex (lowercase for the sha* ones)

    @property
    def sha256(self) -> str | None:
        """`sha256:<hex>`, the form airlock names digests in, if the subject has one."""
        value = self.digest.get("sha256")
        return f"sha256:{value}" if value else None


@dataclass(frozen=True, slots=True)
class Statement:
    type: str
    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: dict[str, Any]
    source: str = ""
    raw: bytes = field(default=b"", repr=False)

    def subject_digests(self) -> set[str]:
        """Every subject's sha256 digest, as `sha256:<hex>`."""
        return {d for s in self.subjects if (d := s.sha256)}

    def names(self, digest: str) -> bool:
        """Whether the statement is about `digest` (`sha256:<hex>`)."""
        return digest.lower() in self.subject_digests()


def _fail(source: str, why: str) -> EvidenceError:
    return EvidenceError(f"{source} is not a valid in-toto statement: {why}")


def _shown(text: str, limit: int = 60) -> str:
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return repr(clean if len(clean) <= limit else clean[: limit - 1] + "…")


def parse(payload: bytes, source: str) -> Statement:
    """Read an in-toto Statement (v1 or v0.1); EvidenceError with one line if it is not one."""
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise _fail(source, f"{len(payload)} bytes, over the {MAX_ENVELOPE_BYTES} byte cap")
    try:
        doc = load_json(payload)
    except JSONError as e:
        raise _fail(source, f"not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _fail(source, "not a JSON object")
    kind = doc.get("_type")
    if kind not in STATEMENT_TYPES:
        shown = "missing" if kind is None else _shown(kind if isinstance(kind, str) else repr(kind))
        raise _fail(source, f"_type is {shown}, not {STATEMENT_V1!r}")
    predicate_type = doc.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type.strip():
        raise _fail(source, "no predicateType string")
    predicate = doc.get("predicate", {})
    if not isinstance(predicate, dict):
        raise _fail(source, "the predicate is not an object")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise _fail(source, "no subject list (a statement must be about something)")
    if len(subjects) > MAX_SUBJECTS:
        raise _fail(source, f"{len(subjects)} subjects, over the cap of {MAX_SUBJECTS}")
    return Statement(
        type=kind,
        subjects=tuple(_subject(s, i, source) for i, s in enumerate(subjects, 1)),
        predicate_type=predicate_type,
        predicate=predicate,
        source=source,
        raw=payload,
    )


def _subject(entry: Any, i: int, source: str) -> Subject:
    if not isinstance(entry, dict):
        raise _fail(source, f"subject {i} is not an object")
    name = entry.get("name", "")
    if not isinstance(name, str):
        raise _fail(source, f"subject {i} has a name that is not a string")
    digest = entry.get("digest")
    if not isinstance(digest, dict) or not digest:
        raise _fail(source, f"subject {i} has no digest object")
    clean = {}
    for algorithm, value in digest.items():
        if not isinstance(value, str) or not value:
            raise _fail(source, f"subject {i}'s {_shown(algorithm)} digest is not a string")
        size = _HEX.get(algorithm)
        if size is not None and (len(value) != size or not _HEX_DIGITS.fullmatch(value)):
            raise _fail(source, f"subject {i}'s {algorithm} digest is not {size} hex digits")
        clean[algorithm] = value.lower() if size is not None else value
    return Subject(name, clean)


def from_verified(verified: Verified) -> Statement:
    """The statement a verified envelope carries; EvidenceError if its payloadType is not
    in-toto's or it is not a statement."""
    if verified.payload_type != INTOTO_PAYLOAD_TYPE:
        raise EvidenceError(
            f"{verified.source}: payloadType is {_shown(verified.payload_type)}, not"
            f" {INTOTO_PAYLOAD_TYPE!r}"
        )
    return parse(verified.payload, verified.source)


SubjectLike = Subject | tuple[str, str]


def statement(
    subjects: Iterable[SubjectLike], predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    """An in-toto Statement v1 as UTF-8 JSON bytes (sorted keys, compact). A subject is a
    Subject or a (name, "sha256:<hex>") pair."""
    entries = []
    for subject in subjects:
        if isinstance(subject, Subject):
            entries.append({"name": subject.name, "digest": dict(subject.digest)})
            continue
        name, digest = subject
        match = _DIGEST_REF.fullmatch(digest)
        if not match:
            raise ValueError(f"subject digest {digest!r} is not sha256:<64 lowercase hex>")
        entries.append({"name": name, "digest": {"sha256": match.group(1)}})
    if not entries:
        raise ValueError("a statement needs at least one subject")
    if not predicate_type:
        raise ValueError("a statement needs a predicateType")
    doc = {
        "_type": STATEMENT_V1,
        "subject": entries,
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
