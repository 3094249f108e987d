"""The virtual registry gateway against real registries, with real skopeo pushing and pulling
through it (`airlock virtual serve` as a process of its own)."""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path

import httpx
import pytest

from tests.support import images as im
from tests.support.gateway import PASSWORD, TOKEN, Gw
from tests.support.skopeo import layout_digest as _layout_digest
from tests.support.skopeo import skopeo


def test_a_pull_resolves_across_members_with_digests_unchanged(gw: Gw, tmp_path: Path) -> None:
    released = im.multi_platform("released")
    gw.pusher.push("prod/app", released, "1.0")  # only in prod: dev has no 1.0
    out = tmp_path / "pulled"
    proc = skopeo(
        "--all",
        "--preserve-digests",
        "--src-creds",
        f"alice:{PASSWORD}",
        f"docker://{gw.host}/docker/app:1.0",
        f"oci:{out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert _layout_digest(out) == released.digest
    # dev first: a tag in both resolves to dev's
    fresh = im.image("fresh")
    gw.pusher.push("dev/app", fresh, "1.0")
    head = httpx.head(
        f"{gw.url}/v2/docker/app/manifests/1.0",
        auth=("alice", PASSWORD),
        headers={"Accept": im.OCI_MANIFEST},
    )
    assert head.status_code == 200 and head.headers["docker-content-digest"] == fresh.digest
    assert int(head.headers["content-length"]) == len(fresh.raw)
    gw.pusher.push("dev/app", released, "1.0")  # put it back for the other tests


def test_a_push_lands_in_the_deploy_target(gw: Gw, tmp_path: Path) -> None:
    img = im.image("pushed-through")
    gw.pusher.push("prod/seed", img, "src")
    layout = tmp_path / "layout"
    pulled = skopeo(
        "--preserve-digests", f"docker://{gw.local.host}/prod/seed:src", f"oci:{layout}"
    )
    assert pulled.returncode == 0, pulled.stderr
    proc = skopeo(
        "--preserve-digests",
        "--dest-creds",
        f"alice:{PASSWORD}",
        f"oci:{layout}",
        f"docker://{gw.host}/docker/new:2.0",
    )
    assert proc.returncode == 0, proc.stderr
    # dev-local (the deploy target) holds exactly the bytes skopeo pushed
    assert gw.pusher.digest("dev/new", "2.0") == _layout_digest(layout)
    assert gw.pusher.tags("prod/new") == []


def test_the_production_view_serves_prod_only(gw: Gw) -> None:
    only_dev = im.image("only-in-dev")
    gw.pusher.push("dev/app", only_dev, "dev-only")
    prod_digest = gw.pusher.digest("prod/app", "1.0")
    assert prod_digest is not None
    anonymous = httpx.Client(base_url=gw.url)
    ok = anonymous.get(f"/v2/customers/app/manifests/{prod_digest}", headers={"Accept": im.ACCEPT})
    assert ok.status_code == 200 and ok.headers["docker-content-digest"] == prod_digest
    for ref in ("dev-only", only_dev.digest):
        missing = anonymous.get(f"/v2/customers/app/manifests/{ref}")
        assert missing.status_code == 404, missing.text
        assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    blob = only_dev.blobs[-1].digest
    assert anonymous.get(f"/v2/customers/app/blobs/{blob}").status_code == 404


def test_a_read_only_view_refuses_pushes_and_writes_nothing(gw: Gw) -> None:
    before = sorted(p.name for p in gw.local.root.rglob("*"))
    r = httpx.post(f"{gw.url}/v2/customers/app/blobs/uploads/")
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "DENIED", r.text
    r = httpx.put(
        f"{gw.url}/v2/customers/app/manifests/1.0",
        content=b"{}",
        headers={"Content-Type": im.OCI_MANIFEST},
    )
    assert r.status_code == 405
    assert sorted(p.name for p in gw.local.root.rglob("*")) == before


def test_tags_merge_and_the_catalog_shows_what_the_caller_may_read(gw: Gw) -> None:
    tags = gw.get("/v2/docker/app/tags/list", auth=True).json()
    assert {"1.0", "dev-only"} <= set(tags["tags"])
    anonymous = gw.get("/v2/_catalog").json()["repositories"]
    assert anonymous and all(r.startswith(("customers/", "shop/", "signed/")) for r in anonymous)
    alice = gw.get("/v2/_catalog", auth=True).json()["repositories"]
    assert "docker/app" in alice and "customers/app" in alice


@pytest.mark.parametrize(
    ("method", "path", "auth", "status", "code"),
    [
        ("GET", "/v2/nosuch/app/manifests/1.0", False, 401, "UNAUTHORIZED"),
        ("GET", "/v2/nosuch/app/manifests/1.0", True, 404, "NAME_UNKNOWN"),
        ("GET", "/v2/secret/app/manifests/1.0", True, 404, "NAME_UNKNOWN"),  # exists; not hers
        ("GET", "/v2/docker/../prod/app/manifests/1.0", True, 400, "NAME_INVALID"),
        ("GET", "/v2/docker/app%2F..%2Fx/manifests/1.0", True, 400, "NAME_INVALID"),
        ("GET", "/v2/docker/App/manifests/1.0", True, 400, "NAME_INVALID"),
        ("GET", "/v2/docker/app/manifests/bad%20tag", True, 400, "MANIFEST_INVALID"),
        ("GET", "/v2/docker/app/blobs/notadigest", True, 400, "DIGEST_INVALID"),
        ("GET", "/v2/docker/app/manifests/1.0", False, 401, "UNAUTHORIZED"),
        ("DELETE", "/v2/docker/app/manifests/1.0", True, 405, "UNSUPPORTED"),
        ("PATCH", "/v2/docker/app/blobs/uploads/..", True, 404, "BLOB_UPLOAD_UNKNOWN"),
        ("PUT", "/v2/docker/app/blobs/uploads/a.b?digest=x", True, 404, "BLOB_UPLOAD_UNKNOWN"),
    ],
)
def test_bad_requests_get_oci_errors(
    gw: Gw, method: str, path: str, auth: bool, status: int, code: str
) -> None:
    before = sorted(p.name for p in gw.local.root.rglob("*"))
    # http.client sends the path as written (httpx would remove the dot segments first)
    connection = http.client.HTTPConnection(gw.host, timeout=30)
    headers = {}
    if auth:
        token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == status, body
    assert body["errors"][0]["code"] == code
    assert sorted(p.name for p in gw.local.root.rglob("*")) == before


def test_a_wrong_password_is_401_and_never_echoed(gw: Gw) -> None:
    r = httpx.get(f"{gw.url}/v2/docker/app/tags/list", auth=("alice", "guess-pw"))
    assert r.status_code == 401 and "basic" in r.headers["www-authenticate"].lower()
    assert "guess-pw" not in r.text and "guess-pw" not in gw.log.read_text()


def test_an_oversized_manifest_is_refused(gw: Gw) -> None:
    r = httpx.put(
        f"{gw.url}/v2/docker/big/manifests/1.0",
        content=b"{" + b" " * (4 * 1024 * 1024 + 1) + b"}",
        headers={"Content-Type": im.OCI_MANIFEST},
        auth=("alice", PASSWORD),
    )
    assert r.status_code == 413, r.text
    assert gw.pusher.tags("dev/big") == []


def test_a_remote_member_pulls_through_its_cache(gw: Gw, tmp_path: Path) -> None:
    """`docker/alpine` is in neither dev nor prod: the remote member (distribution as a
    pull-through cache) fetches it from its upstream, digest unchanged."""
    upstream_only = im.multi_platform("upstream-alpine")
    gw.upstream.push("library/alpine", upstream_only, "3.19")
    out = tmp_path / "alpine"
    proc = skopeo(
        "--all",
        "--preserve-digests",
        "--src-creds",
        f"alice:{PASSWORD}",
        f"docker://{gw.host}/docker/alpine:3.19",
        f"oci:{out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert _layout_digest(out) == upstream_only.digest
    assert gw.pusher.tags("dev/alpine") == []  # cached in the remote, not copied into dev


def test_a_token_user_reads_but_may_not_push(gw: Gw) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}", "Accept": im.ACCEPT}
    r = httpx.get(f"{gw.url}/v2/docker/app/manifests/1.0", headers=bearer)
    assert r.status_code == 200, r.text
    push = httpx.post(f"{gw.url}/v2/docker/app/blobs/uploads/", headers=bearer)
    assert push.status_code == 403 and push.json()["errors"][0]["code"] == "DENIED"
    wrong = httpx.get(
        f"{gw.url}/v2/docker/app/tags/list", headers={"Authorization": "Bearer not-it"}
    )
    assert wrong.status_code == 401 and "not-it" not in wrong.text


def test_the_referrers_fallback_tag_resolves_like_any_tag(gw: Gw) -> None:
    subject = im.image("with-referrers")
    gw.pusher.push("prod/ref", subject, "1.0")
    index = im.image("fallback-index")  # any manifest stored under the fallback tag
    tag = im.fallback_tag_of(subject.digest)
    gw.pusher.push("prod/ref", index, tag)
    r = httpx.get(f"{gw.url}/v2/customers/ref/manifests/{tag}", headers={"Accept": im.ACCEPT})
    assert r.status_code == 200 and r.headers["docker-content-digest"] == index.digest


def test_a_mount_names_virtual_repositories_and_lands_in_the_deploy_target(gw: Gw) -> None:
    img = im.image("mount-me")
    gw.pusher.push("dev/mount-src", img, "1.0")
    blob = img.blobs[-1]
    r = httpx.post(
        f"{gw.url}/v2/docker/mount-dst/blobs/uploads/",
        params={"mount": blob.digest, "from": "docker/mount-src"},
        auth=("alice", PASSWORD),
    )
    assert r.status_code == 201, r.text  # mounted within dev-local, no bytes sent
    assert r.headers["location"] == f"/v2/docker/mount-dst/blobs/{blob.digest}"
    assert gw.pusher.blob("dev/mount-dst", blob.digest) == blob.data
    # from a repository that cannot be mounted from (read-only view): a plain upload instead
    plain = httpx.post(
        f"{gw.url}/v2/docker/mount-dst/blobs/uploads/",
        params={"mount": blob.digest, "from": "customers/app"},
        auth=("alice", PASSWORD),
    )
    assert plain.status_code == 202, plain.text
    assert plain.headers["location"].startswith("/v2/docker/mount-dst/blobs/uploads/")


def test_a_mount_never_reads_what_the_caller_may_not(gw: Gw) -> None:
    """secret/ is a virtual repository alice may not read: naming it as a mount's source gets
    her a plain upload session, not its blob."""
    hidden = im.image("hidden")
    gw.pusher.push("secret/app", hidden, "1.0")
    blob = hidden.blobs[-1]
    r = httpx.post(
        f"{gw.url}/v2/docker/stolen/blobs/uploads/",
        params={"mount": blob.digest, "from": "secret/app"},
        auth=("alice", PASSWORD),
    )
    assert r.status_code == 202, r.text  # an upload session: nothing mounted
    assert gw.pusher.blob("dev/stolen", blob.digest) is None
    got = httpx.get(f"{gw.url}/v2/docker/stolen/blobs/{blob.digest}", auth=("alice", PASSWORD))
    assert got.status_code == 404
