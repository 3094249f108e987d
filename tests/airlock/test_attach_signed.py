"""`airlock attach --sign-key`: CI signs its reports, and a `signed_by` policy reads them back —
both layouts cosign writes, for a pytest report and a Trivy scan (as cosign-vuln). The attacks:
the same report signed with a developer's own key, or attached unsigned, does not pass; a bad
key file is one line, exit 2, and nothing is attached; the key and its passphrase never show."""

from __future__ import annotations

import json
from pathlib import Path

from gates.keys import generate
from tests.support import images as im
from tests.support.cli import airlock, assert_one_line_error
from tests.support.registries import Reg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PASSING = FIXTURES / "pytest-json-report" / "all-passed.report.json"
CLEAN = FIXTURES / "trivy" / "sl-micro-rancher5.4-no-vulns.json"
PASSPHRASE = "correct horse battery staple"


def keys(tmp_path: Path) -> dict[str, Path]:
    """ci's key (encrypted with PASSPHRASE) and a developer's; ci.pub is what policies trust."""
    out = {}
    for name, passphrase in (("ci", PASSPHRASE), ("developer", None)):
        private, public = generate(passphrase=passphrase)
        (tmp_path / f"{name}.key").write_bytes(private)
        (tmp_path / f"{name}.pub").write_bytes(public)
        out[name] = tmp_path / f"{name}.key"
    return out


def policy(tmp_path: Path, **extra: object) -> str:
    path = tmp_path / "policy.json"
    pem = (tmp_path / "ci.pub").read_text()
    path.write_text(json.dumps({"signed_by": [pem], **extra}))
    return str(path)


def clean_scan(img: im.Image, tmp_path: Path) -> Path:
    doc = json.loads(CLEAN.read_bytes())
    doc["Metadata"]["RepoDigests"] = [f"dev/app@{img.digest}"]
    doc["Metadata"]["ImageID"] = img.blobs[0].digest
    path = tmp_path / "trivy.json"
    path.write_text(json.dumps(doc))
    return path


def test_signed_reports_pass_a_signed_by_policy_in_both_layouts(
    registry: Reg, tmp_path: Path
) -> None:
    key = keys(tmp_path)["ci"]
    img = im.image("signed-attach")
    registry.pusher.push("dev/app", img, "1.0")
    ref = f"{registry.host}/dev/app:1.0"
    env = {"AIRLOCK_KEY_PASSPHRASE": PASSPHRASE}

    for report, kind in ((PASSING, "pytest"), (clean_scan(img, tmp_path), "trivy")):
        done = airlock("attach", ref, str(report), "--kind", kind, "--sign-key", str(key), env=env)
        assert done.returncode == 0, done.stderr
        assert PASSPHRASE not in done.stdout + done.stderr
        assert "PRIVATE KEY" not in done.stdout + done.stderr
    # the .att tag (cosign's layout) holds both envelopes; each is also a bundle referrer
    att = registry.pusher.manifest("dev/app", f"sha256-{img.digest[7:]}.att")
    assert att is not None
    layers = json.loads(att[0])["layers"]
    assert [la["annotations"]["predicateType"] for la in layers] == [
        "urn:airlock:attestation:pytest-json-report:v1",
        "https://cosign.sigstore.dev/attestation/vuln/v1",
    ]
    for kind in ("tests", "scan"):
        judged = airlock("gate", kind, ref, "--attached", "--policy", policy(tmp_path), "--json")
        assert judged.returncode == 0, judged.stdout + judged.stderr
        # one envelope, read from each layout; each verified
        sources = [e["source"] for e in json.loads(judged.stdout)["evidence"]]
        assert len(sources) == 2 and all("signed by sha256:" in s for s in sources), sources
        assert any(".att layer" in s for s in sources), sources


def test_a_developers_key_or_no_key_does_not_pass(registry: Reg, tmp_path: Path) -> None:
    developer = keys(tmp_path)["developer"]
    img = im.image("forged-attach")
    registry.pusher.push("dev/app", img, "1.0")
    ref = f"{registry.host}/dev/app:1.0"
    forged = airlock("attach", ref, str(PASSING), "--kind", "pytest", "--sign-key", str(developer))
    assert forged.returncode == 0, forged.stderr
    plain = airlock("attach", ref, str(PASSING), "--kind", "pytest")
    assert plain.returncode == 0, plain.stderr

    judged = airlock("gate", "tests", ref, "--attached", "--policy", policy(tmp_path))
    assert judged.returncode == 1, judged.stdout + judged.stderr
    assert "is signed by a key the policy does not name" in judged.stdout


def test_bad_keys_are_one_line_and_attach_nothing(registry: Reg, tmp_path: Path) -> None:
    key = keys(tmp_path)["ci"]
    img = im.image("bad-key-attach")
    registry.pusher.push("dev/app", img, "1.0")
    ref = f"{registry.host}/dev/app:1.0"
    (tmp_path / "garbage.key").write_text("not a key")
    grype = FIXTURES / "grype"
    grype_report = next(grype.glob("*.json"))
    cases = [
        (("--sign-key", str(tmp_path / "missing.key")), {}, "missing.key"),
        (("--sign-key", str(tmp_path / "garbage.key")), {}, "garbage.key"),
        (("--sign-key", str(tmp_path / "ci.pub")), {}, "ci.pub"),
        (("--sign-key", str(key)), {}, "AIRLOCK_KEY_PASSPHRASE"),  # encrypted, no passphrase
        (("--sign-key", str(key)), {"AIRLOCK_KEY_PASSPHRASE": "wrong"}, "passphrase"),
    ]
    for flags, env, needle in cases:
        proc = airlock("attach", ref, str(PASSING), "--kind", "pytest", *flags, env=env)
        assert_one_line_error(proc, 2, needle)
        assert "wrong" not in proc.stderr.replace("wrong passphrase", "")
    grype_signed = airlock(
        "attach", ref, str(grype_report), "--kind", "grype", "--sign-key", str(key),
        env={"AIRLOCK_KEY_PASSPHRASE": PASSPHRASE},
    )  # fmt: skip
    assert_one_line_error(grype_signed, 2, "grype reports are not read as signed attestations")
    assert registry.pusher.manifest("dev/app", f"sha256-{img.digest[7:]}.att") is None
