"""The provenance gate: SLSA provenance v1, signed, about the image, from an allowed builder,
repository and ref. The attacks of someone who can push to dev first — no provenance, unsigned,
self-signed, genuine but about another image, from a fork, a branch or another builder, and
provenance that leaves out what the policy asks — then the signed path, read from the shape of a
real GitHub attestation's predicate."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gates import dsse, intoto
from gates.attestations import attach
from gates.base import GateResult
from gates.keys import PrivateKey, generate, load_private_key
from gates.kinds import Candidate, gate
from gates.provenance import PREDICATE_TYPE, ProvenancePolicy, source_of
from registry.manifest import Descriptor, parse_manifest
from tests.support import images as im
from tests.support.registries import Reg

pytestmark = pytest.mark.anyio
REPO = "dev/app"
GITHUB = Path(__file__).resolve().parents[1] / "fixtures/attestations/github"
RUNNER = "https://github.com/actions/runner/github-hosted"


def github_predicate() -> dict:
    """The predicate of a real GitHub artifact attestation (malancas/attest-demo, main)."""
    bundle = json.loads((GITHUB / "reusable-workflow-attestation.sigstore.json").read_bytes())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))["predicate"]


@pytest.fixture
def ci(tmp_path: Path) -> PrivateKey:
    private, public = generate()
    (tmp_path / "ci.pub").write_bytes(public)
    return load_private_key(private, "ci key")


def policy(**extra: object) -> ProvenancePolicy:
    base = {
        "signed_by": ["ci.pub"],
        "builder_ids": [RUNNER],
        "repositories": ["https://github.com/malancas/attest-demo"],
        "refs": ["refs/heads/main", "refs/tags/v*"],
    }
    return ProvenancePolicy.model_validate(base | extra)


async def provenance(
    registry: Reg,
    img: im.Image,
    predicate: dict,
    key: PrivateKey | None,
    about: im.Image | None = None,
) -> None:
    payload = intoto.statement([(REPO, (about or img).digest)], PREDICATE_TYPE, predicate)
    if key is None:
        envelope = {"payload": dsse.b64encode(payload), "payloadType": dsse.INTOTO_PAYLOAD_TYPE}
        envelope["signatures"] = []
    else:
        envelope = dsse.sign(payload, dsse.INTOTO_PAYLOAD_TYPE, key)
    subject = Descriptor(img.media_type, img.digest, len(img.raw))
    async with registry.client() as client:
        await attach(client, REPO, subject, json.dumps(envelope).encode(), PREDICATE_TYPE)


def push(registry: Reg, seed: str) -> im.Image:
    img = im.image(seed)
    registry.pusher.push(REPO, img, seed)
    return img


async def judge(registry: Reg, img: im.Image, folder: Path, **extra: object) -> GateResult:
    manifest = parse_manifest(img.raw, img.media_type, img.digest, "test image")
    async with registry.client() as client:
        candidate = Candidate(client, REPO, manifest, folder=folder)
        return await gate("provenance").judge(candidate, policy(**extra))


# ---------------------------------------------------------------- attacks (all refused)


async def test_no_provenance_refuses(registry: Reg, tmp_path: Path, ci: PrivateKey) -> None:
    img = push(registry, "no-provenance")
    result = await judge(registry, img, tmp_path)
    assert not result.passed and f"no signed attestation of {PREDICATE_TYPE}" in result.summary


async def test_unsigned_or_self_signed_provenance_refuses(
    registry: Reg, tmp_path: Path, ci: PrivateKey
) -> None:
    unsigned, forged = push(registry, "unsigned-prov"), push(registry, "forged-prov")
    await provenance(registry, unsigned, github_predicate(), None)
    developer = load_private_key(generate()[0], "developer")
    await provenance(registry, forged, github_predicate(), developer)
    assert "is unsigned" in (await judge(registry, unsigned, tmp_path)).summary
    refused = await judge(registry, forged, tmp_path)
    assert not refused.passed and "a key the policy does not name" in refused.summary


async def test_genuine_provenance_about_another_image_refuses(
    registry: Reg, tmp_path: Path, ci: PrivateKey
) -> None:
    built, smuggled = push(registry, "built"), push(registry, "smuggled")
    await provenance(registry, smuggled, github_predicate(), ci, about=built)
    result = await judge(registry, smuggled, tmp_path)
    assert not result.passed and "about another digest" in result.summary


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (("workflow", "repository", "https://github.com/mallory/attest-demo"), "source repository"),
        (("workflow", "ref", "refs/heads/feature"), "source ref 'refs/heads/feature'"),
        (("builder", None, "https://evil.example/builder"), "builder id"),
    ],
)
async def test_a_fork_a_branch_or_another_builder_refuses(
    registry: Reg, tmp_path: Path, ci: PrivateKey, change: tuple, needle: str
) -> None:
    predicate = copy.deepcopy(github_predicate())
    where, key, value = change
    if where == "workflow":
        predicate["buildDefinition"]["externalParameters"]["workflow"][key] = value
    else:
        predicate["runDetails"]["builder"]["id"] = value
    img = push(registry, f"changed-{where}-{key}")
    await provenance(registry, img, predicate, ci)
    result = await judge(registry, img, tmp_path)
    assert not result.passed and needle in result.summary and "is not allowed" in result.summary


async def test_provenance_that_leaves_out_what_is_asked_refuses(
    registry: Reg, tmp_path: Path, ci: PrivateKey
) -> None:
    img = push(registry, "silent-prov")
    await provenance(registry, img, {"buildDefinition": {}, "runDetails": {}}, ci)
    result = await judge(registry, img, tmp_path)
    assert not result.passed
    for what in ("builder id", "source repository", "source ref"):
        assert f"the provenance names no {what}" in result.summary


def test_a_policy_without_signers_is_refused() -> None:
    with pytest.raises(ValidationError, match="signed_by"):
        ProvenancePolicy.model_validate({"builder_ids": [RUNNER]})


# ---------------------------------------------------------------- the signed path


async def test_signed_provenance_from_an_allowed_source_passes(
    registry: Reg, tmp_path: Path, ci: PrivateKey
) -> None:
    img = push(registry, "good-prov")
    await provenance(registry, img, github_predicate(), ci)
    result = await judge(registry, img, tmp_path)
    assert result.passed, result.summary
    assert result.summary == (
        f"passed: built by {RUNNER} from https://github.com/malancas/attest-demo@refs/heads/main"
    )


def test_the_source_is_read_from_resolved_dependencies_too() -> None:
    """Build types without externalParameters.workflow name the source as a git+ uri."""
    predicate = github_predicate()
    del predicate["buildDefinition"]["externalParameters"]["workflow"]
    assert source_of(predicate) == ("https://github.com/malancas/attest-demo", "refs/heads/main")
