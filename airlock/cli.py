"""The `airlock` command line.

argparse rather than Typer: `airlock copy` runs once per promotion in CI, and Typer plus click cost
~100 ms of imports on these machines before any work starts. Commands import what they need
lazily, so `airlock copy` never imports Prefect.

Exit codes (docs/cli.md): 0 done, 1 refused (a gate, or --no-clobber), 2 bad input, 3 registry
or network failure after retries. Errors are one line on stderr, never a traceback (set
AIRLOCK_DEBUG=1 to see one before that line, with the same exit code).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# airlock runs on asyncio only, but httpcore imports trio whenever it is installed (Prefect
# brings it): ~0.15 s of every command's start. Marked absent, httpcore uses anyio alone. (h2 is
# left alone, ~35 ms: Prefect's client speaks HTTP/2 when PREFECT_API_ENABLE_HTTP2 is set.)
sys.modules.setdefault("trio", None)  # type: ignore[arg-type]

from airlock import __version__  # noqa: E402 (after the line above, on purpose)
from registry.errors import EXIT_BAD_INPUT, EXIT_REGISTRY, AirlockError, BadInputError  # noqa: E402
from registry.http import tune_http  # noqa: E402

if TYPE_CHECKING:
    from registry.auth import Credentials

_ARGV: list[str] = []  # the arguments main() parses, for scrubbing argparse's messages


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        message = _scrub(message, _ARGV)
        self.exit(EXIT_BAD_INPUT, f"airlock: error: {message} (see `{self.prog} --help`)\n")


MAX_CREDS_CHARS = 64 * 1024  # a credentials file holds one line; never read a device whole
_SECRET_FLAG = re.compile(r"cred|pass|token|secret", re.IGNORECASE)


def _scrub(message: str, argv: Sequence[str]) -> str:
    """argparse repeats arguments it did not understand; never repeat a credential, even under a
    mistyped flag (`--srccreds USER:PASS`). A `…-file` flag's value is a path, not a secret."""
    for i, arg in enumerate(argv):
        flag = arg.partition("=")[0]
        if not arg.startswith("-") or not _SECRET_FLAG.search(flag) or flag.endswith("-file"):
            continue
        _, eq, value = arg.partition("=")
        if not eq and i + 1 < len(argv):
            value = argv[i + 1]
        if value:
            message = message.replace(value, "***")
    return message


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected 1-64, got {value}")
    return value


