"""The docker reference grammar, as distribution/reference (ParseNormalizedNamed) applies it.

Expected values are what `docker pull X` would resolve X to, written out by hand; none of them is
computed with the code under test.
"""

from __future__ import annotations

import pytest

from registry.errors import EXIT_BAD_INPUT, BadInputError, InvalidReference
from registry.reference import (
    DOCKER_HUB,
    DOCKER_HUB_API,
    Reference,
    hostname,
    is_loopback,
    parse,
    validate_digest,
    validate_tag,
)

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA256_B = "sha256:" + "fedcba9876543210" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


def _refused(text: str, **kw: object) -> InvalidReference:
    with pytest.raises(InvalidReference) as info:
        parse(text, **kw)  # type: ignore[arg-type]
    err = info.value
    assert err.exit_code == EXIT_BAD_INPUT == 2
    assert isinstance(err, BadInputError)
    message = str(err)
    assert message, "an error must say what failed"
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message!r}"
    return err


# ----------------------------------------------------------------------------- accepted forms


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        # docker.io and the official-image 'library/' prefix
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("library/alpine", "docker.io", "library/alpine", "latest", None),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
        ("docker.io/library/alpine:edge", "docker.io", "library/alpine", "edge", None),
        ("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None),
        ("user/team/app", "docker.io", "user/team/app", "latest", None),
        # legacy index.docker.io is docker.io, and also gets library/
        ("index.docker.io/alpine", "docker.io", "library/alpine", "latest", None),
        ("index.docker.io/library/alpine:3", "docker.io", "library/alpine", "3", None),
        ("index.docker.io/user/app:v1", "docker.io", "user/app", "v1", None),
        ("Index.Docker.IO/user/app", "docker.io", "user/app", "latest", None),
        # registry-1.docker.io is not normalised by docker either; no library/ prefix
        ("registry-1.docker.io/alpine", "registry-1.docker.io", "alpine", "latest", None),
        # a first component is a registry when it has '.' or ':' or is 'localhost'
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app", "localhost:5000", "app", "latest", None),
        ("localhost:5000/team/app:1.0", "localhost:5000", "team/app", "1.0", None),
        ("127.0.0.1:5000/app:1", "127.0.0.1:5000", "app", "1", None),
        ("ghcr.io/org/app:v2", "ghcr.io", "org/app", "v2", None),
        ("quay.io/org/app", "quay.io", "org/app", "latest", None),
        ("registry.example.com:443/a/b/c:x", "registry.example.com:443", "a/b/c", "x", None),
        ("my-registry.example.com/app", "my-registry.example.com", "app", "latest", None),
        ("example:5000/app", "example:5000", "app", "latest", None),
        ("localhost:65535/app", "localhost:65535", "app", "latest", None),
        ("localhost:1/app", "localhost:1", "app", "latest", None),
        # hostnames are case-insensitive; airlock normalises them to lowercase
        ("Registry.Example.COM/app", "registry.example.com", "app", "latest", None),
        # without '.', ':' or 'localhost' the first component is a namespace on docker.io
        ("example/app", "docker.io", "example/app", "latest", None),
        ("localhostx/app", "docker.io", "localhostx/app", "latest", None),
        # a lone 'localhost:5000' is repository 'localhost' tagged '5000', as docker reads it
        ("localhost:5000", "docker.io", "library/localhost", "5000", None),
        ("docker.io", "docker.io", "library/docker.io", "latest", None),
        # IPv6 literals
        ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
        ("[::1]/app", "[::1]", "app", "latest", None),
        ("[2001:db8::1]:443/team/app", "[2001:db8::1]:443", "team/app", "latest", None),
        # path component separators: '.', '_', '__', runs of '-'
        ("team/a.b_c__d--e/f-g", "docker.io", "team/a.b_c__d--e/f-g", "latest", None),
        ("ab_c", "docker.io", "library/ab_c", "latest", None),
        ("a0/1b", "docker.io", "a0/1b", "latest", None),
        # tags: word characters, '.', '-'; may start with '_' or a digit
        ("app:_hidden", "docker.io", "library/app", "_hidden", None),
        ("app:V1.2.3-RC_1", "docker.io", "library/app", "V1.2.3-RC_1", None),
        ("app:" + "t" * 128, "docker.io", "library/app", "t" * 128, None),
        # digests, with and without a tag
        (f"alpine@{SHA256}", "docker.io", "library/alpine", None, SHA256),
        (f"alpine:3.19@{SHA256}", "docker.io", "library/alpine", "3.19", SHA256),
        (f"localhost:5000/app@{SHA256}", "localhost:5000", "app", None, SHA256),
        (f"localhost:5000/app:1@{SHA256}", "localhost:5000", "app", "1", SHA256),
        (f"[::1]:5000/app:1@{SHA256}", "[::1]:5000", "app", "1", SHA256),
        (f"app@{SHA512}", "docker.io", "library/app", None, SHA512),
        # skopeo's docker:// transport prefix is accepted
        ("docker://alpine", "docker.io", "library/alpine", "latest", None),
        ("docker://localhost:5000/app:1", "localhost:5000", "app", "1", None),
        (f"docker://ghcr.io/org/app@{SHA256}", "ghcr.io", "org/app", None, SHA256),
        # surrounding whitespace from copy/paste
        ("  alpine:3  ", "docker.io", "library/alpine", "3", None),
    ],
)
def test_parse_accepts(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", "docker.io/library/alpine:latest"),
        ("index.docker.io/alpine:3", "docker.io/library/alpine:3"),
        ("docker://localhost:5000/app", "localhost:5000/app:latest"),
        ("[::1]:5000/app:1", "[::1]:5000/app:1"),
        (f"alpine:3@{SHA256}", f"docker.io/library/alpine:3@{SHA256}"),
        (f"ghcr.io/o/a@{SHA256}", f"ghcr.io/o/a@{SHA256}"),
        ("localhost:5000/team/app:v1", "localhost:5000/team/app:v1"),
    ],
)
def test_str_is_the_canonical_form_and_round_trips(text: str, expected: str) -> None:
    ref = parse(text)
    assert str(ref) == expected
    assert parse(str(ref)) == ref
    assert str(parse(str(ref))) == expected


