"""`airlock attach` and `airlock gate`: put evidence on an image, judge evidence offline.

    airlock attach REF FILE --kind pytest|junit|trivy|grype|sarif
    airlock gate tests|scan FILE|URL [--digest D] [--policy FILE] [policy flags]
    airlock gate tests|scan REF --attached       the newest report attached to REF
    airlock gate signature REF [--key FILE]… [--require-signature present|verified]

Exit codes: 0 passed (or attached), 1 the gate refused, 2 bad input (a report that cannot be read,
a policy with an unknown key, …), 3 registry failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from registry.errors import EXIT_BAD_INPUT, EXIT_REFUSED, BadInputError

KINDS = ("pytest", "junit", "trivy", "grype", "sarif")


def add_parsers(sub: Any, connection_flags: Any) -> None:
    p = sub.add_parser(
        "attach",
        help="attach a test or scan report to an image digest (OCI referrer)",
        description="Push FILE as an OCI 1.1 referrer of REF's digest, after checking it is a"
        " readable report of that kind. Prints the referrer's digest.",
    )
    p.add_argument("ref", metavar="REF", help="the image, e.g. localhost:5000/dev/app:1.0")
    p.add_argument("file", metavar="FILE", help="the report")
    p.add_argument("--kind", required=True, choices=KINDS, help="the report's format")
    connection_flags(p, referrers=False)
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser(
        "gate",
        help="evaluate one gate on a report (file, URL or attached evidence)",
        description="Evaluate one gate and print its verdict as a table. Exit 0 passed,"
        " 1 refused, 2 bad input.",
    )
    p.add_argument(
        "kind",
        choices=("tests", "scan", "signature"),
        metavar="KIND",
        help="tests, scan or signature",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="the report, a file or URL; an image reference with --attached and for signature",
    )
    p.add_argument(
        "--attached",
        action="store_true",
        help="SOURCE is an image: read the newest report attached to it",
    )
    p.add_argument(
        "--per-platform",
        action="store_true",
        help="with --attached and an index: every platform image needs its own report",
    )
    p.add_argument(
        "--digest",
        metavar="DIGEST",
        help="the image digest the report must be about (a report naming others is refused)",
    )
    p.add_argument("--policy", metavar="FILE", help="policy as YAML or JSON; flags override it")
    t = p.add_argument_group("tests policy")
    t.add_argument("--min-tests", type=int)
    t.add_argument("--max-failed", type=int)
    t.add_argument("--max-errors", type=int)
    t.add_argument("--max-skipped-ratio", type=float)
    t.add_argument("--min-pass-rate", type=float)
    t.add_argument(
        "--require",
        action="append",
        metavar="TEST_ID",
        help="a test id or pattern that must have passed (repeatable)",
    )
    s = p.add_argument_group("scan policy")
    s.add_argument("--fail-on", metavar="SEVERITY", help="refuse at or above (default HIGH)")
    s.add_argument(
        "--max",
        action="append",
        metavar="SEVERITY=N",
        dest="max_counts",
        help="at most N findings of SEVERITY (repeatable)",
    )
    s.add_argument("--ignore-unfixed", action="store_true", default=None)
    s.add_argument("--max-age", metavar="DURATION", help="e.g. 7d, 24h, or ISO 8601 (P7D)")
    g = p.add_argument_group("signature policy")
    g.add_argument("--key", action="append", metavar="FILE", help="cosign public key (PEM)")
    g.add_argument("--require-signature", choices=("present", "verified"), dest="require_sig")
    connection_flags(p, referrers=False)
    p.set_defaults(func=cmd_gate)


# ---------------------------------------------------------------------------- attach


def cmd_attach(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from gates.evidence import FORMATS, from_file
    from registry.reference import parse

    ref = parse(args.ref)
    evidence = from_file(args.file)
    tool, version = _check_report(args.kind, evidence)

    async def run() -> tuple[str, list[str]]:
        from airlock.cli import open_clients
        from registry.manifest import Descriptor
        from registry.referrers import artifact, push_referrer

        client, _ = open_clients(args, ref.registry, ref.registry)
        async with client:
            subject = await client.head_manifest(ref.repository, ref.reference)
            if subject is None:
                raise BadInputError(f"{ref}: no such image (check the tag or digest)")
            annotations = {"vnd.airlock.evidence.format": args.kind}
            if tool:
                annotations["vnd.airlock.evidence.tool"] = tool
            if version:
                annotations["vnd.airlock.evidence.tool-version"] = version
            manifest, blobs = artifact(
                Descriptor(subject.media_type, subject.digest, subject.size),
                FORMATS[args.kind],
                evidence.data,
                title=Path(args.file).name,
                annotations=annotations,
            )
            warnings = await push_referrer(client, ref.repository, manifest, blobs)
            return manifest.digest, warnings

    digest, warnings = asyncio.run(run())
    for warning in warnings:
        print(f"airlock: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"referrer": digest, "subject": str(ref), "kind": args.kind}))
    else:
        print(digest)
    return 0


def _check_report(kind: str, evidence: Any) -> tuple[str | None, str | None]:
    """Refuse to attach what the gate could not read: a report of another format, or broken."""
    module = _gate_module("tests" if kind in ("pytest", "junit") else "scan")
    found = detect_format(evidence.data)
    if found != kind:
        what = f"a {found} report" if found else "no report format airlock reads"
        raise BadInputError(f"{evidence.source}: this is {what}, not {kind}; check --kind")
    report = module.parse(evidence)
    return getattr(report, "tool", None), getattr(report, "tool_version", None)


def detect_format(data: bytes) -> str | None:
    import gates.scan
    import gates.tests

    return gates.tests.detect(data) or gates.scan.detect(data)


# ---------------------------------------------------------------------------- gate


def cmd_gate(args: argparse.Namespace) -> int:
    import asyncio

    policy = _policy(args)
    result = asyncio.run(_evaluate(args, policy))
    if args.json:
        print(result.model_dump_json())
    if result.error:  # the evidence itself was unusable: one line, as for any bad input
        print(f"airlock: error: {result.error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.json:
        if result.rows:
            print(_table(result.rows))
        print(result.summary)
    return 0 if result.passed else EXIT_REFUSED


_KIND_FLAGS = {  # argparse dest → flag, per gate kind
    "tests": {
        "min_tests": "--min-tests",
        "max_failed": "--max-failed",
        "max_errors": "--max-errors",
        "max_skipped_ratio": "--max-skipped-ratio",
        "min_pass_rate": "--min-pass-rate",
        "require": "--require",
    },
    "scan": {
        "fail_on": "--fail-on",
        "ignore_unfixed": "--ignore-unfixed",
        "max_age": "--max-age",
        "max_counts": "--max",
    },
    "signature": {"require_sig": "--require-signature", "key": "--key"},
}


def _check_flags(args: argparse.Namespace) -> None:
    """A flag that does not apply is an error, never silently ignored."""
    for kind, flags in _KIND_FLAGS.items():
        given = [flag for dest, flag in flags.items() if getattr(args, dest) is not None]
        if kind != args.kind and given:
            raise BadInputError(
                f"{given[0]} is a {kind} policy flag; it does not apply to gate {args.kind}"
            )
    if args.per_platform and not args.attached:
        raise BadInputError("--per-platform applies to evidence read with --attached")
    if args.kind == "signature" and args.attached:
        raise BadInputError("gate signature always reads the registry: drop --attached")


def _policy(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    _check_flags(args)
    values: dict[str, Any] = _read_policy(args.policy) if args.policy else {}
    flags = {
        "tests": {
            "min_tests": args.min_tests,
            "max_failed": args.max_failed,
            "max_errors": args.max_errors,
            "max_skipped_ratio": args.max_skipped_ratio,
            "min_pass_rate": args.min_pass_rate,
            "required": args.require,
        },
        "scan": {
            "fail_on": args.fail_on,
            "ignore_unfixed": args.ignore_unfixed,
            "max_age": args.max_age,
            "max_counts": _counts(args.max_counts),
        },
        "signature": {"require": args.require_sig, "public_keys": _keys(args.key)},
    }[args.kind]
    values.update({k: v for k, v in flags.items() if v is not None})
    model = _policy_model(args.kind)
    try:
        return model.model_validate(values)
    except ValidationError as e:
        where = f"policy {args.policy}" if args.policy else "policy"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in e.errors()
        )
        raise BadInputError(f"{where}: {problems}") from None


def _policy_model(kind: str) -> Any:
    if kind == "tests":
        from gates.tests import TestsPolicy

        return TestsPolicy
    if kind == "scan":
        from gates.scan import ScanPolicy

        return ScanPolicy
    from gates.signature import SignaturePolicy

    return SignaturePolicy


def _read_policy(path: str) -> dict[str, Any]:
    from gates.yamlfile import read_mapping

    return read_mapping(path, "policy")


def _counts(items: list[str] | None) -> dict[str, int] | None:
    if not items:
        return None
    out: dict[str, int] = {}
    for item in items:
        severity, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit():
            raise BadInputError(f"--max {item}: expected SEVERITY=N, e.g. --max CRITICAL=0")
        out[severity.strip().upper()] = int(n)
    return out


def _keys(paths: list[str] | None) -> list[str] | None:
    if not paths:
        return None
    from gates.signature import read_public_keys

    return read_public_keys(paths)


async def _evaluate(args: argparse.Namespace, policy: Any) -> Any:
    import datetime as dt

    from gates.base import GateResult, combine
    from gates.evidence import GATE_TYPES, from_file, from_referrers, from_url, target_of

    now = dt.datetime.now(dt.UTC)
    if args.kind != "signature" and not args.attached:
        source = args.source
        if source.startswith(("http://", "https://")):
            evidence = await from_url(source, subject=_digest(args.digest))
        else:
            evidence = from_file(source, subject=_digest(args.digest))
        return _gate_module(args.kind).evaluate(evidence, policy, now=now)

    from airlock.cli import open_clients
    from registry.reference import parse

    ref = parse(args.source)
    client, _ = open_clients(args, ref.registry, ref.registry)
    async with client:
        image = await client.get_manifest(ref.repository, ref.reference)
        if args.digest and _digest(args.digest) != image.digest:
            raise BadInputError(f"{ref} is {image.digest}, not --digest {args.digest}")
        if args.kind == "signature":
            from gates.signature import collect, evaluate

            found = await collect(client, ref.repository, image.digest)
            return evaluate(found, policy, image.digest, now=now)
        target = await target_of(client, ref.repository, image)
        found = await from_referrers(
            client,
            ref.repository,
            target,
            GATE_TYPES[args.kind],
            per_platform=args.per_platform or policy.per_platform,
        )
    results = [
        _gate_module(args.kind).evaluate(evidence, policy, now=now)
        if evidence
        else GateResult(
            gate=args.kind,
            passed=False,
            summary=f"refused: no {args.kind} report is attached to {ref.name}@{digest}",
            evaluated_at=now,
        )
        for digest, evidence in found
    ]
    return results[0] if len(results) == 1 else combine(args.kind, results)


def _gate_module(kind: str) -> Any:
    if kind == "tests":
        import gates.tests as module
    else:
        import gates.scan as module
    return module


def _digest(value: str | None) -> str | None:
    if value is None:
        return None
    from registry.reference import validate_digest

    return validate_digest(value)


def _table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(row.get(c, "").ljust(widths[c]) for c in columns).rstrip() for row in rows]
    return "\n".join(lines)