def connection_flags(
    p: argparse.ArgumentParser, *, two_sided: bool = False, referrers: bool = True
) -> None:
    """Flags every command that talks to a registry shares (and --json)."""
    sides = [("src", "the source"), ("dest", "the target")] if two_sided else [("", "the registry")]
    for side, whose in sides:
        flag, env = _creds_names(side)
        group = p.add_mutually_exclusive_group()
        group.add_argument(
            f"{flag}-file",
            metavar="FILE",
            help=f"credentials for {whose}: a file holding one line USER:PASSWORD, or - for"
            f" stdin (or set {env})",
        )
        group.add_argument(
            flag,
            metavar="USER:PASS",
            help=f"as {flag}-file, but on the command line, visible to other users",
        )
    p.add_argument(
        "--insecure",
        metavar="HOST",
        action="append",
        default=[],
        help="allow plain HTTP / unverified TLS for HOST (repeatable);"
        " loopback registries may always use plain HTTP",
    )
    p.add_argument("--ca-bundle", metavar="FILE", help="PEM file of CAs to trust for HTTPS")
    if referrers:
        p.add_argument(
            "--no-referrers",
            action="store_true",
            help="copy only the image, not its signatures, SBOMs and attached reports",
        )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="airlock",
        description="Promote container images by digest through gated stages.",
    )
    parser.add_argument("--version", action="version", version=f"airlock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "copy",
        help="digest-exact copy of an image, its platforms and referrers",
        description="Copy SRC to DST byte for byte: mounts within a registry,"
        " streams across registries, referrers included. Prints the digest.",
    )
    p.add_argument("src", metavar="SRC", help="source reference, e.g. localhost:5000/dev/app:1.0")
    p.add_argument("dst", metavar="DST", help="target reference; without a tag, SRC's tag is used")
    connection_flags(p, two_sided=True)
    p.add_argument(
        "--no-clobber",
        action="store_true",
        help="refuse (exit 1) if DST's tag points at another digest",
    )
    p.add_argument(
        "--concurrency",
        type=_positive,
        default=6,
        metavar="N",
        help="blobs transferred at once (default 6)",
    )
    p.set_defaults(func=cmd_copy)

    p = sub.add_parser(
        "plan",
        help="dry run: what a copy or a promotion hop would do",
        description="Walk SRC and look at DST; or, with --to STAGE, show the hop into STAGE: the"
        " gates that would run with their verdicts on the evidence there now, and the copy."
        " Writes nothing.",
    )
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST", nargs="?", help="the copy's target (not with --to)")
    p.add_argument("--to", metavar="STAGE", help="plan the promotion of SRC into STAGE")
    p.add_argument("--pipeline", metavar="FILE", help="pipeline.yaml (with --to)")
    connection_flags(p, two_sided=True)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "demo",
        help="the whole story on this machine: push → gates → promotions → approval",
        description="Start a registry, a Prefect server, the webhook receiver and the"
        " deployments on loopback; push an image whose push alone promotes it dev → qa →"
        " staging; approve prod; see a second image stopped at the scan gate.",
    )
    p.add_argument("--keep", action="store_true", help="leave everything running (prints the UI)")
    p.add_argument(
        "--interactive", action="store_true", help="wait for a person to approve prod in the UI"
    )
    p.add_argument(
        "--state-dir", metavar="DIR", help="where state and logs go (default ./.airlock-demo)"
    )
    p.set_defaults(func=cmd_demo)

    from airlock import gatecli  # argparse wiring only; the gates load when a command runs

    gatecli.add_parsers(sub, connection_flags)
    from airlock import flowcli  # Prefect loads only when one of these commands runs

    flowcli.add_parsers(sub)
    from airlock import webhookcli

    webhookcli.add_parsers(sub)
    from airlock import virtualcli

    virtualcli.add_parsers(sub)
    from airlock import keycli

    keycli.add_parsers(sub)
    from airlock import verifycli

    verifycli.add_parsers(sub)
    from airlock import releasecli

    releasecli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_http()
    _ARGV[:] = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_ARGV)
    try:
        return args.func(args)
    except AirlockError as e:
        if os.environ.get("AIRLOCK_DEBUG"):
            _traceback()
        return _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # `airlock plan … | head`: the reader left; the work is done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug or an unmapped library error: still one line, no traceback
        if os.environ.get("AIRLOCK_DEBUG"):
            raise
        import httpx

        if isinstance(e, httpx.HTTPError):
            return _fail(f"network error ({type(e).__name__}); retry", EXIT_REGISTRY)
        return _fail(
            f"internal error ({type(e).__name__}); rerun with AIRLOCK_DEBUG=1 and report it",
            EXIT_REGISTRY,
        )


def _traceback() -> None:
    """The exception being handled, with its traceback, on stderr (AIRLOCK_DEBUG=1), scrubbed of
    every secret airlock knows, as every message it prints is."""
    import traceback

    from registry.secrets import scrub

    sys.stderr.write(scrub(traceback.format_exc()))
    sys.stderr.flush()


def _fail(message: str, code: int) -> int:
    from registry.secrets import scrub

    print(f"airlock: error: {scrub(message)}", file=sys.stderr)
    return code


def warn(message: str) -> None:
    from registry.secrets import scrub

    print(f"airlock: warning: {scrub(message)}", file=sys.stderr)


# ---------------------------------------------------------------------------- copy / plan


