"""gates/intoto.py: in-toto Statements read from verified DSSE payloads, and written."""

from __future__ import annotations

import json

import pytest

from gates import dsse, intoto, keys
from gates.base import EvidenceError

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
PREDICATE = {"result": "PASSED", "passedTests": ["a", "b"], "failedTests": []}


def doc(**change: object) -> dict:
    base: dict = {
        "_type": intoto.STATEMENT_V1,
        "subject": [{"name": "registry.example/dev/app", "digest": {"sha256": HEX}}],
        "predicateType": TEST_RESULT,
        "predicate": PREDICATE,
    }
    base.update(change)
    return {k: v for k, v in base.items() if v is not ...}


def malformed(payload: bytes) -> str:
    with pytest.raises(EvidenceError) as e:
        intoto.parse(payload, "att.json")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("att.json is not a valid in-toto statement: "), message
    return message


def test_statement_round_trip() -> None:
    payload = intoto.statement([("registry.example/dev/app", DIGEST)], TEST_RESULT, PREDICATE)
    # compact, sorted keys: the same input always gives the same bytes
    assert payload == json.dumps(doc(), sort_keys=True, separators=(",", ":")).encode()
    assert payload.startswith(b'{"_type":"https://in-toto.io/Statement/v1","predicate":{')
    statement = intoto.parse(payload, "att.json")
    assert statement.type == intoto.STATEMENT_V1
    assert statement.predicate_type == TEST_RESULT
    assert statement.predicate == PREDICATE
    assert statement.subject_digests() == {DIGEST}
    assert statement.names(DIGEST) and statement.names(DIGEST.upper().replace("SHA", "sha"))
    assert not statement.names("sha256:" + "cd" * 32)
    assert statement.subjects[0].name == "registry.example/dev/app"
    assert intoto.statement(statement.subjects, TEST_RESULT, PREDICATE) == payload


def test_signed_statement_end_to_end() -> None:
    key = keys.load_private_key(keys.generate("ed25519")[0])
    payload = intoto.statement([("app", DIGEST)], TEST_RESULT, PREDICATE)
    data = json.dumps(dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, key)).encode()
    result = dsse.verify(dsse.parse(data, "att.json"), [key.public])
    assert isinstance(result, dsse.Verified)
    statement = intoto.from_verified(result)
    assert statement.names(DIGEST) and statement.source == "att.json"

    other = dsse.verify(
        dsse.parse(json.dumps(dsse.sign(payload, "text/plain", key)).encode(), "att.json"),
        [key.public],
    )
    assert isinstance(other, dsse.Verified)
    with pytest.raises(EvidenceError, match="payloadType is 'text/plain', not 'application/vnd"):
        intoto.from_verified(other)


def test_cosign_v01_statements_are_read() -> None:
    """`cosign attest` writes Statement v0.1 (same shape)."""
    payload = json.dumps(doc(_type=intoto.STATEMENT_V01)).encode()
    assert intoto.parse(payload, "att.json").type == intoto.STATEMENT_V01


def test_lenient_where_the_spec_is() -> None:
    # a subject may have no name, other digest algorithms, uppercase hex (normalized)
    subjects = [{"digest": {"sha256": HEX.upper(), "gitCommit": "abc123"}}]
    statement = intoto.parse(json.dumps(doc(subject=subjects, predicate=...)).encode(), "x")
    assert statement.subjects[0].name == ""
    assert statement.subject_digests() == {DIGEST}
    assert statement.predicate == {}
    # a subject with no sha256 is about nothing airlock can name
    other = [{"name": "f", "digest": {"sha512": "0" * 128}}]
    assert intoto.parse(json.dumps(doc(subject=other)).encode(), "x").subject_digests() == set()


MALFORMED = {
    "not-json": (b"{", "not JSON"),
    "array": (b"[]", "not a JSON object"),
    "no-type": (doc(_type=...), "_type is missing"),
    "other-type": (doc(_type="https://in-toto.io/Statement/v2"), "_type is 'https://in-toto"),
    "type-number": (doc(_type=1), "_type is '1'"),
    "link": (doc(_type="link"), "_type is 'link'"),
    "no-predicate-type": (doc(predicateType=...), "no predicateType"),
    "blank-predicate-type": (doc(predicateType=" "), "no predicateType"),
    "predicate-list": (doc(predicate=[1]), "the predicate is not an object"),
    "no-subject": (doc(subject=...), "no subject list"),
    "empty-subject": (doc(subject=[]), "no subject list"),
    "subject-object": (doc(subject={"digest": {"sha256": HEX}}), "no subject list"),
    "subject-string": (doc(subject=[DIGEST]), "subject 1 is not an object"),
    "subject-name-number": (doc(subject=[{"name": 1, "digest": {"sha256": HEX}}]), "name"),
    "no-digest": (doc(subject=[{"name": "a"}]), "subject 1 has no digest object"),
    "empty-digest": (doc(subject=[{"name": "a", "digest": {}}]), "no digest object"),
    "digest-prefixed": (
        doc(subject=[{"digest": {"sha256": DIGEST}}]),
        "sha256 digest is not 64 hex digits",
    ),
    "digest-short": (doc(subject=[{"digest": {"sha256": "abc"}}]), "not 64 hex digits"),
    "digest-not-hex": (doc(subject=[{"digest": {"sha256": "zz" * 32}}]), "not 64 hex digits"),
    "digest-number": (doc(subject=[{"digest": {"sha256": 1}}]), "digest is not a string"),
    "too-many-subjects": (doc(subject=[{"digest": {"sha256": HEX}}] * 1025), "over the cap"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_statements(name: str) -> None:
    value, needle = MALFORMED[name]
    payload = value if isinstance(value, bytes) else json.dumps(value).encode()
    assert needle in malformed(payload)


def test_repeated_keys_refused() -> None:
    """A signed statement must mean one thing to every reader: no second `subject`."""
    payload = (
        b'{"_type": "https://in-toto.io/Statement/v1", "subject": [{"digest": {"sha256": "'
        + HEX.encode()
        + b'"}}], "subject": [], "predicateType": "t", "predicate": {}}'
    )
    assert "duplicate key 'subject'" in malformed(payload)


def test_statement_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="not sha256"):
        intoto.statement([("app", HEX)], TEST_RESULT, {})
    with pytest.raises(ValueError, match="at least one subject"):
        intoto.statement([], TEST_RESULT, {})
    with pytest.raises(ValueError, match="predicateType"):
        intoto.statement([("app", DIGEST)], "", {})
    with pytest.raises(ValueError):
        intoto.statement([("app", DIGEST)], TEST_RESULT, {"x": float("nan")})
