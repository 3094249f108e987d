"""`airlock keys generate NAME`, run as scripts run it: a subprocess, its files, its output."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from gates import keys
from gates.base import EvidenceError
from tests.support.cli import AIRLOCK, assert_one_line_error

PASSPHRASE = "tr0ub4dor&3-passphrase"


def run(
    *args: str, passphrase: str | None = None, umask: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != keys.PASSPHRASE_ENV}
    if passphrase is not None:
        env[keys.PASSPHRASE_ENV] = passphrase
    return subprocess.run(
        [AIRLOCK, "keys", "generate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
        umask=-1 if umask is None else umask,
    )


def _body(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines() if not line.startswith("-----"))


def _assert_quiet(proc: subprocess.CompletedProcess[str], *secrets: str) -> None:
    """Nothing secret in stdout or stderr: no PEM, no 12-character run of key material."""
    out = proc.stdout + proc.stderr
    assert "-----BEGIN" not in out and "Traceback" not in out
    for secret in secrets:
        for i in range(0, len(secret) - 12, 12):
            assert secret[i : i + 12] not in out


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)


def test_generate_writes_a_key_pair(tmp_path: Path) -> None:
    proc = run(str(tmp_path / "ci"))
    assert proc.returncode == 0, proc.stderr
    private, public = tmp_path / "ci.key", tmp_path / "ci.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    key = keys.read_private_key(private)
    assert key.kind == "ecdsa-p256" and key.public == keys.read_public_key(public)
    assert key.key_id in proc.stdout  # the id, so it can be written down
    assert proc.stderr.startswith("airlock: warning: AIRLOCK_KEY_PASSPHRASE is not set")
    _assert_quiet(proc, _body(private), _body(public))


def test_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    assert run(str(tmp_path / "ci"), "--kind", "ed25519", umask=0).returncode == 0
    assert stat.S_IMODE((tmp_path / "ci.key").stat().st_mode) == 0o600
    assert keys.read_private_key(tmp_path / "ci.key").kind == "ed25519"


def test_passphrase_encrypts_and_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = run(str(tmp_path / "ci"), "--kind", "ed25519", passphrase=PASSPHRASE)
    assert proc.returncode == 0, proc.stderr
    private = tmp_path / "ci.key"
    assert private.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert "encrypted with AIRLOCK_KEY_PASSPHRASE" in proc.stdout
    assert proc.stderr == ""
    assert PASSPHRASE not in proc.stdout + proc.stderr
    _assert_quiet(proc, _body(private))

    with pytest.raises(EvidenceError, match="is encrypted: set AIRLOCK_KEY_PASSPHRASE"):
        keys.read_private_key(private)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "another passphrase")
    with pytest.raises(EvidenceError, match="wrong passphrase"):
        keys.read_private_key(private)
    monkeypatch.setenv(keys.PASSPHRASE_ENV, PASSPHRASE)
    key = keys.read_private_key(private)
    assert key.kind == "ed25519" and key.public == keys.read_public_key(tmp_path / "ci.pub")


@pytest.mark.parametrize("existing", ["ci.key", "ci.pub"])
def test_never_overwrites(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("precious\n")
    proc = run(str(tmp_path / "ci"), passphrase=PASSPHRASE)
    assert_one_line_error(proc, 2, f"{tmp_path / existing} exists: not overwritten")
    assert (tmp_path / existing).read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]  # nothing else written
    assert PASSPHRASE not in proc.stderr


def test_never_writes_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "ci.key").symlink_to(target)  # dangling: a plain open() would create it
    assert_one_line_error(run(str(tmp_path / "ci")), 2, "exists: not overwritten")
    assert not target.exists() and not (tmp_path / "ci.pub").exists()


def test_bad_names(tmp_path: Path) -> None:
    assert_one_line_error(run(str(tmp_path / "nosuch" / "ci")), 2, "is not a folder")
    assert_one_line_error(run(str(tmp_path) + "/"), 2, "must name a file prefix")
    assert_one_line_error(run(str(tmp_path / "ci"), "--kind", "rsa"), 2, "invalid choice")
    assert list(tmp_path.iterdir()) == []