def open_clients(
    args: argparse.Namespace, src_registry: str, dst_registry: str, concurrency: int = 6
) -> tuple[Any, Any]:
    from registry.client import RegistryClient
    from registry.reference import hostname

    insecure = set(args.insecure)

    def client(registry: str, creds: Credentials | None) -> RegistryClient:
        return RegistryClient(
            registry,
            credentials=creds,
            insecure=registry in insecure or hostname(registry) in insecure,
            ca_bundle=args.ca_bundle,
            max_connections=2 * concurrency + 4,  # a streamed blob holds a GET and a PUT
        )

    if args.ca_bundle and not os.path.isfile(args.ca_bundle):
        raise BadInputError(f"--ca-bundle {args.ca_bundle}: no such file")

    files = [getattr(args, f"{side}creds_file", None) for side in ("src_", "dest_", "")]
    if files.count("-") > 1:
        raise BadInputError("only one credentials file can be - (stdin)")
    if hasattr(args, "src_creds"):  # copy, plan: a source and a target
        src_creds, dst_creds = side_credentials(args, "src"), side_credentials(args, "dest")
    else:  # attach, gate: one registry
        src_creds = dst_creds = side_credentials(args, "")
    # One client (one pool, one token cache) when both sides are the same registry and identity;
    # there, either of --src-creds/--dest-creds serves both sides.
    if dst_registry == src_registry and (None in (src_creds, dst_creds) or src_creds == dst_creds):
        shared = client(src_registry, src_creds or dst_creds)
        return shared, shared
    return client(src_registry, src_creds), client(dst_registry, dst_creds)


def _creds_names(side: str) -> tuple[str, str]:
    """The flag and environment variable of one side's credentials: --src-creds and
    AIRLOCK_SRC_CREDS, or --creds and AIRLOCK_CREDS where there is one registry ("")."""
    if not side:
        return "--creds", "AIRLOCK_CREDS"
    return f"--{side}-creds", f"AIRLOCK_{side.upper()}_CREDS"


def side_credentials(args: argparse.Namespace, side: str) -> Credentials | None:
    """One side's credentials: USER:PASS on the command line (with a warning), a file (`-`:
    stdin), or the environment variable; None if none is given (docker's config then)."""
    from registry.auth import Credentials

    flag, env = _creds_names(side)
    name = flag[2:].replace("-", "_")
    if value := getattr(args, name, None):
        creds = Credentials.parse(value, flag)
        warn(
            f"{flag} puts the password on the command line, visible to other users of this"
            f" machine (ps, /proc); use {flag}-file FILE or the environment variable {env}"
        )
        return creds
    if path := getattr(args, f"{name}_file", None):
        return Credentials.parse(_read_creds_file(path, f"{flag}-file"), f"{flag}-file {path}")
    if value := os.environ.get(env):
        return Credentials.parse(value, env)
    return None


def _read_creds_file(path: str, flag: str) -> str:
    """The one line USER:PASSWORD of a credentials file (`-`: stdin), its line end dropped as
    docker's --password-stdin does. Errors name the file, never what is in it."""
    where = f"{flag} {path}" if path != "-" else f"{flag} - (stdin)"
    try:
        if path == "-":
            text = sys.stdin.read(MAX_CREDS_CHARS + 1)
        else:
            with Path(path).open(encoding="utf-8") as f:  # /dev/zero has no size to check
                text = f.read(MAX_CREDS_CHARS + 1)
    except FileNotFoundError:
        raise BadInputError(f"{where}: no such file") from None
    except UnicodeDecodeError:
        raise BadInputError(f"{where}: not UTF-8 text; expected one line USER:PASSWORD") from None
    except OSError as e:
        raise BadInputError(f"{where}: cannot read it ({e.strerror})") from None
    if len(text) > MAX_CREDS_CHARS:
        raise BadInputError(f"{where}: over {MAX_CREDS_CHARS} characters; expected one line")
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise BadInputError(f"{where}: is empty; expected one line USER:PASSWORD")
    if "\n" in text or "\r" in text:
        raise BadInputError(f"{where}: has more than one line; expected one line USER:PASSWORD")
    return text


def _references(args: argparse.Namespace) -> tuple[Any, Any]:
    from registry.reference import parse

    return parse(args.src), parse(args.dst, default_tag=None)