def test_default_tag_none_keeps_tag_none() -> None:
    ref = parse("localhost:5000/app", default_tag=None)
    assert ref.tag is None
    assert ref.digest is None
    assert str(ref) == "localhost:5000/app"


def test_default_tag_is_configurable() -> None:
    assert parse("alpine", default_tag="stable").tag == "stable"
    # an explicit tag wins over the default
    assert parse("alpine:3", default_tag="stable").tag == "3"


def test_default_tag_not_added_to_a_digest_reference() -> None:
    ref = parse(f"alpine@{SHA256}")
    assert ref.tag is None
    assert ref.digest == SHA256
    assert str(ref) == f"docker.io/library/alpine@{SHA256}"


# ----------------------------------------------------------------------------- refused forms


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\n",
        "docker://",
    ],
)
def test_empty_input_is_refused(text: str) -> None:
    _refused(text)


def test_non_string_is_refused() -> None:
    _refused(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "https://registry.example.com/app:1",
        "http://localhost:5000/app",
        "oci://localhost:5000/app",
        "docker-daemon://alpine",
        "ftp://x/y",
    ],
)
def test_other_url_schemes_are_refused(text: str) -> None:
    err = _refused(text)
    assert "scheme" in str(err)


@pytest.mark.parametrize(
    "text",
    [
        "Alpine",
        "alpine/Sub",
        "docker.io/Library/alpine",
        "localhost:5000/MyApp:1",
        "ghcr.io/Org/app",
        f"MyImage@{SHA256}",
    ],
)
def test_uppercase_repository_is_refused_with_the_lowercase_message(text: str) -> None:
    err = _refused(text)
    assert "must be lowercase" in str(err)


