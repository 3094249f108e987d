"""The `airlock` command as scripts run it: a subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airlock.localregistry import free_port
from tests.support import images as im
from tests.support.cli import airlock, assert_one_line_error
from tests.support.hostile import ECHO_TOKEN, echoing_registry, html_site, secret_forms
from tests.support.registries import Reg


def test_copy_prints_the_digest_on_stdout_and_a_summary_on_stderr(
    registry: Reg, registry2: Reg
) -> None:
    img = im.multi_platform("cli")
    registry.pusher.push("dev/app", img, "1.0")
    proc = airlock("copy", f"{registry.host}/dev/app:1.0", f"{registry2.host}/prod/app")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == img.digest + "\n"
    assert "5 streamed" in proc.stderr and "3 manifests pushed" in proc.stderr
    assert registry2.pusher.digest("prod/app", "1.0") == img.digest


def test_copy_json_is_one_object(registry: Reg) -> None:
    img = im.image("json")
    registry.pusher.push("dev/app", img, "1.0")
    proc = airlock(
        "copy", "--json", f"docker://{registry.host}/dev/app:1.0", f"{registry.host}/prod/app:rc"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["digest"] == img.digest
    assert out["blobs_mounted"] == len(img.blobs) and out["bytes_streamed"] == 0
    assert out["target"] == f"{registry.host}/prod/app:rc@{img.digest}"
    assert registry.pusher.digest("prod/app", "rc") == img.digest


def test_plan_writes_nothing(registry: Reg) -> None:
    img = im.image("plan")
    registry.pusher.push("dev/app", img, "1.0")
    before = len(registry.server.request_log())
    proc = airlock("plan", f"{registry.host}/dev/app:1.0", f"{registry.host}/prod/app")
    assert proc.returncode == 0, proc.stderr
    assert (
        img.digest in proc.stdout and "3 to mount" in proc.stdout and "tag 1.0: new" in proc.stdout
    )
    methods = {r["method"] for r in registry.server.request_log()[before:]}
    assert methods <= {"GET", "HEAD"}
    assert registry.pusher.tags("prod/app") == []
    plan = json.loads(
        airlock(
            "plan", "--json", f"{registry.host}/dev/app:1.0", f"{registry.host}/prod/app"
        ).stdout
    )
    assert plan["digest"] == img.digest and len(plan["blobs"]) == 3


def test_no_clobber_conflict_exits_1_and_keeps_the_tag(registry: Reg) -> None:
    old, new = im.image("old"), im.image("new")
    registry.pusher.push("prod/app", old, "1.0")
    registry.pusher.push("dev/app", new, "1.0")
    proc = airlock(
        "copy", "--no-clobber", f"{registry.host}/dev/app:1.0", f"{registry.host}/prod/app"
    )
    assert_one_line_error(proc, 1, "already points at", "--no-clobber")
    assert registry.pusher.digest("prod/app", "1.0") == old.digest


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["copy", "Local host/app", "x/y"], "invalid"),
        (["copy", "localhost:5000/App:1", "x/y"], "lowercase"),
        (["copy", "localhost:5000/app:-bad", "x/y"], "invalid tag"),
        (["copy", "localhost:5000/app@sha256:abc", "x/y"], "invalid digest"),
        (["copy", "https://localhost:5000/app", "x/y"], "drop the URL scheme"),
        (["copy", "localhost:5000/app", "x/y", "--concurrency", "0"], "1-64"),
        (["copy", "localhost:5000/app", "x/y", "--src-creds", "nocolon"], "USER:PASSWORD"),
        (["copy", "localhost:5000/app", "x/y", "--ca-bundle", "/no/such/file.pem"], "no such file"),
        (["copy", "localhost:5000/app"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    assert_one_line_error(airlock(*args), 2, needle)


def test_missing_tag_exits_2(registry: Reg) -> None:
    registry.pusher.push("dev/app", im.image("x"), "1.0")
    proc = airlock("copy", f"{registry.host}/dev/app:2.0", f"{registry.host}/prod/app")
    assert_one_line_error(proc, 2, "manifest unknown")
    assert registry.pusher.tags("prod/app") == []


def test_nothing_listening_exits_3() -> None:
    port = free_port()
    proc = airlock("copy", f"127.0.0.1:{port}/dev/app:1.0", f"127.0.0.1:{port}/prod/app")
    assert_one_line_error(proc, 3, "cannot connect", f"127.0.0.1:{port}")


def test_unknown_host_exits_3() -> None:
    proc = airlock("copy", "no-such-registry.invalid/dev/app:1.0", "localhost:1/prod/app")
    assert_one_line_error(proc, 3, "no-such-registry.invalid")


@pytest.fixture
def not_a_registry() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = b"<html>hello</html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_web_server_that_is_not_a_registry_exits_3(not_a_registry: str) -> None:
    proc = airlock("copy", f"{not_a_registry}/dev/app:1.0", f"{not_a_registry}/prod/app")
    assert_one_line_error(proc, 3, "does not look like an OCI registry")


def test_wrong_credentials_exit_3_without_echoing_them(
    htpasswd_registry: Reg, tmp_path: Path
) -> None:
    htpasswd_registry.pusher.push("dev/app", im.image("creds"), "1.0")
    (tmp_path / "creds").write_text("alice:hunter2-secret\n")
    proc = airlock(
        "copy",
        "--src-creds-file",
        str(tmp_path / "creds"),
        "--dest-creds-file",
        str(tmp_path / "creds"),
        f"{htpasswd_registry.host}/dev/app:1.0",
        f"{htpasswd_registry.host}/prod/app",
    )
    assert_one_line_error(proc, 3, "credentials for", "are wrong")
    assert "hunter2-secret" not in proc.stderr
    ok = airlock(
        "copy",
        "--src-creds",
        "alice:wonderland",
        f"{htpasswd_registry.host}/dev/app:1.0",
        f"{htpasswd_registry.host}/prod/app",
    )
    assert ok.returncode == 0, ok.stderr


# ---------------------------------------------------------------- credentials kept off argv


def test_credentials_from_a_file_stdin_or_the_environment_authenticate(
    htpasswd_registry: Reg, tmp_path: Path
) -> None:
    """/proc/PID/cmdline is readable by every local user: these forms keep the password off it."""
    img = im.image("creds-forms")
    htpasswd_registry.pusher.push("dev/app", img, "1.0")
    host = htpasswd_registry.host
    creds = tmp_path / "creds"
    creds.write_text("alice:wonderland\n")
    src, ok = f"{host}/dev/app:1.0", "alice:wonderland"
    runs = {
        "file": airlock("copy", "--src-creds-file", str(creds), src, f"{host}/a/b"),
        "stdin": airlock("copy", "--dest-creds-file", "-", src, f"{host}/c/d", stdin=ok + "\r\n"),
        "env": airlock("copy", src, f"{host}/e/f", env={"AIRLOCK_SRC_CREDS": ok}),
        "plan": airlock("plan", src, f"{host}/g/h", env={"AIRLOCK_DEST_CREDS": ok}),
    }
    for form, proc in runs.items():
        assert proc.returncode == 0, (form, proc.stderr)
        assert "warning" not in proc.stderr and "wonderland" not in proc.stderr, proc.stderr
    for repo in ("a/b", "c/d", "e/f"):
        assert htpasswd_registry.pusher.digest(repo, "1.0") == img.digest
    without = airlock("copy", src, f"{host}/x/y")
    assert_one_line_error(without, 3, "authentication required")


def test_credentials_on_the_command_line_still_work_with_a_warning(
    htpasswd_registry: Reg,
) -> None:
    htpasswd_registry.pusher.push("dev/app", im.image("creds-argv"), "1.0")
    host = htpasswd_registry.host
    proc = airlock(
        "copy", "--src-creds", "alice:wonderland", f"{host}/dev/app:1.0", f"{host}/prod/app"
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("airlock: warning: --src-creds ")
    assert "other users" in warnings[0]
    assert "--src-creds-file" in warnings[0] and "AIRLOCK_SRC_CREDS" in warnings[0]
    assert "wonderland" not in proc.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        ("", "empty"),
        ("\n", "empty"),
        ("alice-s3cr3t-pw\n", "USER:PASSWORD"),
        ("alice:s3cr3t-pw\nbob:other\n", "one line"),
        (":s3cr3t-pw", "USER:PASSWORD"),
        (b"alice:\xffs3cr3t-pw", "UTF-8"),
    ],
)
def test_a_bad_credentials_file_exits_2_without_echoing_it(
    content: str | bytes | None, needle: str, tmp_path: Path
) -> None:
    path = tmp_path / "creds"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = airlock("copy", "--src-creds-file", str(path), "localhost:1/a:1", "localhost:1/b")
    assert_one_line_error(proc, 2, "--src-creds-file", str(path), needle)
    assert "s3cr3t" not in proc.stderr


def test_bad_credentials_from_stdin_or_the_environment_exit_2(tmp_path: Path) -> None:
    both = airlock(
        "copy", "--src-creds-file", "-", "--dest-creds-file", "-", "localhost:1/a:1", "x/b"
    )
    assert_one_line_error(both, 2, "stdin")
    empty = airlock("copy", "--src-creds-file", "-", "localhost:1/a:1", "localhost:1/b")
    assert_one_line_error(empty, 2, "stdin", "empty")
    env = airlock(
        "copy", "localhost:1/a:1", "localhost:1/b", env={"AIRLOCK_DEST_CREDS": "s3cr3t-pw"}
    )
    assert_one_line_error(env, 2, "AIRLOCK_DEST_CREDS", "USER:PASSWORD")
    (tmp_path / "c").write_text("alice:s3cr3t-pw")
    clash = airlock(
        "copy",
        "--src-creds",
        "alice:s3cr3t-pw",
        "--src-creds-file",
        str(tmp_path / "c"),
        "localhost:1/a:1",
        "localhost:1/b",
    )
    assert_one_line_error(clash, 2, "--src-creds-file", "--src-creds")
    for proc in (both, empty, env, clash):
        assert "s3cr3t" not in proc.stderr


def test_a_registry_echoing_credentials_cannot_make_airlock_print_them(tmp_path: Path) -> None:
    password = "p@ss w/rd+S3cr3t%"
    (tmp_path / "creds").write_text(f"alice:{password}\n")
    for scheme in ("basic", "bearer"):
        with echoing_registry(scheme) as host:  # type: ignore[arg-type]
            proc = airlock(
                "copy",
                "--src-creds-file",
                str(tmp_path / "creds"),
                f"{host}/dev/app:1.0",
                f"{host}/prod/app",
            )
        assert_one_line_error(proc, 3, "unexpected answer 400", "***")
        for form in secret_forms("alice", password, ECHO_TOKEN):
            assert form not in proc.stderr, (form, proc.stderr)


def test_a_web_site_answering_200_everywhere_is_not_a_registry() -> None:
    with html_site() as host:
        proc = airlock("copy", f"{host}/dev/app:1.0", f"{host}/prod/app")
    assert_one_line_error(proc, 3, "does not look like an OCI registry", host)


def test_copy_does_not_import_prefect(registry: Reg, tmp_path: Path) -> None:
    # Sentinel packages first on the path: importing one leaves a mark (and fails the copy).
    for name in ("prefect", "typer", "rich", "pydantic"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"open({str(tmp_path / 'imported')!r}, 'a').write({name!r})\n"
            f"raise ImportError('airlock copy imported {name}')\n"
        )
    registry.pusher.push("dev/app", im.image("imports"), "1.0")
    proc = airlock(
        "copy",
        f"{registry.host}/dev/app:1.0",
        f"{registry.host}/prod/app",
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "imported").exists()


def test_secrets_in_arguments_are_not_echoed() -> None:
    pasted = airlock("copy", "https://alice:s3cret-pw@registry.example.com/app:1", "x/y")
    assert_one_line_error(pasted, 2, "drop the URL scheme")
    mistyped = airlock("copy", "a/b", "c/d", "--srccreds", "alice:s3cret-pw")
    assert_one_line_error(mistyped, 2, "unrecognized arguments")
    assert mistyped.stderr.count("***") == 1
    for proc in (pasted, mistyped):
        assert "s3cret-pw" not in proc.stderr + proc.stdout


def test_malformed_docker_config_exits_2(htpasswd_registry: Reg, docker_config: Path) -> None:
    htpasswd_registry.pusher.push("dev/app", im.image("cfg"), "1.0")
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {htpasswd_registry.host: {"auth": 123}}})
    )
    proc = airlock("copy", f"{htpasswd_registry.host}/dev/app:1.0", f"{htpasswd_registry.host}/x/y")
    assert_one_line_error(proc, 2, "config.json", "must be strings")


def test_demo_without_docker_registry_says_how_to_install_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # the script's shebang is absolute
    proc = airlock("demo", "--state-dir", str(state), env={"PATH": str(tmp_path)})
    assert_one_line_error(proc, 3, "docker-registry is not installed", "make demo")


def test_demo_tells_the_whole_story_and_stops_what_it_started(tmp_path: Path) -> None:
    """`make demo`: a push promotes app:1.0 through qa and staging by itself, prod is approved
    (signed), app:1.1 (CRITICAL scan) and app:1.2 (reports signed by a developer) stop at qa,
    `airlock verify` says which passed, a customer pulls only what holds prod's VSA; then every
    process it started is gone."""
    state = tmp_path / "state"
    proc = airlock("demo", "--state-dir", str(state))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    rows = {
        line.split()[0]: line.split()
        for line in proc.stdout.splitlines()
        if line.startswith(("dev ", "qa ", "staging ", "prod "))
    }
    digests = {stage: row[1] for stage, row in rows.items()}
    assert set(digests) == {"dev", "qa", "staging", "prod"}
    assert len(set(digests.values())) == 1 and digests["dev"].startswith("sha256:")
    assert "tests passed, scan passed" in " ".join(rows["qa"])
    assert "signature passed" in " ".join(rows["staging"])
    assert rows["prod"][-1] == "release-manager"
    assert "app:1.1" in proc.stdout and "stopped at qa" in proc.stdout
    assert "qa: scan gate refused: 2 CRITICAL" in proc.stdout
    # a developer's own key does not make CI: app:1.2's signed reports are refused at qa
    [forged] = [line for line in proc.stdout.splitlines() if "app:1.2 pipeline run:" in line]
    assert "qa: tests gate refused" in forged and "a key the policy does not name" in forged
    assert "approved        by release-manager, signed" in proc.stdout
    # anyone can check what each stage admitted: prod's digest passes, app:1.1 never passed qa
    assert "(exit 0)\nqa: verified" in proc.stdout
    assert f"{digests['prod']}: verified for prod" in proc.stdout
    assert "app:1.1 --stage qa   (exit 1)\nqa: NOT verified: no qa VSA" in proc.stdout
    # a customer pulls the promoted digest through the production view; 1.1 is not there
    customer = [line for line in proc.stdout.splitlines() if line.startswith("customer pull")]
    assert len(customer) == 2, proc.stdout
    assert customer[0].split()[-3] == digests["prod"] and "customers/app:1.0" in customer[0]
    assert "customers/app:1.1 -> HTTP 404" in customer[1]
    # stopped by PID: nothing still runs with the demo's state directory on its command line
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        assert str(state) not in text, text
