"""Releases (#16): `airlock release create|show` against a real registry, the index read back
with the independent pusher and copied whole by skopeo; the creation rules and the insider's
ways to assemble a release from builds that do not belong together. No Prefect is needed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from flows.releases import REPOSITORY, TAG
from registry.mediatypes import RELEASE
from tests.flows.helpers import Setup
from tests.support import images as im
from tests.support.cli import airlock, assert_one_line_error
from tests.support.skopeo import layout_digest, skopeo

REVISION = "org.opencontainers.image.revision"


def three_members(setup: Setup) -> dict[str, im.Image]:
    members = {
        "api": im.multi_platform("rel-api"),
        "worker": im.image("rel-worker"),
        "chart": im.chart("rel-chart"),
    }
    for name, img in members.items():
        setup.reg.pusher.push(f"dev/{name}", img, "1.0")
    return members


def create(setup: Setup, *args: str) -> tuple[int, str, str]:
    done = airlock("release", "create", *args, "--pipeline", setup.file)
    return done.returncode, done.stdout, done.stderr


def test_a_release_is_an_oci_index_of_its_members_each_of_which_skopeo_copies(
    setup: Setup, tmp_path: Path
) -> None:
    members = three_members(setup)
    refs = [setup.ref("dev", name=name) for name in members]
    code, out, err = create(setup, "shop:1.0", *refs)
    assert code == 0, err
    digest = out.splitlines()[0]

    raw, media_type = setup.reg.pusher.manifest("dev/releases/shop", "1.0")
    assert im.sha256(raw) == digest and media_type == im.OCI_INDEX
    doc = json.loads(raw)
    assert doc["artifactType"] == RELEASE
    assert [{k: e[k] for k in ("mediaType", "digest", "size")} for e in doc["manifests"]] == [
        {k: v for k, v in img.descriptor().items()} for img in members.values()
    ]
    assert [e["annotations"] for e in doc["manifests"]] == [
        {REPOSITORY: f"dev/{name}", TAG: "1.0"} for name in members
    ]
    assert setup.reg.pusher.tags("dev/releases/shop") == ["1.0"]  # members by digest, untagged

    # An independent implementation finds every member in the releases repository, by the
    # digest the index names (skopeo 1.9 does not copy an index nested in an index in one go).
    for i, entry in enumerate(doc["manifests"]):
        layout = tmp_path / f"member-{i}"
        source = f"docker://{setup.host}/dev/releases/shop@{entry['digest']}"
        copied = skopeo("--all", "--preserve-digests", source, f"oci:{layout}")
        assert copied.returncode == 0, copied.stderr
        assert layout_digest(layout) == entry["digest"]

    again = create(setup, "shop:1.0", *refs)
    assert again[0] == 0 and again[1].splitlines()[0] == digest  # content-addressed: the same

    shown = airlock("release", "show", "shop:1.0", "--pipeline", setup.file)
    assert shown.returncode == 0, shown.stderr
    assert f"@{digest}" in shown.stdout.splitlines()[0]
    for name, img in members.items():
        assert any(name in line and img.digest in line for line in shown.stdout.splitlines())
    assert "dev: all 3 members" in shown.stdout and "qa: none" in shown.stdout

    setup.reg.pusher.push("qa/worker", members["worker"], "1.0")  # one member reached qa
    shown = airlock("release", "show", "shop:1.0", "--pipeline", setup.file, "--json")
    stages = json.loads(shown.stdout)["stages"]
    assert stages["qa"] == ["worker"] and stages["staging"] == []
    partly = airlock("release", "show", "shop:1.0", "--pipeline", setup.file)
    assert "qa: worker (1 of 3 members)" in partly.stdout


def test_a_version_never_changes(setup: Setup) -> None:
    members = three_members(setup)
    code, out, _ = create(setup, "shop:1.0", setup.ref("dev", name="api"))
    assert code == 0
    first = out.splitlines()[0]
    code, out, err = create(
        setup, "shop:1.0", setup.ref("dev", name="api"), setup.ref("dev", name="worker")
    )
    assert code == 1 and out == "", err
    assert "exists already" in err and "Traceback" not in err
    raw, _ = setup.reg.pusher.manifest("dev/releases/shop", "1.0")
    assert im.sha256(raw) == first
    assert setup.reg.pusher.digest("dev/releases/shop", members["worker"].digest) is None


def test_same_tag_refuses_builds_that_differ_and_pushes_nothing(setup: Setup) -> None:
    setup.reg.pusher.push("dev/api", im.image("tag-api"), "2.0")
    setup.reg.pusher.push("dev/worker", im.image("tag-worker"), "1.9")
    refs = [setup.ref("dev", "2.0", "api"), setup.ref("dev", "1.9", "worker")]
    code, out, err = create(setup, "shop:2.0", *refs, "--same-tag")
    assert code == 1 and out == "", err
    assert "same_tag" in err and "api 2.0" in err and "worker 1.9" in err
    assert setup.reg.pusher.tags("dev/releases/shop") == []


def test_same_revision_from_a_release_file(setup: Setup, tmp_path: Path) -> None:
    """Labels, as `docker build --label` and buildx write them; annotations take precedence."""
    commit, other = "a" * 40, "b" * 40
    setup.reg.pusher.push("dev/api", im.image("rev-api", labels={REVISION: commit}), "1.0")
    setup.reg.pusher.push("dev/worker", im.image("rev-worker", labels={REVISION: other}), "1.0")
    setup.reg.pusher.push("dev/worker", im.image("rev-worker2", labels={REVISION: commit}), "1.1")
    setup.reg.pusher.push("dev/chart", im.chart("rev-chart"), "1.0")  # names no revision
    release = tmp_path / "release.yaml"

    def file(*members: str) -> str:
        doc = {"name": "shop", "version": "3.0", "members": list(members)}
        release.write_text(yaml.safe_dump({**doc, "require": {"same_revision": True}}))
        return str(release)

    api = setup.ref("dev", name="api")
    code, out, err = create(setup, "--file", file(api, setup.ref("dev", name="worker")))
    assert code == 1 and out == "", err
    assert f"api {commit}" in err and f"worker {other}" in err
    code, _, err = create(setup, "--file", file(api, setup.ref("dev", name="chart")))
    assert code == 1 and "chart name no source revision" in err, err
    assert setup.reg.pusher.tags("dev/releases/shop") == []

    code, out, err = create(setup, "--file", file(api, setup.ref("dev", "1.1", "worker")))
    assert code == 0, err
    assert setup.reg.pusher.tags("dev/releases/shop") == ["3.0"]


def test_members_an_insider_could_slip_in_are_refused(setup: Setup) -> None:
    members = three_members(setup)
    older = im.image("rel-worker-old")
    setup.reg.pusher.push("dev/worker", older, "0.9")
    setup.reg.pusher.push("qa/api", members["api"], "1.0")
    api = setup.ref("dev", name="api")
    cases = [
        # the tag claimed for another build: same_tag would pass on a lie
        ([api, f"{setup.ref('dev', name='worker')}@{older.digest}", "--same-tag"], "names"),
        ([setup.ref("qa", name="api")], "pushed to dev"),  # not from the first stage
        ([api, setup.ref("dev", "0.9", "worker"), setup.ref("dev", "1.0", "worker")], "both"),
        ([f"{setup.host}/dev/worker@{older.digest}"], "by its tag"),
        ([setup.ref("dev", "7.7", "api")], "no such tag"),
    ]
    for args, needle in cases:
        proc = airlock("release", "create", "shop:1.0", *args, "--pipeline", setup.file)
        assert_one_line_error(proc, 2, needle)
    code, _, _ = create(setup, "shop:1.0", api)
    assert code == 0
    as_member = airlock(
        "release", "create", "big:1.0", setup.ref("dev", "1.0", "releases/shop"),
        "--pipeline", setup.file,
    )  # fmt: skip
    assert_one_line_error(as_member, 2, "is a release")


def test_bad_release_names_and_files_are_one_line_errors(setup: Setup, tmp_path: Path) -> None:
    ref = setup.ref("dev", name="api")
    for args, needle in [
        (["shop", ref], "NAME:VERSION"),
        (["Shop:1.0", ref], "NAME:VERSION"),
        (["shop:", ref], "NAME:VERSION"),
        (["shop:1.0"], "at least one member"),
        ([], "name the release"),
    ]:
        assert_one_line_error(
            airlock("release", "create", *args, "--pipeline", setup.file), 2, needle
        )
    bad = tmp_path / "release.yaml"
    bad.write_text(yaml.safe_dump({"name": "shop", "version": "1.0", "members": [ref], "x": 1}))
    assert_one_line_error(
        airlock("release", "create", "--file", str(bad), "--pipeline", setup.file), 2, "x"
    )
    assert_one_line_error(
        airlock("release", "show", "nope:1.0", "--pipeline", setup.file), 2, "no release nope:1.0"
    )
    setup.reg.pusher.push("dev/releases/fake", im.image("not-a-release"), "1.0")
    assert_one_line_error(
        airlock("release", "show", "fake:1.0", "--pipeline", setup.file), 2, "not an airlock"
    )
