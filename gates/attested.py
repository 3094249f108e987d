"""Reports that arrive as signed in-toto attestations, for gates whose policy says `signed_by`.

An attestation counts only when it verifies with one of the policy's keys (gates/dsse.py), its
statement names the image (or, for an index, one of its family), and its predicate type is one
the gate reads. The report inside is then judged by the gate's own parser and policy, exactly as
an attached report would be — binding checks included. Predicate types read:

- tests: `https://in-toto.io/attestation/test-result/v0.1` (passedTests / warnedTests /
  failedTests, read as a report of those outcomes; warned counts as passed), and ours carrying
  the whole report: `urn:airlock:attestation:pytest-json-report:v1` (the predicate is the
  pytest-json-report document) and `urn:airlock:attestation:junit-xml:v1` (`{"xml": "…"}`);
- scan: `https://cosign.sigstore.dev/attestation/vuln/v1` (`trivy --format cosign-vuln`: the
  Trivy report is `scanner.result`) and `urn:airlock:attestation:sarif:v1` (the SARIF document);
- provenance: `https://slsa.dev/provenance/v1` (the predicate itself: gates/provenance.py).

Several valid attestations of one kind for one digest are all judged, and all must pass: an
older signed report that passed cannot outvote a newer one that failed (which one is "newer" is
said only by unsigned annotations).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any

from gates import attestations, dsse, intoto, keyless, provenance
from gates.base import Evidence, EvidenceError
from gates.evidence import Target
from gates.keyless import Identity
from gates.keys import PrivateKey, PublicKey
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.manifest import Descriptor

PYTEST_PREDICATE = "urn:airlock:attestation:pytest-json-report:v1"
JUNIT_PREDICATE = "urn:airlock:attestation:junit-xml:v1"
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
COSIGN_VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"
SARIF_PREDICATE = "urn:airlock:attestation:sarif:v1"


def _json(predicate: dict[str, Any]) -> bytes:
    return json.dumps(predicate).encode()


def _junit(predicate: dict[str, Any]) -> bytes:
    xml = predicate.get("xml")
    if not isinstance(xml, str):
        raise EvidenceError("the junit-xml predicate has no xml string")
    return xml.encode()


def _vuln(predicate: dict[str, Any]) -> bytes:
    scanner = predicate.get("scanner")
    result = scanner.get("result") if isinstance(scanner, dict) else None
    if not isinstance(result, dict):
        raise EvidenceError("the vuln predicate has no scanner.result object (the Trivy report)")
    return json.dumps(result).encode()


def _test_result(predicate: dict[str, Any]) -> bytes:
    """A test-result predicate as the pytest-json-report shape the tests gate reads."""
    outcomes: list[tuple[str, str]] = []
    for key, outcome in (
        ("passedTests", "passed"),
        ("warnedTests", "passed"),
        ("failedTests", "failed"),
    ):
        names = predicate.get(key) or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise EvidenceError(f"the test-result predicate's {key} is not a list of names")
        outcomes += [(n, outcome) for n in names]
    failed = sum(o == "failed" for _, o in outcomes)
    doc = {
        "exitcode": 1 if failed or predicate.get("result") == "FAILED" else 0,
        "summary": {"passed": len(outcomes) - failed, "failed": failed, "total": len(outcomes)},
        "tests": [{"nodeid": n, "outcome": o} for n, o in outcomes],
    }
    return json.dumps(doc).encode()


# predicate type -> (the media type the gate's parser reads, the report bytes from the predicate)
READS: dict[str, tuple[str, Callable[[dict[str, Any]], bytes]]] = {
    PYTEST_PREDICATE: (mt.TEST_REPORT_PYTEST, _json),
    JUNIT_PREDICATE: (mt.TEST_REPORT_JUNIT, _junit),
    TEST_RESULT: (mt.TEST_REPORT_PYTEST, _test_result),
    COSIGN_VULN: (mt.SCAN_REPORT_TRIVY, _vuln),
    SARIF_PREDICATE: (mt.SARIF, _json),
    provenance.PREDICATE_TYPE: (provenance.MEDIA_TYPE, _json),
}


# ---------------------------------------------------------------------------- write


def predicate_of(
    kind: str, data: bytes, tool_version: str | None, now: dt.datetime
) -> tuple[str, dict[str, Any]]:
    """How a report of `kind` (airlock attach's --kind) travels signed: its predicate type and
    predicate — the inverse of READS. Trivy's is cosign-vuln, as `trivy --format cosign-vuln`
    writes it."""
    if kind == "junit":
        try:
            return JUNIT_PREDICATE, {"xml": data.decode("utf-8")}
        except UnicodeDecodeError:
            raise EvidenceError("a JUnit report is signed as UTF-8 text; this one is not") from None
    doc = json.loads(data)
    if kind == "pytest":
        return PYTEST_PREDICATE, doc
    if kind == "sarif":
        return SARIF_PREDICATE, doc
    if kind == "trivy":
        when = now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        version = tool_version or ""
        scanner = {"uri": f"pkg:github/aquasecurity/trivy@{version}", "version": version}
        return COSIGN_VULN, {
            "scanner": {**scanner, "result": doc},
            "metadata": {"scanStartedOn": when, "scanFinishedOn": when},
        }
    raise EvidenceError(
        f"{kind} reports are not read as signed attestations; attach them unsigned, or as SARIF"
    )


async def attest(
    client: RegistryClient,
    repo: str,
    subject: Descriptor,
    name: str,
    report: tuple[str, bytes, str | None],
    key: PrivateKey,
) -> attestations.Attached:
    """Sign a report (kind, bytes, tool version) as an in-toto statement about `subject` and
    attach it in both layouts cosign writes."""
    kind, data, version = report
    predicate_type, predicate = predicate_of(kind, data, version, dt.datetime.now(dt.UTC))
    payload = intoto.statement([(name, subject.digest)], predicate_type, predicate)
    envelope = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, key)
    raw = json.dumps(envelope, separators=(",", ":")).encode()
    return await attestations.attach(client, repo, subject, raw, predicate_type, key.key_id)


async def signed(
    client: RegistryClient,
    repo: str,
    digest: str,
    target: Target,
    predicate_types: Sequence[str],
    keys: Sequence[PublicKey],
    identities: Sequence[Identity] = (),
) -> list[Evidence] | str:
    """Every report attested for `digest` with one of `predicate_types` and signed by one of
    `keys` or keylessly by one of `identities`, ready for the gate's parser; or, when there is
    none, why (one line)."""
    found = await attestations.collect(client, repo, digest)
    reports: list[Evidence] = []
    reasons: list[str] = []
    for item in found:
        out = _read(item, digest, target, predicate_types, keys, identities)
        if isinstance(out, Evidence):
            reports.append(out)
        elif out:
            reasons.append(out)
    if reports:
        return reports
    if reasons:
        return reasons[0]
    return f"no signed attestation of {' or '.join(predicate_types)} is attached to {digest}"


def _read(
    item: attestations.FoundEnvelope,
    digest: str,
    target: Target,
    predicate_types: Sequence[str],
    keys: Sequence[PublicKey],
    identities: Sequence[Identity] = (),
) -> Evidence | str | None:
    """The report in one attestation; else why it does not count, or None if it is of another
    kind altogether (a signed SBOM, a VSA…)."""
    if item.problem or item.envelope is None:
        return f"{item.where}: {item.problem}"
    try:
        envelope = dsse.parse(item.envelope, item.where)
        claimed = _claimed_type(item, envelope)
        if claimed is not None and claimed not in predicate_types:
            return None
        signed = _verify(item, envelope, keys, identities)
        if isinstance(signed, str):
            return signed
        payload, summary = signed
        statement = intoto.parse(payload, item.where)
        if statement.predicate_type not in predicate_types:
            return None
        accepted, configs = target.binding(digest)
        if not statement.subject_digests() & set(accepted):
            return f"{item.where}: a signed attestation about another digest, not {digest}"
        media_type, report = READS[statement.predicate_type]
        data = report(statement.predicate)
    except EvidenceError as e:
        return str(e) if str(e).startswith(item.where) else f"{item.where}: {e}"
    return Evidence(
        data,
        source=f"{item.where} ({summary})",
        media_type=media_type,
        subject=digest,
        accepted=accepted,
        config_digests=configs,
        referrer=item.identity,
    )


def _verify(
    item: attestations.FoundEnvelope,
    envelope: dsse.Envelope,
    keys: Sequence[PublicKey],
    identities: Sequence[Identity],
) -> tuple[bytes, str] | str:
    """The in-toto payload and who signed it — by one of `keys`, else keylessly (a sigstore
    bundle's certificate) by one of `identities` — or why neither."""
    verified = dsse.verify(envelope, keys, payload_type=dsse.INTOTO_PAYLOAD_TYPE) if keys else None
    if verified is not None and verified.ok:
        return verified.payload, verified.summary
    if verified is not None and (not identities or item.bundle is None):
        return verified.message
    if item.bundle is None:
        return f"{item.where}: not a sigstore bundle, so no certificate to check an identity with"
    found = keyless.verify(item.bundle, identities, item.where)
    if isinstance(found, str):
        return found
    if found.payload_type != dsse.INTOTO_PAYLOAD_TYPE:
        return f"{item.where}: payloadType is not {dsse.INTOTO_PAYLOAD_TYPE}"
    return found.payload, found.signer.summary


def _claimed_type(item: attestations.FoundEnvelope, envelope: dsse.Envelope) -> str | None:
    """The predicate type an attestation claims before it is verified (to pass over other kinds
    quietly); None when it says nothing readable. Never trusted for anything else."""
    try:
        return intoto.parse(envelope.payload, item.where).predicate_type
    except EvidenceError:
        return item.predicate_hint