@pytest.mark.parametrize(
    "text",
    [
        "-app",
        "app-",
        "a..b",
        "a___b",
        "a/",
        "/a",
        "a//b",
        "app!",
        "my app",
        "_app",
        "localhost:5000/",
        "localhost:5000/app/",
        "a@b@" + SHA256,
    ],
)
def test_invalid_repository_names_are_refused(text: str) -> None:
    err = _refused(text)
    assert "must be lowercase" not in str(err)


@pytest.mark.parametrize(
    "text",
    [
        "app:",
        "app:.hidden",
        "app:-dash",
        "app:" + "t" * 129,
        "app:a+b",
        "app:a b",
        "app:tag:more",
        # docker's tag grammar is ASCII: [\w] in Go's RE2 is [0-9A-Za-z_]
        "app:café",
        "app:v\u0661",  # ARABIC-INDIC DIGIT ONE
    ],
)
def test_invalid_tags_are_refused(text: str) -> None:
    _refused(text)


@pytest.mark.parametrize(
    "text",
    [
        "app@",
        "app@sha256",
        "app@sha256:",
        "app@" + SHA256[:-1],  # 63 hex
        "app@" + SHA256 + "0",  # 65 hex
        "app@" + SHA256.upper(),
        "app@sha256:" + "0123456789ABCDEF" * 4,  # uppercase hex
        "app@sha256:" + "g" * 64,
        "app@md5:" + "0" * 32,
        "app@sha384:" + "0" * 96,
        "app@sha512:" + "0" * 64,  # sha512 needs 128
        "app@" + SHA256 + "x",
        "app@" + SHA256 + "@" + SHA256_B,
    ],
)
def test_invalid_digests_are_refused(text: str) -> None:
    _refused(text)


@pytest.mark.parametrize(
    "text",
    [
        "localhost:0/app",
        "localhost:65536/app",
        "localhost:99999/app",
        "localhost:123456/app",
        "localhost:/app",
        "localhost:port/app",
        "my_registry.example.com/app",
        "a.b_c/app",  # has '.', so it is a host, and hosts have no '_'
        "-bad.example.com/app",
        "bad-.example.com/app",
        "[::1/app",
        "[::g]:5000/app",
        "[1:2]:5000/app",  # not an IPv6 address
        "[::1]5000/app",
        "[::1]:0/app",
    ],
)
def test_invalid_registry_hosts_are_refused(text: str) -> None:
    _refused(text)


def test_name_of_255_characters_is_accepted() -> None:
    # docker counts the normalised name: 'docker.io/library/' is 18 characters
    ref = parse("a" * 237)
    assert len(ref.name) == 255
    assert ref.repository == "library/" + "a" * 237


def test_name_over_255_characters_is_refused() -> None:
    err = _refused("a" * 238)
    assert "255" in str(err)


def test_name_length_counts_the_registry() -> None:
    host = "localhost:5000/"  # 15 characters
    assert len(parse(host + "b" * 240).name) == 255
    _refused(host + "b" * 241)


def test_long_names_of_many_components_are_refused() -> None:
    path = "/".join(["abcd"] * 51)  # 254 characters; with 'ghcr.io/' 262
    assert len(path) == 254
    _refused("ghcr.io/" + path)


# ----------------------------------------------------------------------------- validators


@pytest.mark.parametrize("digest", [SHA256, SHA256_B, SHA512])
def test_validate_digest_accepts_sha256_and_sha512(digest: str) -> None:
    assert validate_digest(digest) == digest


@pytest.mark.parametrize(
    ("digest", "fragment"),
    [
        ("md5:" + "0" * 32, "algorithm"),
        ("sha384:" + "0" * 96, "algorithm"),
        ("sha256:" + "0" * 63, "64"),
        ("sha512:" + "0" * 127, "128"),
        ("SHA256:" + "0" * 64, "invalid digest"),
        ("sha256:" + "A" * 64, "invalid digest"),
        ("sha256" + "0" * 64, "invalid digest"),
        ("", "invalid digest"),
    ],
)
def test_validate_digest_messages(digest: str, fragment: str) -> None:
    with pytest.raises(InvalidReference) as info:
        validate_digest(digest)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("tag", ["latest", "1", "_x", "A-b.c_d", "t" * 128])
