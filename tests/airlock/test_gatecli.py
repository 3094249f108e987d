"""`airlock attach` and `airlock gate` as scripts run them, against a real registry."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import images as im
from tests.support.cli import airlock, assert_one_line_error
from tests.support.registries import Reg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PASSING = FIXTURES / "pytest-json-report" / "all-passed.report.json"
FAILING = FIXTURES / "junit" / "pytest-failures.xml"
CRITICAL = FIXTURES / "trivy" / "alpine-39.json"  # 2 CRITICAL, 4 MEDIUM
CLEAN = FIXTURES / "trivy" / "sl-micro-rancher5.4-no-vulns.json"


def fallback_listing(reg: Reg, repo: str, digest: str) -> list[dict]:
    got = reg.pusher.manifest(repo, im.fallback_tag_of(digest))
    return json.loads(got[0])["manifests"] if got else []


def scan_of(img: im.Image, tmp_path: Path) -> Path:
    """alpine-39's real Trivy report, re-pointed at img (RepoDigests and ImageID)."""
    doc = json.loads(CRITICAL.read_bytes())
    doc["Metadata"]["RepoDigests"] = [f"dev/app@{img.digest}"]
    doc["Metadata"]["ImageID"] = img.blobs[0].digest  # the config blob
    path = tmp_path / "trivy.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_attach_then_gate_reads_the_evidence_back(registry: Reg, tmp_path: Path) -> None:
    img = im.image("attach")
    registry.pusher.push("dev/app", img, "1.0")
    ref = f"{registry.host}/dev/app:1.0"

    proc = airlock("attach", ref, str(PASSING), "--kind", "pytest")
    assert proc.returncode == 0, proc.stderr
    referrer = proc.stdout.strip()
    [entry] = fallback_listing(registry, "dev/app", img.digest)
    assert entry["digest"] == referrer
    assert entry["artifactType"] == "application/vnd.airlock.test-report.pytest+json"
    stored = registry.pusher.manifest("dev/app", referrer)
    assert stored is not None
    manifest = json.loads(stored[0])
    assert manifest["subject"]["digest"] == img.digest
    layer = manifest["layers"][0]
    assert registry.pusher.blob("dev/app", layer["digest"]) == PASSING.read_bytes()

    passed = airlock("gate", "tests", ref, "--attached")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.strip().splitlines()[-1].startswith("passed:")

    # a real scan of another image (its ImageID is another config) is refused as such
    assert airlock("attach", ref, str(CRITICAL), "--kind", "trivy").returncode == 0
    foreign = airlock("gate", "scan", ref, "--attached")
    assert foreign.returncode == 1, foreign.stderr
    assert "report is for another image" in foreign.stdout
    # the newest scan, of this image, is the one judged
    assert airlock("attach", ref, str(scan_of(img, tmp_path)), "--kind", "trivy").returncode == 0
    refused = airlock("gate", "scan", ref, "--attached")
    assert refused.returncode == 1, refused.stderr
    assert "refused: 2 CRITICAL, 4 MEDIUM" in refused.stdout
    at_critical = airlock("gate", "scan", ref, "--attached", "--fail-on", "CRITICAL", "--json")
    assert at_critical.returncode == 1
    assert json.loads(at_critical.stdout)["gate"] == "scan"
    counted = _policy(tmp_path, "fail_on: never\nmax_counts: {CRITICAL: 2, MEDIUM: 4}\n")
    assert airlock("gate", "scan", ref, "--attached", "--policy", str(counted)).returncode == 0


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_gate_on_an_image_with_no_evidence_refuses(registry: Reg) -> None:
    registry.pusher.push("dev/app", im.image("bare"), "1.0")
    proc = airlock("gate", "tests", f"{registry.host}/dev/app:1.0", "--attached")
    assert proc.returncode == 1, proc.stderr
    assert "no tests report is attached" in proc.stdout


def test_attach_refuses_a_report_of_another_kind_and_writes_nothing(registry: Reg) -> None:
    img = im.image("wrong-kind")
    registry.pusher.push("dev/app", img, "1.0")
    proc = airlock("attach", f"{registry.host}/dev/app:1.0", str(CRITICAL), "--kind", "junit")
    assert_one_line_error(proc, 2, "trivy report, not junit")
    assert registry.pusher.tags("dev/app") == ["1.0"]


def test_attach_to_a_missing_image_exits_2(registry: Reg, tmp_path: Path) -> None:
    registry.pusher.push("dev/app", im.image("x"), "1.0")
    proc = airlock("attach", f"{registry.host}/dev/app:9.9", str(PASSING), "--kind", "pytest")
    assert_one_line_error(proc, 2, "no such image")
    truncated = tmp_path / "report.json"
    truncated.write_bytes(PASSING.read_bytes()[:100])
    broken = airlock("attach", f"{registry.host}/dev/app:1.0", str(truncated), "--kind", "pytest")
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert registry.pusher.tags("dev/app") == ["1.0"]