def cmd_copy(args: argparse.Namespace) -> int:
    import asyncio

    source, target = _references(args)
    progress = _Progress() if not args.json and sys.stderr.isatty() else None

    async def run() -> Any:
        from registry.copy import copy_image

        src, dst = open_clients(args, source.registry, target.registry, args.concurrency)
        try:
            return await copy_image(
                src,
                source,
                dst,
                target,
                referrers=not args.no_referrers,
                no_clobber=args.no_clobber,
                concurrency=args.concurrency,
                on_plan=progress.start if progress else None,
                on_bytes=progress.advance if progress else None,
            )
        finally:
            await src.aclose()
            if dst is not src:
                await dst.aclose()

    try:
        result = asyncio.run(run())
    finally:
        if progress:
            progress.done()
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
    else:
        print(result.digest)
        for warning in result.warnings:
            warn(warning)
        print(f"{result.target}: {result.summary()}", file=sys.stderr)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import asyncio

    if args.to:
        if args.dst:
            raise BadInputError("plan takes SRC DST, or SRC --to STAGE: not both")
        from airlock.flowcli import plan_hop

        return plan_hop(args)
    if not args.dst:
        raise BadInputError("plan needs SRC DST (a copy), or SRC --to STAGE (a promotion hop)")
    source, target = _references(args)

    async def run() -> Any:
        from registry.copy import plan_copy, reach

        src, dst = open_clients(args, source.registry, target.registry)
        try:
            await reach(src, dst)
            return await plan_copy(src, source, dst, target, referrers=not args.no_referrers)
        finally:
            await src.aclose()
            if dst is not src:
                await dst.aclose()

    plan = asyncio.run(run())
    if args.json:
        print(json.dumps(plan.to_json(), sort_keys=True))
        return 0
    print(_format_plan(plan))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from airlock.demo import run_demo

    state = Path(args.state_dir) if args.state_dir else None
    return run_demo(state, keep=args.keep, interactive=args.interactive)


def _format_plan(plan: Any) -> str:
    from registry.copy import human_size

    lines = [f"{plan.source} -> {plan.target}"]
    blobs = plan.blobs
    lines.append(
        f"blobs: {plan.count('mount')} to mount, {plan.count('stream')} to stream"
        f" ({human_size(plan.bytes_to_stream())}), {plan.count('skip')} already there"
    )
    for b in blobs:
        lines.append(
            f"  {b.action:<6} blob      {b.descriptor.digest}  {human_size(b.descriptor.size)}"
        )
    pushes = sum(1 for m in plan.manifests if not m.exists)
    lines.append(f"manifests: {pushes} to push, {len(plan.manifests) - pushes} already there")
    for m in plan.manifests:
        where = f" as tag {m.tag}" if m.tag else ""
        kind = m.manifest.artifact_type or m.manifest.media_type
        lines.append(
            f"  {'skip' if m.exists else 'push':<6} {m.role:<9} {m.manifest.digest}  {kind}{where}"
        )
    for subject in plan.fallback:
        lines.append(
            f"  merge  fallback  tag sha256-{subject.split(':', 1)[1][:12]}…"
            " (target has no referrers API)"
        )
    if plan.tag_conflict:
        lines.append(
            f"tag {plan.target.tag}: moves from {plan.tag_conflict} (refused with --no-clobber)"
        )
    elif plan.target.tag:
        state = "unchanged" if plan.root.exists else "new"
        lines.append(f"tag {plan.target.tag}: {state}")
    lines.extend(f"warning: {w}" for w in plan.warnings)
    return "\n".join(lines)


class _Progress:
    """A one-line byte counter on a TTY; no dependency, redrawn at most ~10 times a second."""

    def __init__(self) -> None:
        self.total = 0
        self.done_bytes = 0
        self._last = 0.0

    def start(self, plan: Any) -> None:
        self.total = plan.bytes_to_stream()

    def advance(self, n: int) -> None:
        import time

        self.done_bytes += n
        now = time.monotonic()
        if self.total and now - self._last > 0.1:
            self._last = now
            pct = 100 * self.done_bytes / self.total
            sys.stderr.write(
                f"\rstreaming {self.done_bytes / 2**20:.1f}/{self.total / 2**20:.1f} MiB"
                f" ({pct:.0f}%)"
            )
            sys.stderr.flush()

    def done(self) -> None:
        if self._last:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
