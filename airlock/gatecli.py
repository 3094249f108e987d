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
    p.add_argument(
        "--sign-key",
        metavar="FILE",
        help="sign it with this private key (passphrase: $AIRLOCK_KEY_PASSPHRASE) as an in-toto"
        " attestation, attached in both layouts cosign writes (what signed_by policies read)",
    )
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
        type=_standalone_kind,  # checked against the registered kinds only when `gate` runs
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
    import datetime as dt
    import json

    from gates.evidence import FORMATS, from_file
    from registry.reference import parse

    ref = parse(args.ref)
    evidence = from_file(args.file)
    tool, version = _check_report(args.kind, evidence)
    key = None
    if args.sign_key:
        from gates.attested import predicate_of
        from gates.keys import read_private_key

        key = read_private_key(args.sign_key)
        predicate_of(args.kind, evidence.data, version, dt.datetime.now(dt.UTC))  # signable?

    async def run() -> tuple[str, list[str]]:
        from airlock.cli import open_clients
        from registry.manifest import Descriptor
        from registry.referrers import artifact, push_referrer

        client, _ = open_clients(args, ref.registry, ref.registry)
        async with client:
            subject = await client.head_manifest(ref.repository, ref.reference)
            if subject is None:
                raise BadInputError(f"{ref}: no such image (check the tag or digest)")
            described = Descriptor(subject.media_type, subject.digest, subject.size)
            if key is not None:
                from gates.attested import attest

                name = f"{ref.registry}/{ref.repository}"
                report = (args.kind, evidence.data, version)
                done = await attest(client, ref.repository, described, name, report, key)
                return done.bundle, []
            annotations = {"vnd.airlock.evidence.format": args.kind}
            if tool:
                annotations["vnd.airlock.evidence.tool"] = tool
            if version:
                annotations["vnd.airlock.evidence.tool-version"] = version
            manifest, blobs = artifact(
                described,
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
    from gates.evidence import FORMATS
    from gates.kinds import reading

    found = detect_format(evidence.data)
    if found != kind:
        what = f"a {found} report" if found else "no report format airlock reads"
        raise BadInputError(f"{evidence.source}: this is {what}, not {kind}; check --kind")
    report = reading(FORMATS[kind]).parse(evidence)  # the gate kind that reads this format
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


# Policy flags: argparse dest → the policy field it sets. Which kind a flag belongs to is the
# kind whose policy model has that field (gates/kinds.py); the flags themselves stay argparse
# wiring (add_parsers), so that `airlock --help` loads no gate.
_FLAGS: dict[str, tuple[str, str]] = {  # dest → (flag, policy field)
    "min_tests": ("--min-tests", "min_tests"),
    "max_failed": ("--max-failed", "max_failed"),
    "max_errors": ("--max-errors", "max_errors"),
    "max_skipped_ratio": ("--max-skipped-ratio", "max_skipped_ratio"),
    "min_pass_rate": ("--min-pass-rate", "min_pass_rate"),
    "require": ("--require", "required"),
    "fail_on": ("--fail-on", "fail_on"),
    "ignore_unfixed": ("--ignore-unfixed", "ignore_unfixed"),
    "max_age": ("--max-age", "max_age"),
    "max_counts": ("--max", "max_counts"),
    "require_sig": ("--require-signature", "require"),
    "key": ("--key", "public_keys"),
}


def _standalone_kind(name: str) -> str:
    """KIND of `airlock gate`: a registered kind that needs no pipeline (tests, scan, …)."""
    from gates.kinds import gate, known

    kinds = tuple(k for k in known() if gate(k).standalone)
    if name not in kinds:  # worded as argparse words `choices`
        quoted = ", ".join(repr(k) for k in kinds)
        raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {quoted})")
    return name


def _owner(field: str) -> str:
    """The kind whose policy has `field` (the first registered, among standalone kinds)."""
    from gates.kinds import gate, known

    return next(k for k in known() if gate(k).standalone and field in gate(k).policy.model_fields)


def _check_flags(args: argparse.Namespace) -> None:
    """A flag that does not apply is an error, never silently ignored."""
    from gates.kinds import ReportGate, gate

    kind = gate(args.kind)
    for dest, (flag, field) in _FLAGS.items():
        if getattr(args, dest) is not None and field not in kind.policy.model_fields:
            raise BadInputError(
                f"{flag} is a {_owner(field)} policy flag; it does not apply to gate {args.kind}"
            )
    if args.per_platform and not args.attached:
        raise BadInputError("--per-platform applies to evidence read with --attached")
    if args.attached and not isinstance(kind, ReportGate):
        raise BadInputError(f"gate {args.kind} always reads the registry: drop --attached")


def _policy(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from gates.kinds import gate

    _check_flags(args)
    values: dict[str, Any] = _read_policy(args.policy) if args.policy else {}
    converters = {"max_counts": _counts, "key": _keys}  # flag text → policy value
    for dest, (_, field) in _FLAGS.items():
        value = getattr(args, dest)
        value = converters[dest](value) if dest in converters else value
        if value is not None:
            values[field] = value
    model = gate(args.kind).policy
    try:
        return model.model_validate(values)
    except ValidationError as e:
        where = f"policy {args.policy}" if args.policy else "policy"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in e.errors()
        )
        raise BadInputError(f"{where}: {problems}") from None


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

    from gates.base import ReportPolicy
    from gates.evidence import from_file, from_url
    from gates.kinds import Candidate, ReportGate, gate

    now = dt.datetime.now(dt.UTC)
    kind = gate(args.kind)
    if isinstance(kind, ReportGate) and not args.attached:  # a report file or URL
        source = args.source
        if source.startswith(("http://", "https://")):
            evidence = await from_url(source, subject=_digest(args.digest))
        else:
            evidence = from_file(source, subject=_digest(args.digest))
        return kind.judge_report(evidence, policy, now)

    from airlock.cli import open_clients
    from registry.reference import parse

    ref = parse(args.source)
    if args.per_platform and isinstance(policy, ReportPolicy):
        policy = policy.model_copy(update={"per_platform": True})
    client, _ = open_clients(args, ref.registry, ref.registry)
    async with client:
        image = await client.get_manifest(ref.repository, ref.reference)
        if args.digest and _digest(args.digest) != image.digest:
            raise BadInputError(f"{ref} is {image.digest}, not --digest {args.digest}")
        candidate = Candidate(client, ref.repository, image, named=ref.name)
        return await kind.judge(candidate, policy, now)


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