def test_gate_offline_exit_codes(tmp_path: Path) -> None:
    assert airlock("gate", "scan", str(CLEAN)).returncode == 0
    assert airlock("gate", "scan", str(CRITICAL)).returncode == 1
    assert airlock("gate", "tests", str(FAILING)).returncode == 1
    assert airlock("gate", "tests", str(FAILING), "--max-failed", "5").returncode == 0
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    assert_one_line_error(airlock("gate", "tests", str(empty)), 2, "empty")
    assert_one_line_error(airlock("gate", "tests", str(CRITICAL)), 2, "not a test report")
    policy = tmp_path / "policy.yaml"
    policy.write_text("fail_on: HIGH\nmax_critical: 0\n")
    assert_one_line_error(
        airlock("gate", "scan", str(CLEAN), "--policy", str(policy)),
        2,
        "max_critical",
        "not permitted",
    )
    assert_one_line_error(airlock("gate", "scan", str(CLEAN), "--fail-on", "SEVERE"), 2, "fail_on")


def test_gate_with_digest_refuses_a_report_for_another_image() -> None:
    other = "sha256:" + "a" * 64
    proc = airlock(
        "gate",
        "scan",
        str(FIXTURES / "trivy" / "alpine-310-registry.json"),
        "--digest",
        other,
        "--fail-on",
        "CRITICAL",
    )
    assert proc.returncode == 1
    assert "report is for another image" in proc.stdout


def test_gate_signature_verifies_a_cosign_signature(registry: Reg, tmp_path: Path) -> None:
    img = im.image("signed")
    registry.pusher.push("dev/app", img, "1.0")
    key = ec.generate_private_key(ec.SECP256R1())
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": "dev/app"},
                "image": {"docker-manifest-digest": img.digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    layer = im.Blob(payload, "application/vnd.dev.cosign.simplesigning.v1+json")
    config = im.Blob(
        b'{"architecture":"","os":"","config":{},"rootfs":{"type":"layers"}}', im.OCI_CONFIG
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": im.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [
            {**layer.descriptor(), "annotations": {"dev.cosignproject.cosign/signature": signature}}
        ],
    }
    registry.pusher.push(
        "dev/app",
        im.Image(json.dumps(doc).encode(), im.OCI_MANIFEST, [config, layer]),
        im.fallback_tag_of(img.digest) + ".sig",
    )
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    other = tmp_path / "other.pub"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ref = f"{registry.host}/dev/app:1.0"
    ok = airlock("gate", "signature", ref, "--key", str(pub), "--require-signature", "verified")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().splitlines()[-1].startswith("verified:")
    wrong = airlock(
        "gate", "signature", ref, "--key", str(other), "--require-signature", "verified"
    )
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr


def test_per_platform_evidence_needs_a_report_for_every_platform(registry: Reg) -> None:
    idx = im.multi_platform("per-platform")
    registry.pusher.push("dev/app", idx, "1.0")
    amd, arm = idx.children
    for child in (amd,):
        proc = airlock(
            "attach", f"{registry.host}/dev/app@{child.digest}", str(PASSING), "--kind", "pytest"
        )
        assert proc.returncode == 0, proc.stderr
    ref = f"{registry.host}/dev/app:1.0"
    missing = airlock("gate", "tests", ref, "--attached", "--per-platform")
    assert missing.returncode == 1
    assert f"no tests report is attached to {registry.host}/dev/app@{arm.digest}" in missing.stdout
    proc = airlock(
        "attach", f"{registry.host}/dev/app@{arm.digest}", str(PASSING), "--kind", "pytest"
    )
    assert proc.returncode == 0, proc.stderr
    assert airlock("gate", "tests", ref, "--attached", "--per-platform").returncode == 0
    # the index itself still has no report of its own
    assert airlock("gate", "tests", ref, "--attached").returncode == 1
    # the same choice as a policy option
    policy = Path(registry.server.root.parent / "policy.yaml")
    policy.write_text("per_platform: true\n")
    assert airlock("gate", "tests", ref, "--attached", "--policy", str(policy)).returncode == 0


def test_flags_that_do_not_apply_and_bad_policy_files_exit_2(tmp_path: Path) -> None:
    scan = str(CLEAN)
    assert_one_line_error(
        airlock("gate", "scan", scan, "--min-tests", "5"), 2, "--min-tests is a tests policy flag"
    )
    assert_one_line_error(
        airlock("gate", "tests", str(FAILING), "--fail-on", "LOW"),
        2,
        "--fail-on is a scan policy flag",
    )
    assert_one_line_error(airlock("gate", "scan", scan, "--per-platform"), 2, "--attached")
    duplicated = _policy(tmp_path, "fail_on: LOW\nfail_on: CRITICAL\n")
    assert_one_line_error(
        airlock("gate", "scan", scan, "--policy", str(duplicated)), 2, "duplicate key 'fail_on'"
    )
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert_one_line_error(airlock("gate", "scan", scan, "--policy", str(binary)), 2, "not UTF-8")
    listed = _policy(tmp_path, "- fail_on: LOW\n")
    assert_one_line_error(
        airlock("gate", "scan", scan, "--policy", str(listed)), 2, "expected a mapping"
    )


