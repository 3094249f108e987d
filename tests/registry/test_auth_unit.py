"""The pure parts of registry/auth.py: challenges, scopes, credentials, docker config.

No network. Credential helpers are real executables written into tmp_path and found on PATH,
exactly as docker finds them.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from registry.auth import Challenge, Credentials, DockerConfig, scopes_for
from registry.errors import EXIT_BAD_INPUT, AirlockError, AuthError, BadInputError

PULL = frozenset({"pull"})
PULL_PUSH = frozenset({"pull", "push"})
DIGEST = "sha256:" + "ab" * 32


# ----------------------------------------------------------------------------- Challenge.parse


def test_basic_challenge() -> None:
    c = Challenge.parse('Basic realm="airlock-test"')
    assert c is not None
    assert c.scheme == "basic"
    assert c.realm == "airlock-test"
    assert c.params == {"realm": "airlock-test"}


def test_bearer_challenge_as_docker_hub_sends_it() -> None:
    c = Challenge.parse(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull"'
    )
    assert c is not None
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull",
    }


def test_bearer_challenge_with_commas_inside_quoted_values() -> None:
    c = Challenge.parse(
        'Bearer realm="https://auth.example.com/token?a=1,b=2",service="reg,istry",'
        'scope="repository:team/app:pull,push repository:team/base:pull",'
        'error="insufficient_scope"'
    )
    assert c is not None
    assert c.params == {
        "realm": "https://auth.example.com/token?a=1,b=2",
        "service": "reg,istry",
        "scope": "repository:team/app:pull,push repository:team/base:pull",
        "error": "insufficient_scope",
    }


@pytest.mark.parametrize(
    "header",
    [
        'BEARER Realm="https://a.example/t", SERVICE="s"',
        'bearer realm = "https://a.example/t" ,  service = "s"',
        '  Bearer realm="https://a.example/t",service="s"  ',
    ],
)
def test_scheme_and_parameter_names_are_case_insensitive_and_spacing_tolerated(header: str) -> None:
    c = Challenge.parse(header)
    assert c is not None
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://a.example/t", "service": "s"}


@pytest.mark.parametrize(
    ("header", "params"),
    [
        # RFC 7235: auth-param = token BWS "=" BWS ( token / quoted-string )
        ("Basic realm=Registry", {"realm": "Registry"}),
        (
            'Bearer realm="https://auth.example.com/token",service=registry.example.com',
            {"realm": "https://auth.example.com/token", "service": "registry.example.com"},
        ),
    ],
)
def test_unquoted_token_values_are_kept(header: str, params: dict[str, str]) -> None:
    c = Challenge.parse(header)
    assert c is not None
    assert c.params == params


def test_quoted_pair_is_unescaped() -> None:
    # RFC 7230 3.2.6: a recipient of a quoted-string replaces each quoted-pair by its octet
    c = Challenge.parse(r'Basic realm="say \"hi\" \\ bye"')
    assert c is not None
    assert c.realm == 'say "hi" \\ bye'


def test_empty_quoted_value() -> None:
    c = Challenge.parse('Bearer realm="https://a.example/t",scope=""')
    assert c is not None
    assert c.params["scope"] == ""


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        'Negotiate realm="x"',
        'Digest realm="x", nonce="y"',
        "NTLM",
        'Bearerx realm="x"',
        'realm="x"',
    ],
)
def test_unknown_scheme_is_none(header: str) -> None:
    assert Challenge.parse(header) is None


def test_challenge_without_realm() -> None:
    c = Challenge.parse("Basic")
    assert c is not None
    assert c.scheme == "basic"
    assert c.realm is None


# ----------------------------------------------------------------------------- scopes_for


def _scopes(method: str, path: str) -> dict[str, frozenset[str]]:
    return scopes_for(httpx.Request(method, f"https://registry.example.com{path}"))


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v2/team/app/manifests/latest", {"team/app": PULL}),
        ("HEAD", "/v2/team/app/manifests/latest", {"team/app": PULL}),
        ("GET", f"/v2/team/app/manifests/{DIGEST}", {"team/app": PULL}),
        ("PUT", "/v2/team/app/manifests/v1", {"team/app": PULL_PUSH}),
        ("PUT", f"/v2/team/app/manifests/{DIGEST}", {"team/app": PULL_PUSH}),
        ("GET", f"/v2/app/blobs/{DIGEST}", {"app": PULL}),
        ("HEAD", f"/v2/app/blobs/{DIGEST}", {"app": PULL}),
        ("POST", "/v2/app/blobs/uploads/", {"app": PULL_PUSH}),
        ("PATCH", "/v2/app/blobs/uploads/3f0c-uuid", {"app": PULL_PUSH}),
        ("PUT", f"/v2/app/blobs/uploads/3f0c-uuid?digest={DIGEST}", {"app": PULL_PUSH}),
        ("GET", "/v2/app/blobs/uploads/3f0c-uuid", {"app": PULL}),
        ("GET", "/v2/a/b/c/tags/list", {"a/b/c": PULL}),
        ("GET", "/v2/a/b/c/tags/list?n=100&last=v1", {"a/b/c": PULL}),
        ("GET", f"/v2/team/app/referrers/{DIGEST}", {"team/app": PULL}),
        (
            "GET",
            f"/v2/team/app/referrers/{DIGEST}?artifactType=application/sarif%2Bjson",
            {"team/app": PULL},
        ),
    ],
)
def test_scopes_for_operations(method: str, path: str, expected: dict[str, frozenset[str]]) -> None:
    assert _scopes(method, path) == expected


@pytest.mark.parametrize(
    "path",
    [f"/v2/team/app/manifests/{DIGEST}", "/v2/team/app/blobs/uploads/3f0c-uuid"],
)
def test_scopes_for_delete_asks_for_delete(path: str) -> None:
    # distribution (registry/handlers/app.go appendAccessRecords) requires the "delete" action
    # for every DELETE; a pull,push token is refused with a 401 asking for delete.
    scopes = _scopes("DELETE", path)
    assert set(scopes) == {"team/app"}
    assert "delete" in scopes["team/app"]


@pytest.mark.parametrize("path", ["/v2/", "/v2", "/healthz", "/v2/app", "/"])
def test_scopes_for_non_repository_paths_is_empty(path: str) -> None:
    assert _scopes("GET", path) == {}


def test_the_catalog_asks_for_the_registry_catalog_scope() -> None:
    from registry.auth import CATALOG, _parse_scope_strings, _scope_strings

    scopes = _scopes("GET", "/v2/_catalog")
    assert scopes == {CATALOG: frozenset({"*"})}
    assert _scope_strings(scopes) == ["registry:catalog:*"]
    assert _parse_scope_strings("registry:catalog:* repository:a/b:pull") == {
        CATALOG: frozenset({"*"}),
        "a/b": frozenset({"pull"}),
    }


def test_scopes_for_mount_adds_pull_on_the_from_repository() -> None:
    scopes = _scopes("POST", f"/v2/prod/app/blobs/uploads/?mount={DIGEST}&from=dev/app")
    assert scopes == {"prod/app": PULL_PUSH, "dev/app": PULL}


def test_scopes_for_mount_from_the_same_repository() -> None:
    assert _scopes("POST", f"/v2/app/blobs/uploads/?mount={DIGEST}&from=app") == {"app": PULL_PUSH}


def test_scopes_for_mount_with_encoded_from() -> None:
    scopes = _scopes("POST", f"/v2/prod/app/blobs/uploads/?from=dev%2Fteam%2Fapp&mount={DIGEST}")
    assert scopes == {"prod/app": PULL_PUSH, "dev/team/app": PULL}


@pytest.mark.parametrize(
    ("method", "path", "repo"),
    [
        ("GET", "/v2/team/blobs/manifests/latest", "team/blobs"),
        ("GET", "/v2/manifests/manifests/v1", "manifests"),
        ("GET", f"/v2/a/manifests/blobs/{DIGEST}", "a/manifests"),
        ("GET", f"/v2/blobs/blobs/{DIGEST}", "blobs"),
        ("POST", "/v2/x/blobs/blobs/uploads/", "x/blobs"),
        ("PATCH", "/v2/blobs/blobs/uploads/uuid-1", "blobs"),
        ("PUT", "/v2/x/blobs/uploads/blobs/uploads/uuid-1", "x/blobs/uploads"),
        ("GET", "/v2/x/blobs/uploads/manifests/latest", "x/blobs/uploads"),
        ("GET", "/v2/tags/tags/list", "tags"),
        ("GET", "/v2/a/tags/list/tags/list", "a/tags/list"),
        ("GET", f"/v2/a/referrers/referrers/{DIGEST}", "a/referrers"),
        ("PUT", "/v2/manifests/blobs/manifests/manifests", "manifests/blobs"),
    ],
)
def test_scopes_for_repository_names_with_route_words(method: str, path: str, repo: str) -> None:
    scopes = _scopes(method, path)
    assert list(scopes) == [repo]


# ----------------------------------------------------------------------------- Credentials


def test_credentials_parse() -> None:
    c = Credentials.parse("alice:wonderland")
    assert (c.username, c.password, c.identity_token) == ("alice", "wonderland", None)


def test_credentials_parse_keeps_colons_in_the_password() -> None:
    c = Credentials.parse("alice:won:der:land")
    assert (c.username, c.password) == ("alice", "won:der:land")


@pytest.mark.parametrize("text", ["alice", "", ":", "alice:", ":wonderland"])
def test_credentials_parse_refuses(text: str) -> None:
    with pytest.raises(BadInputError) as info:
        Credentials.parse(text, "--src-creds")
    assert info.value.exit_code == EXIT_BAD_INPUT == 2
    assert "--src-creds" in str(info.value)
    assert "\n" not in str(info.value)


def test_credentials_parse_error_does_not_echo_the_input() -> None:
    with pytest.raises(BadInputError) as info:
        Credentials.parse("s3cr3t-without-user-colon")
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    "creds",
    [
        Credentials("alice", "hunter2-password"),
        Credentials(None, None, "hunter2-identity-token"),
        Credentials("alice", "hunter2-password", "hunter2-identity-token"),
        Credentials.parse("alice:hunter2-password"),
    ],
)
def test_secrets_never_appear_in_repr_or_str(creds: Credentials) -> None:
    for text in (
        repr(creds),
        str(creds),
        f"{creds}",
        f"{creds!r}",
        repr([creds]),
        repr({1: creds}),
    ):
        assert "hunter2" not in text
    if creds.username:
        assert "alice" in repr(creds)


def test_repr_says_whether_a_secret_is_present() -> None:
    assert "***" in repr(Credentials("alice", "pw"))
    assert "***" not in repr(Credentials("alice"))


# ----------------------------------------------------------------------------- DockerConfig: auths


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write_config(directory: Path, doc: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return directory


def test_auths_with_base64_auth(docker_config: Path) -> None:
    _write_config(docker_config, {"auths": {"localhost:5000": {"auth": _b64("alice:wonder:land")}}})
    creds = DockerConfig(docker_config).credentials("localhost:5000")
    assert creds == Credentials("alice", "wonder:land")


def test_auths_with_username_and_password(docker_config: Path) -> None:
    _write_config(
        docker_config,
        {"auths": {"registry.example.com": {"username": "bob", "password": "builder"}}},
    )
    assert DockerConfig(docker_config).credentials("registry.example.com") == Credentials(
        "bob", "builder"
    )


def test_auths_with_identity_token(docker_config: Path) -> None:
    _write_config(
        docker_config,
        {"auths": {"registry.example.com": {"auth": _b64("bob:"), "identitytoken": "tok-123"}}},
    )
    creds = DockerConfig(docker_config).credentials("registry.example.com")
    assert creds is not None
    assert creds.identity_token == "tok-123"
    assert creds.username == "bob"


def test_auths_with_only_an_identity_token(docker_config: Path) -> None:
    _write_config(docker_config, {"auths": {"reg.example": {"identitytoken": "tok-9"}}})
    creds = DockerConfig(docker_config).credentials("reg.example")
    assert creds is not None
    assert creds.identity_token == "tok-9"


@pytest.mark.parametrize(
    "key",
    [
        "https://host.example:5000/v1/",
        "https://host.example:5000",
        "http://host.example:5000/",
        "host.example:5000",
        "host.example:5000/v2/",
        "HOST.Example:5000",
    ],
)
def test_auths_key_forms(docker_config: Path, key: str) -> None:
    _write_config(docker_config, {"auths": {key: {"auth": _b64("u:p")}}})
    assert DockerConfig(docker_config).credentials("host.example:5000") == Credentials("u", "p")


@pytest.mark.parametrize(
    "key",
    ["host.example", "https://host.example/v1/", "host.example:5001", "other.example:5000"],
)
def test_auths_keys_for_other_hosts_do_not_match(docker_config: Path, key: str) -> None:
    _write_config(docker_config, {"auths": {key: {"auth": _b64("u:p")}}})
    assert DockerConfig(docker_config).credentials("host.example:5000") is None


@pytest.mark.parametrize(
    "key",
    ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"],
)
@pytest.mark.parametrize("registry", ["docker.io", "registry-1.docker.io", "index.docker.io"])
def test_docker_hub_keys(docker_config: Path, key: str, registry: str) -> None:
    _write_config(docker_config, {"auths": {key: {"auth": _b64("hubuser:hubpass")}}})
    assert DockerConfig(docker_config).credentials(registry) == Credentials("hubuser", "hubpass")


def test_docker_hub_credentials_are_not_sent_to_other_registries(docker_config: Path) -> None:
    _write_config(docker_config, {"auths": {"https://index.docker.io/v1/": {"auth": _b64("a:b")}}})
    assert DockerConfig(docker_config).credentials("ghcr.io") is None
    assert DockerConfig(docker_config).credentials("localhost:5000") is None


def test_the_matching_entry_is_chosen_among_several(docker_config: Path) -> None:
    _write_config(
        docker_config,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _b64("hub:1")},
                "localhost:5000": {"auth": _b64("local:2")},
                "ghcr.io": {"auth": _b64("gh:3")},
            }
        },
    )
    cfg = DockerConfig(docker_config)
    assert cfg.credentials("ghcr.io") == Credentials("gh", "3")
    assert cfg.credentials("localhost:5000") == Credentials("local", "2")
    assert cfg.credentials("docker.io") == Credentials("hub", "1")


def test_empty_auth_entry_is_no_credentials(docker_config: Path) -> None:
    _write_config(docker_config, {"auths": {"localhost:5000": {}}})
    assert DockerConfig(docker_config).credentials("localhost:5000") is None


def test_missing_file_is_no_credentials(tmp_path: Path) -> None:
    assert DockerConfig(tmp_path / "does-not-exist").credentials("localhost:5000") is None


@pytest.mark.parametrize("text", ["{not json", "", '{"auths": {"a": 1}', "\x00"])
def test_malformed_json_is_bad_input(docker_config: Path, text: str) -> None:
    _write_config(docker_config, text)
    with pytest.raises(BadInputError) as info:
        DockerConfig(docker_config).credentials("localhost:5000")
    assert info.value.exit_code == 2
    assert str(docker_config / "config.json") in str(info.value)


@pytest.mark.parametrize("auth", ["not base64!", "YWxpY2U", _b64("no-colon-here"), "%%%"])
def test_bad_base64_auth_is_bad_input(docker_config: Path, auth: str) -> None:
    _write_config(docker_config, {"auths": {"localhost:5000": {"auth": auth}}})
    with pytest.raises(BadInputError) as info:
        DockerConfig(docker_config).credentials("localhost:5000")
    assert info.value.exit_code == 2
    assert "auth" in str(info.value)


def test_auth_that_is_not_utf8_is_bad_input(docker_config: Path) -> None:
    auth = base64.b64encode(b"\xff\xfe:\xfd").decode()
    _write_config(docker_config, {"auths": {"localhost:5000": {"auth": auth}}})
    with pytest.raises(BadInputError):
        DockerConfig(docker_config).credentials("localhost:5000")


def test_config_that_is_not_an_object_is_no_credentials(docker_config: Path) -> None:
    _write_config(docker_config, [1, 2])
    assert DockerConfig(docker_config).credentials("localhost:5000") is None


def test_docker_config_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _write_config(
        tmp_path / "elsewhere", {"auths": {"localhost:5000": {"auth": _b64("env:user")}}}
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    cfg = DockerConfig()
    assert cfg.path == directory / "config.json"
    assert cfg.credentials("localhost:5000") == Credentials("env", "user")


def test_without_docker_config_env_the_home_directory_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    _write_config(tmp_path / ".docker", {"auths": {"ghcr.io": {"auth": _b64("home:dir")}}})
    cfg = DockerConfig()
    assert cfg.path == tmp_path / ".docker" / "config.json"
    assert cfg.credentials("ghcr.io") == Credentials("home", "dir")


# ----------------------------------------------------------------------------- credential helpers

HELPER = """#!/bin/sh
# A docker credential helper (protocol: `get`, server URL on stdin, JSON on stdout).
[ "$1" = "get" ] || { echo "unsupported action: $1" >&2; exit 2; }
server=$(cat)
printf '%s\\n' "$server" >> "$HELPER_LOG"
case "$server" in
  localhost:5000)
    printf '{"ServerURL":"%s","Username":"helper-user","Secret":"helper-secret"}\\n' "$server" ;;
  https://index.docker.io/v1/)
    printf '{"ServerURL":"%s","Username":"<token>","Secret":"hub-identity-token"}\\n' "$server" ;;
  *)
    echo "credentials not found in native keychain"
    exit 1 ;;
