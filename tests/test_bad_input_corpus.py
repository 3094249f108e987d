"""The bad-input corpus: references, manifests, reports, policies, pipeline.yaml and CLI
arguments, each run through `airlock` as a subprocess (as scripts run it).

Every case must end with: the documented exit code, exactly one `airlock: error: …` line on
stderr and nothing on stdout, no traceback, no secret repeated, and nothing written — neither
to the registry's storage (its files compared before and after) nor to the working directory.
(Webhook bodies are the receiver's HTTP inputs: tests/e2e/test_webhooks.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from airlock.localregistry import LocalRegistry, start_registry
from tests.support import images as im
from tests.support.cli import AIRLOCK
from tests.support.hostile import echoing_registry, html_site, secret_forms
from tests.support.images import Pusher

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SECRET = "s3cr3t-pw"
H = "{host}"  # replaced by the registry's host:port
ODD = "{odd}"  # replaced by the scripted registry's host:port
HTML = "{html}"  # replaced by a web site's host:port (200 and HTML everywhere: not a registry)
ECHO = "{echo}"  # replaced by a registry that echoes the credentials it is sent in its errors


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int = 2
    needle: str = ""  # a word the error line must contain
    files: dict[str, str | bytes] = field(default_factory=dict)  # written to the cwd first
    env: dict[str, str] = field(default_factory=dict)  # set for this run (stdin is always empty)


def _pipeline(**change: object) -> str:
    doc: dict = {
        "registries": {"local": {"url": H}},
        "stages": [
            {"name": "dev", "registry": "local", "repository": "dev/{name}"},
            {"name": "qa", "registry": "local", "repository": "qa/{name}", "gates": []},
        ],
    }
    doc.update(change)
    return yaml.safe_dump(doc)


def _signed_stages(**qa: object) -> list[dict]:
    """dev → qa, qa trusting an inline key unless `qa` changes it (None: removes the key)."""
    public = (FIXTURES / "attestations" / "sigstore-go" / "publish_key.pub").read_text()
    stage = {"name": "qa", "registry": "local", "repository": "qa/{name}", "public_key": public}
    stage.update(qa)
    return [
        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
        {k: v for k, v in stage.items() if v is not None},
    ]


def _virtual(**change: object) -> str:
    doc: dict = {
        "registries": {"local": {"url": H}},
        "repositories": {"docker": {"members": [{"registry": "local", "prefix": "dev"}]}},
    }
    doc.update(change)
    return yaml.safe_dump(doc)


TRIVY = (FIXTURES / "trivy" / "alpine-310-registry.json").read_text()
PYTEST = (FIXTURES / "pytest-json-report" / "all-passed.report.json").read_text()
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    '<testsuite name="x" tests="1"><testcase name="&lol2;"/></testsuite>'
)
D64 = "sha256:" + "0" * 64
RUN = str(uuid.uuid4())
COPY_TO = f"{H}/prod/app"

CASES = [
    # -- references
    Case("ref-empty", ("copy", "", COPY_TO), needle="empty"),
    Case("ref-uppercase", ("copy", f"{H}/Dev/App:1.0", COPY_TO)),
    Case("ref-two-tags", ("copy", f"{H}/dev/app:1.0:2.0", COPY_TO)),
    Case("ref-short-digest", ("copy", f"{H}/dev/app@sha256:abc", COPY_TO)),
    Case("ref-md5", ("copy", f"{H}/dev/app@md5:0123456789abcdef", COPY_TO)),
    Case("ref-space", ("copy", f"{H}/dev/app 1.0", COPY_TO)),
    Case("ref-scheme", ("copy", f"http://{H}/dev/app:1.0", COPY_TO)),
    Case("ref-trailing-slash", ("copy", f"{H}/dev/app:1.0", f"{H}/prod/app/")),
    Case("ref-traversal", ("copy", f"{H}/dev/../app:1.0", COPY_TO)),
    Case("ref-long-tag", ("copy", f"{H}/dev/app:{'t' * 129}", COPY_TO)),
    Case("ref-userinfo", ("copy", f"alice:{SECRET}@{H}/dev/app:1.0", COPY_TO)),
    Case("ref-unknown-repo", ("copy", f"{H}/dev/nosuch:1.0", COPY_TO), needle="manifest unknown"),
    Case("ref-unknown-tag", ("copy", f"{H}/dev/app:nosuch", COPY_TO), needle="manifest unknown"),
    Case("ref-unknown-digest", ("copy", f"{H}/dev/app@{D64}", COPY_TO), needle="manifest unknown"),
    Case("ref-plan-bad", ("plan", f"{H}/dev/APP", COPY_TO)),
    Case("ref-attach-bad", ("attach", f"{H}/dev/app:", "r.json", "--kind", "pytest")),
    # -- manifests a source serves that airlock will not copy (a scripted registry, {odd}:
    # distribution refuses to store them)
    *(
        Case(f"manifest-{name}", ("copy", f"{ODD}/odd/{name}:1.0", COPY_TO), code, needle)
        for name, code, needle in [
            ("schema1", 2, ""),
            ("unknown-type", 2, ""),
            ("oversized", 2, ""),
            ("not-json", 2, ""),
            ("index-manifests-not-a-list", 2, ""),
            ("digest-header-lies", 3, ""),
            ("index-over-cap", 2, "limit of 1000"),  # 1,001 children
            ("referrers-over-cap", 2, "limit of 1000"),  # the referrers API lists 1,001
            ("fallback-over-cap", 2, "limit of 1000"),  # the fallback tag's index lists 1,001
        ]
    ),
    # -- hosts that are not what they should be
    Case(
        "host-not-a-registry",
        ("copy", f"{HTML}/dev/app:1.0", COPY_TO),
        code=3,
        needle="does not look like an OCI registry",
    ),
    Case(
        "host-echoes-credentials",
        ("copy", f"{ECHO}/dev/app:1.0", COPY_TO, "--src-creds-file", "c.txt"),
        code=3,
        needle="unexpected answer 400",
        files={"c.txt": f"alice:{SECRET}\n"},
    ),
    # -- credentials: files (`-` is stdin, empty here) and environment variables
    *(
        Case(
            f"creds-{name}",
            ("copy", f"{H}/dev/app:1.0", COPY_TO, *flags),
            needle=needle,
            files=files,
        )
        for name, flags, needle, files in [
            ("file-missing", ("--src-creds-file", "nope.txt"), "nope.txt: no such file", {}),
            ("file-empty", ("--src-creds-file", "c.txt"), "empty", {"c.txt": ""}),
            ("file-no-colon", ("--dest-creds-file", "c.txt"), "USER:PASSWORD", {"c.txt": SECRET}),
            (
                "file-two-lines",
                ("--src-creds-file", "c.txt"),
                "one line",
                {"c.txt": f"alice:{SECRET}\nbob:{SECRET}\n"},
            ),
            ("file-directory", ("--src-creds-file", "."), "cannot read", {}),
            ("file-not-utf8", ("--src-creds-file", "c.txt"), "UTF-8", {"c.txt": b"a:\xff\xfe"}),
            ("stdin-empty", ("--src-creds-file", "-"), "stdin", {}),
            ("stdin-twice", ("--src-creds-file", "-", "--dest-creds-file", "-"), "stdin", {}),
            (
                "flag-and-file",
                ("--src-creds", f"alice:{SECRET}", "--src-creds-file", "c.txt"),
                "not allowed with",
                {"c.txt": f"alice:{SECRET}"},
            ),
        ]
    ),
    Case(
        "env-min-rate-not-a-number",
        ("copy", f"{H}/dev/app:1.0", COPY_TO),
        needle="AIRLOCK_MIN_RATE_KIB",
        env={"AIRLOCK_MIN_RATE_KIB": "fast"},
    ),
    Case(
        "creds-env-no-colon",
        ("copy", f"{H}/dev/app:1.0", COPY_TO),
        needle="AIRLOCK_SRC_CREDS",
        env={"AIRLOCK_SRC_CREDS": SECRET},
    ),
    Case(
        "creds-env-no-password",
        ("plan", f"{H}/dev/app:1.0", COPY_TO),
        needle="AIRLOCK_DEST_CREDS",
        env={"AIRLOCK_DEST_CREDS": "alice:"},
    ),
    Case(
        "creds-attach-file-missing",
        ("attach", f"{H}/dev/app:1.0", "r.json", "--kind", "pytest", "--creds-file", "no.txt"),
        needle="no.txt",
        files={"r.json": PYTEST},
    ),
    Case(
        "creds-gate-env-no-colon",
        ("gate", "tests", f"{H}/dev/app:1.0", "--attached"),
        needle="AIRLOCK_CREDS",
        env={"AIRLOCK_CREDS": SECRET},
    ),
    # -- command-line arguments
    Case("cli-no-command", ()),
    Case("cli-unknown-command", ("bogus",)),
    Case("cli-copy-no-args", ("copy",)),
    Case("cli-copy-one-arg", ("copy", f"{H}/dev/app:1.0")),
    Case("cli-concurrency-zero", ("copy", f"{H}/dev/app:1.0", COPY_TO, "--concurrency", "0")),
    Case("cli-concurrency-word", ("copy", f"{H}/dev/app:1.0", COPY_TO, "--concurrency", "x")),
    Case("cli-creds-no-colon", ("copy", f"{H}/dev/app:1.0", COPY_TO, "--src-creds", SECRET)),
    Case("cli-mistyped-creds", ("copy", f"{H}/dev/app:1.0", COPY_TO, "--srccreds", SECRET)),
    Case("cli-ca-bundle-missing", ("copy", f"{H}/dev/app:1.0", COPY_TO, "--ca-bundle", "no.pem")),
    Case("cli-insecure-no-value", ("copy", f"{H}/dev/app:1.0", COPY_TO, "--insecure")),
    Case("cli-approve-not-uuid", ("approve", "not-a-run", "--by", "alice"), needle="UUID"),
    Case("cli-approve-no-by", ("approve", RUN)),
    Case("cli-approve-empty-by", ("approve", RUN, "--by", "")),
    # a look-alike of another approver (zero-width space), checked before Prefect is asked
    Case("cli-approve-invisible-by", ("approve", RUN, "--by", "ali\u200bce"), needle="U+200B"),
    Case(
        "cli-approve-bad-digest",
        ("approve", RUN, "--by", "bob", "--digest", "sha256:1"),
        needle="sha256:1",
    ),
    Case("cli-promote-no-to", ("promote", f"{H}/dev/app:1.0")),
    Case("cli-pipeline-no-refs", ("pipeline",)),
    Case("cli-rollback-no-stage", ("rollback",)),
    Case("cli-attach-bad-kind", ("attach", f"{H}/dev/app:1.0", "r.json", "--kind", "bogus")),
    Case(
        "cli-attach-missing-file", ("attach", f"{H}/dev/app:1.0", "nope.json", "--kind", "pytest")
    ),
    Case("cli-gate-bad-kind", ("gate", "bogus", "r.json")),
    Case("cli-plan-no-args", ("plan",)),
    Case("cli-webhooks-no-secret", ("webhooks", "serve"), needle="secret"),
    Case("cli-webhooks-bad-port", ("webhooks", "serve", "--port", "http")),
    Case("cli-demo-bad-flag", ("demo", "--fast")),
    # -- signing keys: never overwrite a key, never show the passphrase
    *(
        Case(
            f"keys-generate-existing-{existing.replace('.', '-')}",
            ("keys", "generate", "ci"),
            needle=f"{existing} exists: not overwritten",
            files={existing: "precious\n"},
            env={"AIRLOCK_KEY_PASSPHRASE": SECRET},
        )
        for existing in ("ci.key", "ci.pub")
    ),
    Case("keys-generate-no-folder", ("keys", "generate", "nosuch/ci"), needle="not a folder"),
    Case("keys-generate-bad-kind", ("keys", "generate", "ci", "--kind", "rsa")),
    Case("keys-no-action", ("keys",)),
    # -- reports
    Case("report-empty", ("gate", "tests", "r.json"), files={"r.json": ""}),
    Case("report-not-json", ("gate", "tests", "r.json"), files={"r.json": "{not json"}),
    Case("report-json-list", ("gate", "tests", "r.json"), files={"r.json": "[1, 2]"}),
    Case(
        "report-pytest-no-summary", ("gate", "tests", "r.json"), files={"r.json": '{"tests": []}'}
    ),
    Case("report-junit-not-xml", ("gate", "tests", "r.xml"), files={"r.xml": "<testsuite"}),
    Case("report-junit-entities", ("gate", "tests", "r.xml"), files={"r.xml": BOMB}),
    Case("report-junit-wrong-root", ("gate", "tests", "r.xml"), files={"r.xml": "<html/>"}),
    Case("report-binary", ("gate", "scan", "r.json"), files={"r.json": b"\x00\xff\xfe" * 100}),
    Case("report-missing-file", ("gate", "scan", "missing.json"), needle="missing.json"),
    Case("report-directory", ("gate", "scan", "."), needle="."),
    Case("report-scan-empty", ("gate", "scan", "r.json"), files={"r.json": "{}"}),
    Case(
        "report-trivy-duplicate-key",
        ("gate", "scan", "r.json"),
        files={"r.json": TRIVY.replace('"Results": [', '"Results": [], "Results": [', 1)},
        needle="duplicate",
    ),
    Case(
        "report-sarif-no-runs", ("gate", "scan", "r.json"), files={"r.json": '{"version": "2.1.0"}'}
    ),
    Case(
        "report-grype-bad-matches",
        ("gate", "scan", "r.json"),
        files={"r.json": '{"matches": 5, "descriptor": {"name": "grype"}}'},
    ),
    Case(
        "report-trivy-bad-severity",
        ("gate", "scan", "r.json"),
        files={"r.json": TRIVY.replace('"Severity": "MEDIUM"', '"Severity": "SPICY"', 1)},
    ),
    Case("report-url-scheme", ("gate", "scan", "ftp://example.com/r.json")),
    # -- policies
    Case(
        "policy-unknown-key",
        ("gate", "scan", "r.json", "--policy", "p.yaml"),
        files={"r.json": TRIVY, "p.yaml": "bogus: 1\n"},
        needle="bogus",
    ),
    Case(
        "policy-bad-severity",
        ("gate", "scan", "r.json", "--policy", "p.yaml"),
        files={"r.json": TRIVY, "p.yaml": "fail_on: SEVERE\n"},
    ),
    Case(
        "policy-not-a-mapping",
        ("gate", "scan", "r.json", "--policy", "p.yaml"),
        files={"r.json": TRIVY, "p.yaml": "- a\n- b\n"},
    ),
    Case(
        "policy-invalid-yaml",
        ("gate", "scan", "r.json", "--policy", "p.yaml"),
        files={"r.json": TRIVY, "p.yaml": "fail_on: [\n"},
    ),
    Case(
        "policy-duplicate-key",
        ("gate", "scan", "r.json", "--policy", "p.yaml"),
        files={"r.json": TRIVY, "p.yaml": "fail_on: HIGH\nfail_on: LOW\n"},
    ),
    Case(
        "policy-negative-max",
        ("gate", "tests", "r.json", "--max-failed", "-1"),
        files={"r.json": PYTEST},
    ),
    Case(
        "policy-bad-duration",
        ("gate", "scan", "r.json", "--max-age", "7 parsecs"),
        files={"r.json": TRIVY},
    ),
    Case(
        "policy-bad-max",
        ("gate", "scan", "r.json", "--max", "HIGH=lots"),
        files={"r.json": TRIVY},
    ),
    # -- virtual.yaml and the gateway's commands (a bad config never starts serving)
    *(
        Case(
            f"virtual-{name}",
            ("virtual", "serve", "--config", "v.yaml"),
            needle=needle,
            files={"v.yaml": text},
        )
        for name, text, needle in [
            ("unknown-key", _virtual(bogus=1), "bogus"),
            (
                "unknown-registry",
                _virtual(
                    repositories={
                        "docker": {"members": [{"registry": "elsewhere", "prefix": "dev"}]}
                    }
                ),
                "elsewhere",
            ),
            (
                "unknown-user",
                _virtual(
                    repositories={
                        "docker": {
                            "members": [{"registry": "local", "prefix": "dev"}],
                            "read": ["mallory"],
                        }
                    }
                ),
                "mallory",
            ),
            ("user-without-secret", _virtual(users={"bob": {}}), "password_env"),
            (
                "bad-repository-name",
                _virtual(
                    repositories={"Bad Name": {"members": [{"registry": "local", "prefix": "dev"}]}}
                ),
                "Bad Name",
            ),
            (
                "traversal-prefix",
                _virtual(
                    repositories={
                        "docker": {"members": [{"registry": "local", "prefix": "../etc"}]}
                    }
                ),
                "prefix",
            ),
            ("no-members", _virtual(repositories={"docker": {"members": []}}), "members"),
            (
                "bad-require-stage",
                _virtual(
                    repositories={
                        "shop": {
                            "members": [{"registry": "local", "prefix": "prod"}],
                            "require_stage": "Prod Stage",
                        }
                    }
                ),
                "require_stage",
            ),
            ("not-a-mapping", "- a\n", "v.yaml"),
        ]
    ),
    Case("virtual-missing-config", ("virtual", "serve", "--config", "none.yaml"), needle="none"),
    Case("virtual-serve-no-config", ("virtual", "serve")),
    Case(
        "virtual-nginx-both-entry-kinds",
        ("virtual", "nginx", "--config", "v.yaml", "--domain", "x.org", "--port-base", "9000"),
        needle="exactly one",
        files={"v.yaml": _virtual()},
    ),
    Case(
        "virtual-nginx-cert-without-key",
        ("virtual", "nginx", "--config", "v.yaml", "--port-base", "9000", "--tls-cert", "c.pem"),
        needle="together",
        files={"v.yaml": _virtual()},
    ),
    # -- pipeline.yaml (through `airlock plan REF --to STAGE`, which runs no Prefect)
    *(
        Case(
            f"pipeline-{name}",
            ("plan", f"{H}/dev/app:1.0", "--to", "qa", "--pipeline", "p.yaml"),
            needle=needle,
            files={"p.yaml": text},
        )
        for name, text, needle in [
            ("unknown-key", _pipeline(bogus=1), "bogus"),
            (
                "unknown-gate",
                _pipeline(
                    stages=[
                        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
                        {
                            "name": "qa",
                            "registry": "local",
                            "repository": "qa/{name}",
                            "gates": [{"kind": "vibes"}],
                        },
                    ]
                ),
                "must be 'tests'",
            ),
            (
                "duplicate-stage",
                _pipeline(
                    stages=[
                        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
                        {"name": "dev", "registry": "local", "repository": "qa/{name}"},
                    ]
                ),
                "dev",
            ),
            (
                "unknown-registry",
                _pipeline(
                    stages=[
                        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
                        {"name": "qa", "registry": "elsewhere", "repository": "qa/{name}"},
                    ]
                ),
                "elsewhere",
            ),
            (
                "bad-duration",
                _pipeline(
                    stages=[
                        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
                        {
                            "name": "qa",
                            "registry": "local",
                            "repository": "qa/{name}",
                            "gates": [{"kind": "approval", "timeout": "5 parsecs"}],
                        },
                    ]
                ),
                "timeout",
            ),
            (
                "one-stage",
                _pipeline(
                    stages=[
                        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
                    ]
                ),
                "stages",
            ),
            ("invalid-yaml", "stages: [\n", "p.yaml"),
            (
                "bad-stage-name",
                _pipeline(
                    stages=[
                        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
                        {"name": "Q A!", "registry": "local", "repository": "qa/{name}"},
                    ]
                ),
                "name",
            ),
            ("not-a-mapping", "- just\n- a list\n", "p.yaml"),
            (
                "invisible-approver",
                _pipeline(
                    stages=[
                        {"name": "dev", "registry": "local", "repository": "dev/{name}"},
                        {
                            "name": "qa",
                            "registry": "local",
                            "repository": "qa/{name}",
                            "gates": [{"kind": "approval", "policy": {"approvers": ["bob\u2060"]}}],
                        },
                    ]
                ),
                "invisible or control character",
            ),
        ]
    ),
    Case(
        "pipeline-missing-file",
        ("plan", f"{H}/dev/app:1.0", "--to", "qa", "--pipeline", "no.yaml"),
        needle="no.yaml",
    ),
    Case(
        "pipeline-unknown-stage",
        ("plan", f"{H}/dev/app:1.0", "--to", "uat", "--pipeline", "p.yaml"),
        needle="uat",
        files={"p.yaml": _pipeline()},
    ),
    Case(
        "pipeline-ref-outside",
        ("plan", f"{H}/elsewhere/app:1.0", "--to", "qa", "--pipeline", "p.yaml"),
        needle="not in any stage",
        files={"p.yaml": _pipeline()},
    ),
    # -- stage keys and `airlock verify` (docs/signing.md)
    *(
        Case(
            f"verify-{name}",
            ("verify", ref, "--stage", stage, "--pipeline", "p.yaml"),
            needle=needle,
            files={"p.yaml": _pipeline(stages=_signed_stages(**qa)), **files},
        )
        for name, ref, stage, qa, files, needle in [
            ("bad-ref", "not a ref!", "qa", {}, {}, "invalid"),
            ("first-stage", f"{H}/dev/app:1.0", "dev", {}, {}, "first stage"),
            ("no-public-key", f"{H}/dev/app:1.0", "qa", {"public_key": None}, {}, "no public_key"),
            ("key-missing", f"{H}/dev/app:1.0", "qa", {"public_key": "k.pub"}, {}, "k.pub"),
            (
                "key-is-private",
                f"{H}/dev/app:1.0",
                "qa",
                {"public_key": "k.pub"},
                {"k.pub": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
                "holds a private key",
            ),
            (
                "key-rsa-line",
                f"{H}/dev/app:1.0",
                "qa",
                {"public_key": "ssh-rsa AAAAB3NzaC1yc2E"},
                {},
                "OpenSSH",
            ),
            (
                "key-garbage",
                f"{H}/dev/app:1.0",
                "qa",
                {"public_key": "k.pub"},
                {"k.pub": "not a key"},
                "not a PEM public key",
            ),
            (
                "signed-by-missing",
                f"{H}/dev/app:1.0",
                "qa",
                {"gates": [{"kind": "scan", "policy": {"signed_by": ["ci.pub"]}}]},
                {},
                "ci.pub",
            ),
            (
                "provenance-unsigned",
                f"{H}/dev/app:1.0",
                "qa",
                {"gates": [{"kind": "provenance", "policy": {"builder_ids": ["https://b"]}}]},
                {},
                "provenance policy.signed_by",
            ),
            (
                "identity-without-subject",
                f"{H}/dev/app:1.0",
                "qa",
                {"gates": [{"kind": "tests", "policy": {"signed_by": [{"issuer": "https://x"}]}}]},
                {},
                "names its subject or its subject_regex",
            ),
            (
                "identity-bad-regex",
                f"{H}/dev/app:1.0",
                "qa",
                {
                    "gates": [
                        {
                            "kind": "scan",
                            "policy": {
                                "signed_by": [{"issuer": "https://x", "subject_regex": "("}]
                            },
                        }
                    ]
                },
                {},
                "subject_regex is not a regular expression",
            ),
            (
                "approver-key-missing",
                f"{H}/dev/app:1.0",
                "qa",
                {
                    "gates": [
                        {
                            "kind": "approval",
                            "policy": {"approvers": [{"name": "alice", "key": "alice.pub"}]},
                        }
                    ]
                },
                {},
                "approver alice's key",
            ),
            (
                "approvers-mixed",
                f"{H}/dev/app:1.0",
                "qa",
                {
                    "gates": [
                        {
                            "kind": "approval",
                            "policy": {"approvers": [{"name": "alice", "key": "a.pub"}, "bob"]},
                        }
                    ]
                },
                {},
                "give every approver a key",
            ),
        ]
    ),
    # -- releases (docs/releases.md): refused before anything is pushed
    *(
        Case(
            f"release-{name}",
            ("release", *args, "--pipeline", "p.yaml"),
            code=code,
            needle=needle,
            files={"p.yaml": _pipeline(), **files},
        )
        for name, args, files, code, needle in [
            ("bad-name", ("create", "Shop:1.0", f"{H}/dev/app:1.0"), {}, 2, "NAME:VERSION"),
            ("no-members", ("create", "shop:1.0"), {}, 2, "at least one member"),
            ("outside", ("create", "shop:1.0", f"{H}/elsewhere/app:1.0"), {}, 2, "any stage"),
            ("no-such-tag", ("create", "shop:1.0", f"{H}/dev/app:9.9"), {}, 2, "no such tag"),
            ("from-qa", ("create", "shop:1.0", f"{H}/qa/app:1.0"), {}, 2, "pushed to dev"),
            (
                "tag-lies",
                ("create", "shop:1.0", f"{H}/dev/app:1.0@sha256:{'0' * 64}"),
                {},
                2,
                "names",
            ),
            (
                "file-unknown-key",
                ("create", "--file", "r.yaml"),
                {"r.yaml": "name: shop\nversion: '1'\nmembers: []\nrequire: {same_tags: true}\n"},
                2,
                "same_tags",
            ),
            ("file-missing", ("create", "--file", "nope.yaml"), {}, 2, "nope.yaml"),
            ("show-missing", ("show", "nope:1.0"), {}, 2, "no release nope:1.0"),
        ]
    ),
]


@dataclass
class Seeded:
    registry: LocalRegistry
    env: dict[str, str]
    odd: str
    html: str
    echo: str


_INDEX = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _image(name: str) -> bytes:
    """A well-formed image manifest (its blobs are never fetched: planning fails first)."""
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": im.sha256(b"{}")}
    doc = {
        "schemaVersion": 2,
        "mediaType": _OCI_MANIFEST,
        "config": {**config, "size": 2},
        "layers": [],
        "annotations": {"name": name},
    }
    return json.dumps(doc).encode()


def _wide_index(count: int) -> bytes:
    entries = [
        {"mediaType": _OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 9} for i in range(count)
    ]
    return json.dumps({**_INDEX, "manifests": entries}).encode()


ODD_MANIFESTS: dict[str, tuple[bytes, str]] = {
    "schema1": (
        json.dumps({"schemaVersion": 1, "name": "odd/schema1", "tag": "1.0"}).encode(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ),
    "unknown-type": (b'{"schemaVersion": 2}', "application/x-odd"),
    "oversized": (
        b'{"schemaVersion": 2, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        "application/vnd.oci.image.manifest.v1+json",
    ),
    "not-json": (b"{not json", "application/vnd.oci.image.manifest.v1+json"),
    "index-manifests-not-a-list": (
        json.dumps({**_INDEX, "manifests": {"a": 1}}).encode(),
        _INDEX["mediaType"],
    ),
    "digest-header-lies": (
        json.dumps({**_INDEX, "manifests": []}).encode(),
        _INDEX["mediaType"],
    ),
    "index-over-cap": (_wide_index(1001), _INDEX["mediaType"]),
    "referrers-over-cap": (_image("referrers-over-cap"), _OCI_MANIFEST),
    "fallback-over-cap": (_image("fallback-over-cap"), _OCI_MANIFEST),
}
# What the scripted registry serves: (NAME, "manifests" or "referrers", REF) → (body, type)
ODD_CONTENT: dict[tuple[str, str, str], tuple[bytes, str]] = {
    **{(name, "manifests", "1.0"): found for name, found in ODD_MANIFESTS.items()},
    ("referrers-over-cap", "referrers", im.sha256(ODD_MANIFESTS["referrers-over-cap"][0])): (
        _wide_index(1001),
        _INDEX["mediaType"],
    ),
    (
        "fallback-over-cap",
        "manifests",
        im.sha256(ODD_MANIFESTS["fallback-over-cap"][0]).replace(":", "-"),
    ): (_wide_index(1001), _INDEX["mediaType"]),
}


@contextmanager
def scripted_registry() -> Iterator[str]:
    """Serves ODD_CONTENT at /v2/odd/NAME/manifests/REF and /v2/odd/NAME/referrers/DIGEST
    (and nothing else)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, body: bool) -> None:
            if self.path == "/v2/":
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                if body:
                    self.wfile.write(b"{}")
                return
            parts = self.path.split("/")  # /v2/odd/NAME/manifests/REF
            found = ODD_CONTENT.get((parts[3], parts[4], parts[5])) if len(parts) == 6 else None
            if found is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            raw, media_type = found
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            if parts[3] == "digest-header-lies":
                digest = "sha256:" + "1" * 64
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if body:
                self.wfile.write(raw)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A registry holding dev/app:1.0, and a scripted one serving what airlock will not copy."""
    base = tmp_path_factory.mktemp("corpus")
    registry = start_registry(base / "registry")
    try:
        pusher = Pusher(registry.url)
        pusher.push("dev/app", im.image("corpus"), "1.0")
        pusher.close()
        docker = base / "docker"
        docker.mkdir()
        env = {**os.environ, "DOCKER_CONFIG": str(docker), "AIRLOCK_WEBHOOK_TOKEN": ""}
        for name in (
            "AIRLOCK_CI_SECRET",
            "AIRLOCK_CREDS",
            "AIRLOCK_SRC_CREDS",
            "AIRLOCK_DEST_CREDS",
        ):
            env.pop(name, None)
        env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # never reached: inputs fail first
        with scripted_registry() as odd, html_site() as html, echoing_registry() as echo:
            yield Seeded(registry, env, odd, html, echo)
    finally:
        registry.stop()


def _tree(root: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, seeded: Seeded, tmp_path: Path) -> None:
    host = seeded.registry.host
    for name, content in case.files.items():
        data = content if isinstance(content, bytes) else content.replace(H, host).encode()
        (tmp_path / name).write_bytes(data)
    storage, cwd = _tree(seeded.registry.root), _tree(tmp_path)
    args = [
        a.replace(H, host).replace(ODD, seeded.odd).replace(HTML, seeded.html) for a in case.args
    ]
    args = [a.replace(ECHO, seeded.echo) for a in args]

    proc = subprocess.run(
        [AIRLOCK, *args],
        cwd=tmp_path,
        env={**seeded.env, **case.env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == case.code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("airlock: error: "), proc.stderr
    assert case.needle in lines[0], lines[0]
    assert proc.stdout == "", proc.stdout
    for form in secret_forms("alice", SECRET):
        assert form not in proc.stderr, form
    assert _tree(seeded.registry.root) == storage, "the registry was written to"
    assert _tree(tmp_path) == cwd, "the working directory was written to"


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