def test_validate_tag_accepts(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "t" * 129, "a/b", "a:b", "ü"])
def test_validate_tag_refuses(tag: str) -> None:
    with pytest.raises(InvalidReference):
        validate_tag(tag)


# ----------------------------------------------------------------------------- Reference API


def test_api_host_for_docker_hub() -> None:
    assert parse("alpine").api_host == DOCKER_HUB_API == "registry-1.docker.io"
    assert parse("index.docker.io/u/app").api_host == "registry-1.docker.io"
    assert parse("docker.io/u/app").registry == DOCKER_HUB


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("localhost:5000/app", "localhost:5000"),
        ("ghcr.io/o/a", "ghcr.io"),
        ("[::1]:5000/app", "[::1]:5000"),
    ],
)
def test_api_host_for_other_registries_is_the_registry(text: str, host: str) -> None:
    assert parse(text).api_host == host


def test_reference_prefers_the_digest() -> None:
    assert parse(f"app:1@{SHA256}").reference == SHA256
    assert parse("app:1").reference == "1"


def test_reference_without_tag_or_digest_is_an_error() -> None:
    ref = parse("localhost:5000/app", default_tag=None)
    with pytest.raises(InvalidReference) as info:
        _ = ref.reference
    assert "localhost:5000/app" in str(info.value)


def test_with_digest_and_with_tag_validate() -> None:
    ref = parse("localhost:5000/app:1")
    assert ref.with_digest(SHA256) == Reference("localhost:5000", "app", "1", SHA256)
    assert ref.with_digest(SHA256).with_digest(None).digest is None
    assert ref.with_tag("2").tag == "2"
    assert ref.with_tag(None).tag is None
    with pytest.raises(InvalidReference):
        ref.with_digest("sha256:abc")
    with pytest.raises(InvalidReference):
        ref.with_tag(".bad")
    # the original is unchanged (frozen)
    assert ref.tag == "1" and ref.digest is None


def test_name_property() -> None:
    assert parse("alpine").name == "docker.io/library/alpine"
    assert parse("[::1]:5000/a/b:c").name == "[::1]:5000/a/b"


# ----------------------------------------------------------------------------- hosts


@pytest.mark.parametrize(
    "registry",
    [
        "localhost",
        "localhost:5000",
        "127.0.0.1",
        "127.0.0.1:5000",
        "127.1.2.3:443",
        "127.255.255.254",
        "[::1]",
        "[::1]:5000",
        "[0:0:0:0:0:0:0:1]:5000",
    ],
)
def test_is_loopback_true(registry: str) -> None:
    assert is_loopback(registry) is True


@pytest.mark.parametrize(
    "registry",
    [
        "docker.io",
        "registry-1.docker.io",
        "ghcr.io:443",
        "10.0.0.1:5000",
        "128.0.0.1",
        "0.0.0.0:5000",
        "192.168.1.10",
        "[::2]:5000",
        "[2001:db8::1]",
        "localhost.example.com:5000",
        "mylocalhost:5000",
        "127.0.0.1.nip.io",
    ],
)
def test_is_loopback_false(registry: str) -> None:
    assert is_loopback(registry) is False


def test_is_loopback_of_parsed_references() -> None:
    assert is_loopback(parse("[::1]:5000/app").registry)
    assert is_loopback(parse("LOCALHOST:5000/app").registry)
    assert not is_loopback(parse("alpine").registry)


@pytest.mark.parametrize(
    ("registry", "host"),
    [
        ("localhost:5000", "localhost"),
        ("localhost", "localhost"),
        ("[::1]:5000", "::1"),
        ("[::1]", "::1"),
        ("ghcr.io", "ghcr.io"),
        ("10.0.0.1:443", "10.0.0.1"),
    ],
)
def test_hostname(registry: str, host: str) -> None:
    assert hostname(registry) == host