esac
"""

GARBAGE_HELPER = """#!/bin/sh
cat > /dev/null
echo "this is not json"
"""


@pytest.fixture
def helper_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put docker-credential-test (and -garbage) on PATH; returns the file logging its stdin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("test", HELPER), ("garbage", GARBAGE_HELPER)):
        path = bin_dir / f"docker-credential-{name}"
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "helper.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("HELPER_LOG", str(log))
    return log


def _asked(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_cred_helpers_entry_is_used(docker_config: Path, helper_log: Path) -> None:
    _write_config(docker_config, {"credHelpers": {"localhost:5000": "test"}})
    creds = DockerConfig(docker_config).credentials("localhost:5000")
    assert creds == Credentials("helper-user", "helper-secret")
    assert _asked(helper_log) == ["localhost:5000"]


def test_cred_helpers_win_over_auths(docker_config: Path, helper_log: Path) -> None:
    _write_config(
        docker_config,
        {
            "credHelpers": {"localhost:5000": "test"},
            "auths": {"localhost:5000": {"auth": _b64("stale:entry")}},
        },
    )
    assert DockerConfig(docker_config).credentials("localhost:5000") == Credentials(
        "helper-user", "helper-secret"
    )


def test_cred_helpers_key_forms_are_normalised(docker_config: Path, helper_log: Path) -> None:
    _write_config(docker_config, {"credHelpers": {"https://LOCALHOST:5000/v1/": "test"}})
    assert DockerConfig(docker_config).credentials("localhost:5000") == Credentials(
        "helper-user", "helper-secret"
    )


def test_cred_helper_for_another_host_is_not_run(docker_config: Path, helper_log: Path) -> None:
    _write_config(
        docker_config,
        {
            "credHelpers": {"ghcr.io": "test"},
            "auths": {"localhost:5000": {"auth": _b64("from:auths")}},
        },
    )
    assert DockerConfig(docker_config).credentials("localhost:5000") == Credentials("from", "auths")
    assert _asked(helper_log) == []


def test_creds_store_for_docker_hub_sends_the_index_url_and_reads_an_identity_token(
    docker_config: Path, helper_log: Path
) -> None:
    _write_config(docker_config, {"credsStore": "test"})
    creds = DockerConfig(docker_config).credentials("docker.io")
    assert creds is not None
    assert creds.identity_token == "hub-identity-token"
    assert creds.username is None
    assert creds.password is None
    assert _asked(helper_log) == ["https://index.docker.io/v1/"]
    assert "hub-identity-token" not in repr(creds)


def test_creds_store_miss_falls_back_to_auths(docker_config: Path, helper_log: Path) -> None:
    _write_config(
        docker_config,
        {"credsStore": "test", "auths": {"other.example:5000": {"auth": _b64("in:file")}}},
    )
    cfg = DockerConfig(docker_config)
    assert cfg.credentials("other.example:5000") == Credentials("in", "file")
    assert _asked(helper_log) == ["other.example:5000"]


def test_creds_store_miss_without_auths_is_none(docker_config: Path, helper_log: Path) -> None:
    _write_config(docker_config, {"credsStore": "test"})
    assert DockerConfig(docker_config).credentials("unknown.example") is None
    assert _asked(helper_log) == ["unknown.example"]


def test_cred_helpers_entry_wins_over_creds_store(docker_config: Path, helper_log: Path) -> None:
    _write_config(
        docker_config,
        {"credsStore": "garbage", "credHelpers": {"localhost:5000": "test"}},
    )
    assert DockerConfig(docker_config).credentials("localhost:5000") == Credentials(
        "helper-user", "helper-secret"
    )


def test_helper_answering_garbage_is_an_auth_error(docker_config: Path, helper_log: Path) -> None:
    _write_config(docker_config, {"credsStore": "garbage"})
    with pytest.raises(AuthError) as info:
        DockerConfig(docker_config).credentials("localhost:5000")
    assert "docker-credential-garbage" in str(info.value)


def test_helper_missing_from_path_is_bad_input_naming_it(
    docker_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    _write_config(docker_config, {"credHelpers": {"localhost:5000": "nothere"}})
    with pytest.raises(BadInputError) as info:
        DockerConfig(docker_config).credentials("localhost:5000")
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert "docker-credential-nothere" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_creds_store_helper_is_bad_input(
    docker_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-dir"))
    _write_config(docker_config, {"credsStore": "desktop"})
    with pytest.raises(BadInputError) as info:
        DockerConfig(docker_config).credentials("docker.io")
    assert "docker-credential-desktop" in str(info.value)


def test_missing_helper_message_names_the_config_file_that_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DOCKER_CONFIG points elsewhere; the config actually read is the one given explicitly.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "env-config"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-dir"))
    directory = _write_config(tmp_path / "explicit", {"credsStore": "nothere"})
    with pytest.raises(BadInputError) as info:
        DockerConfig(directory).credentials("localhost:5000")
    assert str(directory / "config.json") in str(info.value)


def test_errors_are_airlock_errors(docker_config: Path) -> None:
    _write_config(docker_config, "{")
    with pytest.raises(AirlockError):
        DockerConfig(docker_config).credentials("x.example")
