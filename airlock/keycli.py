"""`airlock keys generate NAME`: a signing key pair, NAME.key (private) and NAME.pub (public).

NAME.key is PKCS#8 PEM, encrypted with AIRLOCK_KEY_PASSPHRASE when that is set (never taken from
an argument: argv is visible to every user of the machine), written with mode 0600. NAME.pub is
PEM SubjectPublicKeyInfo, the form `signed_by:` and `public_key:` name. An existing file is never
overwritten: the command refuses (exit 2) before writing anything.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from registry.errors import BadInputError

KINDS = ("ecdsa-p256", "ed25519")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "keys",
        help="signing keys for evidence and verification summaries",
        description="Make the key pairs airlock signs and verifies with.",
    )
    action = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    g = action.add_parser(
        "generate",
        help="write a new key pair: NAME.key (private, mode 0600) and NAME.pub",
        description="Write NAME.key (PKCS#8 PEM, encrypted with $AIRLOCK_KEY_PASSPHRASE when it"
        " is set, mode 0600) and NAME.pub (PEM). Refuses to overwrite either file.",
    )
    g.add_argument("name", metavar="NAME", help="path prefix, e.g. keys/ci")
    g.add_argument(
        "--kind",
        choices=KINDS,
        default="ecdsa-p256",
        help="ecdsa-p256 (cosign's default, the default here) or ed25519",
    )
    g.set_defaults(func=cmd_generate)


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file, never an existing one (O_EXCL: not through a symlink either)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
    finally:
        os.close(fd)


def cmd_generate(args: argparse.Namespace) -> int:
    from airlock.cli import warn
    from gates import keys

    if not args.name or args.name.endswith(("/", os.sep)):
        raise BadInputError(f"NAME {args.name!r} must name a file prefix, e.g. keys/ci")
    private_path, public_path = Path(args.name + ".key"), Path(args.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise BadInputError(
                f"{path} exists: not overwritten (remove it or choose another NAME)"
            )
    folder = private_path.parent
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder: create it first")

    passphrase = keys.passphrase_from_env()
    private_pem, public_pem = keys.generate(args.kind, passphrase)
    public = keys.load_public_key(public_pem, str(public_path))
    try:
        _create(private_path, private_pem, 0o600)
    except FileExistsError:
        raise BadInputError(f"{private_path} exists: not overwritten") from None
    except OSError as e:
        raise BadInputError(f"cannot write {private_path}: {e.strerror}") from None
    try:
        _create(public_path, public_pem, 0o644)
    except OSError as e:
        private_path.unlink(missing_ok=True)  # all or nothing
        if isinstance(e, FileExistsError):
            raise BadInputError(f"{public_path} exists: not overwritten") from None
        raise BadInputError(f"cannot write {public_path}: {e.strerror}") from None

    protection = f"encrypted with {keys.PASSPHRASE_ENV}" if passphrase else "not encrypted"
    print(f"{private_path}: private key, {public.kind_name}, {protection}, mode 0600")
    print(f"{public_path}: public key {public.key_id}")
    if not passphrase:
        warn(f"{keys.PASSPHRASE_ENV} is not set: {private_path} is not encrypted; keep it secret")
    return 0