def test_digest_must_match_the_image_read_from_the_registry(registry: Reg) -> None:
    img = im.image("pinned")
    registry.pusher.push("dev/app", img, "1.0")
    ref = f"{registry.host}/dev/app:1.0"
    assert airlock("attach", ref, str(PASSING), "--kind", "pytest").returncode == 0
    other = "sha256:" + "b" * 64
    assert_one_line_error(
        airlock("gate", "tests", ref, "--attached", "--digest", other),
        2,
        f"is {img.digest}, not --digest",
    )
    assert airlock("gate", "tests", ref, "--attached", "--digest", img.digest).returncode == 0


def test_attach_records_the_producing_tool(registry: Reg, tmp_path: Path) -> None:
    img = im.image("tool")
    registry.pusher.push("dev/app", img, "1.0")
    report = FIXTURES / "grype" / "keycloak-0.66.0.json"
    proc = airlock("attach", f"{registry.host}/dev/app:1.0", str(report), "--kind", "grype")
    assert proc.returncode == 0, proc.stderr
    stored = registry.pusher.manifest("dev/app", proc.stdout.strip())
    assert stored is not None
    annotations = json.loads(stored[0])["annotations"]
    grype = json.loads(report.read_bytes())["descriptor"]
    assert annotations["vnd.airlock.evidence.tool"] == grype["name"]
    assert annotations["vnd.airlock.evidence.tool-version"] == grype["version"]
    assert annotations["org.opencontainers.image.created"].endswith("Z")


def test_a_key_means_the_signature_must_verify(registry: Reg, tmp_path: Path) -> None:
    img = im.image("fake-signed")
    registry.pusher.push("dev/app", img, "1.0")
    # cosign-shaped, but its signature value is not a signature by any key
    registry.pusher.push(
        "dev/app", im.cosign_signature(img), im.fallback_tag_of(img.digest) + ".sig"
    )
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ref = f"{registry.host}/dev/app:1.0"
    assert airlock("gate", "signature", ref).returncode == 0  # present, as asked
    assert airlock("gate", "signature", ref, "--key", str(pub)).returncode == 1
    assert_one_line_error(
        airlock("gate", "signature", ref, "--key", str(pub), "--require-signature", "present"),
        2,
        "only used with require=verified",
    )


def test_an_image_id_that_cannot_be_checked_offline_is_no_binding() -> None:
    # this real report names its image only by ImageID (a config digest)
    doc = json.loads(CLEAN.read_bytes())
    assert doc["Metadata"].get("ImageID") and not doc["Metadata"].get("RepoDigests")
    proc = airlock("gate", "scan", str(CLEAN), "--digest", "sha256:" + "a" * 64)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cannot be checked against" in proc.stdout
    assert airlock("gate", "scan", str(CLEAN)).returncode == 0  # no digest asked: nothing to bind


def test_attach_and_gate_take_credentials_from_a_file_or_the_environment(
    htpasswd_registry: Reg, tmp_path: Path
) -> None:
    img = im.image("attach-creds")
    htpasswd_registry.pusher.push("dev/app", img, "1.0")
    ref = f"{htpasswd_registry.host}/dev/app:1.0"
    creds = tmp_path / "creds"
    creds.write_text("alice:wonderland\n")
    attached = airlock("attach", ref, str(PASSING), "--kind", "pytest", "--creds-file", str(creds))
    assert attached.returncode == 0, attached.stderr
    assert [e["digest"] for e in fallback_listing(htpasswd_registry, "dev/app", img.digest)] == [
        attached.stdout.strip()
    ]
    gated = airlock("gate", "tests", ref, "--attached", env={"AIRLOCK_CREDS": "alice:wonderland"})
    assert gated.returncode == 0, gated.stdout + gated.stderr
    argv = airlock("gate", "tests", ref, "--attached", "--creds", "alice:wonderland")
    assert argv.returncode == 0 and "airlock: warning: --creds " in argv.stderr
    assert "--creds-file" in argv.stderr and "AIRLOCK_CREDS" in argv.stderr
    for proc in (attached, gated, argv):
        assert "wonderland" not in proc.stderr + proc.stdout
    missing = airlock("attach", ref, str(PASSING), "--kind", "pytest", "--creds-file", "nope")
    assert_one_line_error(missing, 2, "--creds-file nope", "no such file")
