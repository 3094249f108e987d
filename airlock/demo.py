"""`airlock demo` (= `make demo`): the whole story on one machine, embedded defaults, no setup.

Everything runs on loopback under a project-local state directory (.airlock-demo/):

1. a Prefect server on SQLite, the webhook receiver, and a registry whose notifications go to
   the receiver (with a bearer token made for this run);
2. `airlock serve`: prefect.yaml's deployments, bound to a demo pipeline —
   dev → qa [tests, scan: signed by CI's key] → staging [signature, verified with CI's key] →
   prod [approval, signed by the release manager's key]; each stage after dev signs a VSA of
   what it admitted with its own key (keys made for this run, in .airlock-demo/keys/);
3. CI's part: an image is built and pushed by digest, its test and scan reports signed as
   in-toto attestations and its signature attached, then the tag is pushed. The push alone
   triggers promote-on-push: qa, staging, and prod waits for a signed approval, which the demo
   gives with `airlock approve --key` (or a person gives in the UI, with --interactive);
4. a second image, whose scan has CRITICAL findings, is stopped at qa's scan gate; a third,
   whose passing reports a developer signed with their own key, is stopped at qa's tests gate;
5. a table: stage, digest, gates, who approved — the same digest at every stage; then
   `airlock verify` passes for the promoted digest and fails for the stopped one, and a
   customer pulls through a view that serves only what holds prod's signed VSA.

Processes are stopped by PID at the end, or left running with --keep (the UI's URL is printed).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from airlock.supervisor import PrefectServer, Supervisor, free_port, http_json, quiet_env
from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import AirlockError
from registry.manifest import Descriptor, Manifest, digest_of, parse_manifest

T = TypeVar("T")
DATA = Path(__file__).resolve().parent / "demo_data"
STATE_DIR = Path(".airlock-demo")
WAIT = 120.0  # seconds for any one step before the demo gives up
APPROVER = "release-manager"
KEYS = ("ci", "developer", "qa", "staging", "prod", APPROVER)  # made for each run
AIRLOCK = [sys.executable, "-m", "airlock.cli"]  # airlock's own processes


# ---------------------------------------------------------------------------- images


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A reproducible gzip'd tar layer; returns (blob, diff_id of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), digest_of(tar_bytes)


def sample_image(version: str = "1.0") -> tuple[Manifest, dict[str, bytes]]:
    """An OCI image of one layer holding /app/hello.txt; returns the manifest and its blobs."""
    layer, diff_id = _layer({"app/hello.txt": f"hello from airlock {version}\n".encode()})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {
                "Cmd": ["cat", "/app/hello.txt"],
                "Labels": {"org.opencontainers.image.version": version},
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    return _image(config, [(layer, "application/vnd.oci.image.layer.v1.tar+gzip", None)])


def _image(
    config: bytes, layers: list[tuple[bytes, str, dict[str, str] | None]]
) -> tuple[Manifest, dict[str, bytes]]:
    """An OCI image manifest over these blobs; returns the manifest and the blobs by digest."""

    def descriptor(data: bytes, media_type: str, annotations: dict[str, str] | None) -> dict:
        d = {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}
        return {**d, "annotations": annotations} if annotations else d

    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": descriptor(config, "application/vnd.oci.image.config.v1+json", None),
        "layers": [descriptor(*layer) for layer in layers],
    }
    raw = json.dumps(doc, indent=2).encode()
    blobs = {digest_of(data): data for data in [config, *(layer[0] for layer in layers)]}
    return parse_manifest(raw, mt.OCI_MANIFEST, digest_of(raw), "demo image"), blobs


async def push(
    client: RegistryClient, repo: str, tag: str, manifest: Manifest, blobs: dict[str, bytes]
) -> None:
    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        yield data

    for desc in manifest.blobs():
        if await client.blob_size(repo, desc.digest) is None:
            await client.upload_blob(repo, desc, chunks(blobs[desc.digest]))
    await client.put_manifest(repo, tag, manifest)


def _signature(subject: Descriptor, reference: str, key: Any) -> tuple[Manifest, dict[str, bytes]]:
    """What `cosign sign --key` pushes: the simple-signing payload naming the digest, and the
    base64 DER ECDSA-SHA256 signature over its exact bytes in the layer's annotation."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": subject.digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    signature = base64.b64encode(key.sign(payload)).decode()  # ECDSA P-256, SHA-256, DER
    config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(payload)]},
        }
    ).encode()
    annotations = {"dev.cosignproject.cosign/signature": signature}
    return _image(
        config, [(payload, "application/vnd.dev.cosign.simplesigning.v1+json", annotations)]
    )


def _scan(report: str, repo: str, manifest: Manifest) -> bytes:
    """A real Trivy report, re-pointed at the image it is attached to."""
    doc = json.loads((DATA / report).read_bytes())
    doc["Metadata"]["RepoDigests"] = [f"{repo}@{manifest.digest}"]
    doc["Metadata"]["ImageID"] = manifest.config.digest if manifest.config else ""
    return json.dumps(doc, indent=2).encode()


async def push_with_evidence(
    client: RegistryClient,
    repo: str,
    manifest: Manifest,
    blobs: dict[str, bytes],
    reports: list[tuple[str, bytes]],
    *,
    tag: str | None = None,
    signature: tuple[Manifest, dict[str, bytes]] | None = None,
    signer: Any = None,
) -> float:
    """CI's order: the image by digest, its reports attached as referrers — or, with `signer`
    (a gates.keys.PrivateKey), signed as in-toto attestations in both layouts, as `airlock
    attach --sign-key` does — (and a cosign signature under its tag), and only then `tag`, whose
    push is the notification that starts the pipeline, once the evidence is there. Returns when
    the tag was pushed."""
    from gates.attested import attest
    from gates.evidence import FORMATS
    from registry.referrers import artifact, push_referrer

    await push(client, repo, manifest.digest, manifest, blobs)
    for media_type, data in reports:
        if signer is not None:
            kind = next(k for k, m in FORMATS.items() if m == media_type)
            name = f"{client.registry}/{repo}"
            await attest(client, repo, manifest.descriptor, name, (kind, data, None), signer)
            continue
        art, art_blobs = artifact(manifest.descriptor, media_type, data)
        await push_referrer(client, repo, art, art_blobs)
    if signature is not None:
        await push(client, repo, f"sha256-{manifest.digest[7:]}.sig", *signature)
    pushed = time.time()
    if tag is not None:
        await client.put_manifest(repo, tag, manifest)
    return pushed


async def ci_build(
    host: str, version: str, scan_report: str, key: Any, signer: Any = None
) -> tuple[Manifest, float]:
    """CI's part: build, push by digest, attach reports (signed by `signer`, default `key`) and
    a cosign signature (by `key`), then push the tag. Returns the manifest and when the tag was
    pushed."""
    manifest, blobs = sample_image(version)
    reports = [
        (mt.TEST_REPORT_PYTEST, (DATA / "tests.pytest.json").read_bytes()),
        (mt.SCAN_REPORT_TRIVY, _scan(scan_report, "dev/app", manifest)),
    ]
    signature = _signature(manifest.descriptor, f"{host}/dev/app", key)
    async with RegistryClient(host) as client:
        pushed = await push_with_evidence(
            client,
            "dev/app",
            manifest,
            blobs,
            reports,
            tag=version,
            signature=signature,
            signer=signer or key,
        )
    return manifest, pushed


# ---------------------------------------------------------------------------- the Prefect API


class DemoFailed(AirlockError):
    exit_code = 3


class Api:
    """The few Prefect API calls the demo makes (plain HTTP: no client state to manage)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, body: Any) -> Any:
        import httpx

        r = httpx.post(f"{self.url}{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def pipeline_run(self, reference: str) -> dict[str, Any] | None:
        for run in self.post("/flow_runs/filter", {}):
            if reference in (run["parameters"] or {}).get("images", []):
                return run
        return None

    def waiting_approval(self, image: str, stage: str = "prod") -> dict[str, Any] | None:
        """The run (a promote run, or a pipeline run that suspended itself) waiting for an
        approval of `image` into `stage`, once the approval can be taken."""
        from flows.approvals import REQUEST_KEY

        paused = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}
        for run in self.post("/flow_runs/filter", paused):
            keyset = (run["state"].get("state_details") or {}).get("run_input_keyset")
            asked = keyset and http_json(f"{self.url}/flow_runs/{run['id']}/input/{REQUEST_KEY}")
            asked = json.loads(asked) if isinstance(asked, str) else asked  # stored as JSON text
            where = f"{asked['source']} {asked['target']}" if asked else ""
            if not (asked and asked["stage"] == stage and image in where):
                continue
            # Prefect saves the Resume form's schema just after pausing: wait for it
            if http_json(f"{self.url}/flow_runs/{run['id']}/input/{keyset['schema']}") is not None:
                return run
        return None

    def started(self, run_id: str) -> str | None:
        return (http_json(f"{self.url}/flow_runs/{run_id}") or {}).get("start_time")

    def final(self, run_id: str) -> dict[str, Any] | None:
        run = http_json(f"{self.url}/flow_runs/{run_id}")
        ended = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
        return run if run and run["state"]["type"] in ended else None


# ---------------------------------------------------------------------------- the story


def _pipeline_yaml(host: str, public_key: str, customers: str) -> str:
    key = "\n".join("              " + line for line in public_key.strip().splitlines())
    return f"""\
# written by `airlock demo`
registries:
  local: {{url: "{host}"}}
stages:
  - {{name: dev, registry: local, repository: "dev/{{name}}"}}
  - name: qa
    registry: local
    repository: "qa/{{name}}"
    signing_key: keys/qa.key          # each promotion into qa: a VSA signed with it
    public_key: keys/qa.pub           # what staging, verify and the gateway trust for qa
    gates:
      - {{kind: tests, policy: {{min_tests: 1, max_failed: 0, signed_by: [keys/ci.pub]}}}}
      - {{kind: scan, policy: {{fail_on: HIGH, signed_by: [keys/ci.pub]}}}}
  - name: staging
    registry: local
    repository: "staging/{{name}}"
    immutable: true
    signing_key: keys/staging.key
    public_key: keys/staging.pub
    gates:
      - kind: signature
        policy:
          require: verified
          public_keys:
            - |
{key}
  - name: prod
    registry: local
    repository: "prod/{{name}}"
    immutable: true
    signing_key: keys/prod.key
    public_key: keys/prod.pub
    gates:
      - kind: approval
        policy:
          required: 1
          approvers: [{{name: {APPROVER}, key: keys/{APPROVER}.pub}}]
        timeout: 10m
    publish: "{customers}/{{name}}"
"""


def _virtual_yaml(host: str) -> str:
    """The customers' view: what airlock promoted into prod only, anonymous reads, no pushes."""
    return f"""\
# written by `airlock demo`: what customers see (airlock virtual serve)
registries:
  local: {{url: "{host}"}}
repositories:
  customers:
    members: [{{registry: local, prefix: prod}}]
    read: [anonymous]
    require_stage: {{stage: prod, public_key: keys/prod.pub}}   # prod's signed VSA, or 404
"""


def layout_digest(layout: Path) -> str:
    """The digest an OCI layout (as `skopeo copy … oci:DIR` writes it) holds."""
    index = json.loads((layout / "index.json").read_text())
    return index["manifests"][0]["digest"]


def _customer_pull(customers: str, good: Manifest, bad: Manifest, state: Path) -> bool:
    """A customer pulls app:1.0 through the production view; app:1.1 is not there."""
    import httpx

    layout = state / "customer-pull"
    skopeo = ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--preserve-digests"]
    pulled = subprocess.run(
        [*skopeo, f"docker://{customers}/app:1.0", f"oci:{layout}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if pulled.returncode != 0:
        raise DemoFailed(f"a customer pull failed: {pulled.stderr.strip()[-300:]}")
    digest = layout_digest(layout)
    host, _, view = customers.partition("/")
    absent = httpx.head(
        f"http://{host}/v2/{view}/app/manifests/1.1", headers={"Accept": mt.ACCEPT}, timeout=10
    )
    print(f"\ncustomer pull  {customers}/app:1.0 -> {digest} (skopeo, anonymous)")
    print(f"customer pull  {customers}/app:1.1 -> HTTP {absent.status_code} (never promoted)")
    return digest == good.digest and absent.status_code == 404


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {text}", flush=True)


@dataclass
class Demo:
    """One run of the demo: its state directory, its processes, what each step found."""

    state: Path
    interactive: bool = False
    keep: bool = False
    clock: Clock = field(default_factory=Clock)
    services: Supervisor = field(default_factory=Supervisor)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    receiver_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    registry: Any = None
    key: Any = None
    # derived from the above
    logs: Path = field(init=False)
    pipeline_file: Path = field(init=False)
    receiver: str = field(init=False)  # http://127.0.0.1:PORT
    customers: str = field(init=False)  # the customers' view: 127.0.0.1:PORT/customers
    prefect: PrefectServer = field(init=False)
    env: dict[str, str] = field(init=False)  # what airlock's own processes get
    api: Api = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.state / "logs"
        self.pipeline_file = self.state / "pipeline.yaml"
        self.receiver = f"http://127.0.0.1:{self.receiver_port}"
        self.customers = f"127.0.0.1:{self.gateway_port}/customers"
        self.prefect = PrefectServer(
            self.state / "prefect",
            ui=self.keep or self.interactive,
            base_env=_base_env(self.state),
            log=self.logs / "prefect-server.log",
            append=False,
        )
        self.env = self.prefect.client_env()
        self.api = Api(self.prefect.api)

    @property
    def host(self) -> str:
        return self.registry.host

    def until(self, what: str, check: Callable[[], T | None], timeout: float = WAIT) -> T:
        """Poll `check` until it gives a value (each service is checked to be alive meanwhile)."""
        return self.services.wait(what, check, timeout=timeout)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.services.start(name, args, env=env, log=self.logs / f"{name}.log")

    def pids(self) -> str:
        pids = [p.pid for p in self.services.processes] + [self.registry.proc.pid]
        return " ".join(map(str, pids))

    def stop(self) -> None:
        """Newest first, each waited for: the runner pauses its deployments through the Prefect
        server on its way out, so the server goes after them (and the registry last)."""
        self.services.close()


def run_demo(
    state_dir: Path | None = None, *, keep: bool = False, interactive: bool = False
) -> int:
    demo = Demo(_clean_state(state_dir or STATE_DIR), interactive=interactive, keep=keep)
    try:
        start_registry_and_prefect(demo)
        write_pipeline(demo)
        start_airlock_services(demo)
        good, bad, forged, pushed = ci_pushes(demo)
        run, (to_start, to_qa, to_staging) = follow_to_staging(demo, good, pushed)
        approve_prod(demo)
        done = pipeline_outcomes(demo, run, bad, forged)
        ok = asyncio.run(_report(demo.host, good, bad))
        ok = verify_outcomes(demo) and ok
        ok = customer_pull(demo, good, bad) and ok
        demo.clock.say(
            f"done: push → flow start {to_start:.1f} s, → qa {to_qa:.1f} s,"
            f" → staging {to_staging:.1f} s,"
            f" whole demo {time.monotonic() - demo.clock.start:.1f} s"
        )
        if keep:
            print(
                f"\nleft running (--keep): UI {demo.prefect.url}, registry"
                f" {demo.registry.url}; stop with: kill {demo.pids()}"
            )
        return 0 if ok and done["state"]["type"] == "COMPLETED" else 3
    finally:
        if not keep:
            demo.stop()


def _clean_state(state_dir: Path) -> Path:
    state = state_dir.resolve()
    shutil.rmtree(state, ignore_errors=True)  # each run starts clean
    (state / "logs").mkdir(parents=True)
    (state / "docker").mkdir()
    return state


def _base_env(state: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AIRLOCK_"))}
    return quiet_env(state / "prefect", base) | {
        "DOCKER_CONFIG": str(state / "docker"),  # the demo registry needs no credentials
    }


def start_registry_and_prefect(demo: Demo) -> None:
    """1. A registry whose notifications go to the receiver (with a bearer token made for this
    run), and a Prefect server on SQLite (not waited for yet: the next step overlaps it)."""
    from airlock.localregistry import start_registry

    endpoint = {
        "name": "airlock",
        "url": f"{demo.receiver}/registry",
        "headers": {"Authorization": [f"Bearer {demo.token}"]},
        "timeout": "5s",
        "threshold": 10,
        "backoff": "1s",
    }
    demo.registry = demo.services.adopt(
        start_registry(demo.state / "registry", extra={"notifications": {"endpoints": [endpoint]}})
    )
    demo.clock.say(f"registry        {demo.registry.url}  (notifies {demo.receiver}/registry)")
    demo.services.adopt(demo.prefect.start(wait=False))  # watched while the demo waits


def write_pipeline(demo: Demo) -> None:
    """The keys of this run (CI's, a developer's, each stage's, the release manager's), the demo
    pipeline and the customers' view; then the Prefect server is up."""
    from gates.keys import generate, read_private_key

    keys = demo.state / "keys"
    keys.mkdir()
    for name in KEYS:
        private, public = generate()
        (keys / f"{name}.key").write_bytes(private)
        (keys / f"{name}.pub").write_bytes(public)
    demo.key = read_private_key(keys / "ci.key")
    public_pem = (keys / "ci.pub").read_text()
    demo.pipeline_file.write_text(_pipeline_yaml(demo.host, public_pem, demo.customers))
    demo.clock.say(f"keys            {keys}  ({', '.join(KEYS)})")
    (demo.state / "virtual.yaml").write_text(_virtual_yaml(demo.host))
    demo.until("the Prefect server", demo.prefect.ready)
    demo.clock.say(f"prefect server  {demo.prefect.url}  (SQLite in {demo.state})")


def start_airlock_services(demo: Demo) -> None:
    """2. The webhook receiver, `airlock serve` (prefect.yaml's deployments bound to the demo
    pipeline) and the customers' gateway."""
    receiver_env = {**demo.env, "AIRLOCK_WEBHOOK_TOKEN": demo.token}
    receiver_cmd = ["webhooks", "serve", "--port", str(demo.receiver_port)]
    receiver_cmd += ["--pipeline", str(demo.pipeline_file)]
    receiver_cmd += ["--state", str(demo.state / "webhooks.sqlite")]  # not in the home folder
    demo.spawn("webhooks", [*AIRLOCK, *receiver_cmd], receiver_env)
    serve_env = {**demo.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    serve_cmd = ["serve", "--pipeline", str(demo.pipeline_file), "--no-schedules"]
    demo.spawn("deployments", [*AIRLOCK, *serve_cmd], serve_env)
    gateway_cmd = ["virtual", "serve", "--config", str(demo.state / "virtual.yaml")]
    gateway_cmd += ["--port", str(demo.gateway_port)]
    demo.spawn("gateway", [*AIRLOCK, *gateway_cmd], demo.env)
    demo.until("the webhook receiver", lambda: http_json(f"{demo.receiver}/healthz"))
    demo.clock.say(f"webhooks        {demo.receiver}  (registry → Prefect events)")
    demo.until("the served deployments", lambda: len(demo.api.post("/deployments/filter", {})) >= 4)
    demo.clock.say("deployments     promote-on-push, promote, drift-watch, rescan (served)")


def ci_pushes(demo: Demo) -> tuple[Manifest, Manifest, Manifest, float]:
    """3. CI pushes a good image and a bad one (its scan: CRITICAL); a developer pushes a third
    with passing reports signed with their own key. The pushes start the pipeline. Returns the
    three and when the good one's tag was pushed."""
    from gates.keys import read_private_key

    good, pushed = asyncio.run(ci_build(demo.host, "1.0", "scan-clean.trivy.json", demo.key))
    demo.clock.say(f"CI pushed       {demo.host}/dev/app:1.0  {good.digest}")
    bad, _ = asyncio.run(ci_build(demo.host, "1.1", "scan-critical.trivy.json", demo.key))
    demo.clock.say(f"CI pushed       {demo.host}/dev/app:1.1  {bad.digest}  (its scan: CRITICAL)")
    developer = read_private_key(demo.state / "keys" / "developer.key")
    forged, _ = asyncio.run(ci_build(demo.host, "1.2", "scan-clean.trivy.json", developer))
    demo.clock.say(
        f"dev pushed      {demo.host}/dev/app:1.2  {forged.digest}  (reports signed with the"
        " developer's own key)"
    )
    return good, bad, forged, pushed


def follow_to_staging(
    demo: Demo, good: Manifest, pushed: float
) -> tuple[dict[str, Any], tuple[float, float, float]]:
    """promote-on-push starts, and app:1.0 passes qa and staging by itself. Returns the run and
    the seconds from the push to its start, to qa and to staging."""
    good_ref = f"{demo.host}/dev/app:1.0@{good.digest}"
    run = demo.until("the pipeline run of app:1.0", lambda: demo.api.pipeline_run(good_ref))
    started = demo.until("the pipeline run to start", lambda: demo.api.started(run["id"]))
    to_start = dt.datetime.fromisoformat(started).timestamp() - pushed
    demo.clock.say(f"promote-on-push run {run['name']} started {to_start:.1f} s after the push")

    async def there(stage: str) -> bool:
        async with RegistryClient(demo.host) as client:
            now = await client.head_manifest(f"{stage}/app", "1.0")
        return now is not None and now.digest == good.digest

    demo.until("app:1.0 to reach qa", lambda: asyncio.run(there("qa")))
    to_qa = time.time() - pushed
    demo.clock.say(f"app:1.0 reached qa {to_qa:.1f} s after the push (its gates passed)")
    demo.until("app:1.0 to reach staging", lambda: asyncio.run(there("staging")))
    to_staging = time.time() - pushed
    demo.clock.say(
        f"app:1.0 reached staging {to_staging:.1f} s after the push (qa, staging passed)"
    )
    return run, (to_start, to_qa, to_staging)


def approve_prod(demo: Demo) -> None:
    """4. prod waits for a person: `airlock approve` gives the approval (or, with
    --interactive, a person in the UI)."""
    from flows.approvals import run_pages

    waiting = demo.until(
        "prod's approval request",
        lambda: demo.api.waiting_approval("app:1.0"),
        timeout=WAIT if not demo.interactive else 600,
    )
    ui_run = asyncio.run(run_pages(demo.prefect.url))(waiting["id"])
    key = demo.state / "keys" / f"{APPROVER}.key"
    if demo.interactive:
        demo.clock.say(f"prod is waiting for an approval: open {ui_run} and press Resume")
        demo.clock.say(
            f"  signed by {APPROVER}: paste the output of `airlock approve {waiting['id']} --by"
            f" {APPROVER} --key {key} --print-signature` into the form's Signature field"
        )
        demo.clock.say(f"  (or run: airlock approve {waiting['id']} --by {APPROVER} --key {key})")
        return
    approve = [*AIRLOCK, "approve", waiting["id"], "--by", APPROVER, "--key", str(key)]
    approve += ["--comment", "demo"]
    given = subprocess.run(approve, env=demo.env, capture_output=True, text=True, timeout=60)
    if given.returncode != 0:
        raise DemoFailed(f"airlock approve failed: {given.stderr.strip()}")
    demo.clock.say(
        f"approved        by {APPROVER}, signed (airlock approve {waiting['id']} --key …; {ui_run})"
    )


def pipeline_outcomes(
    demo: Demo, run: dict[str, Any], bad: Manifest, forged: Manifest
) -> dict[str, Any]:
    """5. app:1.0's run ends (Completed), app:1.1's is stopped at qa's scan gate, app:1.2's
    (reports signed by the developer, not CI) at qa's tests gate. Returns the good run's end."""
    done = demo.until(
        "the pipeline run of app:1.0 to end",
        lambda: demo.api.final(run["id"]),
        timeout=WAIT if not demo.interactive else 600,
    )
    demo.clock.say(f"app:1.0 pipeline run: {done['state']['name']}")
    for version, image in (("1.1", bad), ("1.2", forged)):
        ref = f"{demo.host}/dev/app:{version}@{image.digest}"
        found = demo.until(
            f"the pipeline run of app:{version}", lambda r=ref: demo.api.pipeline_run(r)
        )
        ended = demo.until(
            f"the pipeline run of app:{version} to end",
            lambda f=found: demo.api.final(f["id"]),
        )
        demo.clock.say(
            f"app:{version} pipeline run: {ended['state']['name']}: "
            f"{ended['state'].get('message') or ''}"
        )
    return done


def verify_outcomes(demo: Demo) -> bool:
    """6. What anyone can check without airlock's records: `airlock verify` passes for app:1.0
    in prod (a VSA signed by each stage's key) and fails for app:1.1 (it never passed qa)."""
    outcomes = []
    for version, stage, expected in (("1.0", "prod", 0), ("1.1", "qa", 1)):
        ref = f"{demo.host}/dev/app:{version}"
        command = [*AIRLOCK, "verify", ref, "--stage", stage, "--pipeline", str(demo.pipeline_file)]
        done = subprocess.run(command, env=demo.env, capture_output=True, text=True, timeout=60)
        print(f"\n$ airlock verify {ref} --stage {stage}   (exit {done.returncode})")
        print(done.stdout.rstrip() or done.stderr.rstrip())
        outcomes.append(done.returncode == expected)
    return all(outcomes)


def customer_pull(demo: Demo, good: Manifest, bad: Manifest) -> bool:
    """7. A customer pulls through the production view: app:1.0 is there, app:1.1 is not."""
    demo.until(
        "the customers' gateway",
        lambda: http_json(f"http://{demo.customers.split('/')[0]}/healthz"),
    )
    return _customer_pull(demo.customers, good, bad, demo.state)


async def _report(host: str, good: Manifest, bad: Manifest) -> bool:
    """The table: what each stage holds for app:1.0, on what evidence, approved by whom."""
    from flows.records import records_for

    rows = []
    ignored: list[str] = []  # approvals that did not count, shown apart from those that did
    async with RegistryClient(host) as client:
        dev = await client.head_manifest("dev/app", "1.0")
        rows.append(("dev", dev.digest if dev else "-", "pushed by CI", "-"))
        digests = {"dev": dev.digest if dev else None}
        for stage in ("qa", "staging", "prod"):
            now = await client.head_manifest(f"{stage}/app", "1.0")
            digests[stage] = now.digest if now else None
            records = [
                r
                for r in (await records_for(client, f"{stage}/app", now.digest) if now else [])
                if r.is_for(stage, f"{stage}/app")
            ]
            gates = (
                ", ".join(
                    f"{g.gate} {'passed' if g.passed else 'refused'}" for g in records[-1].gates
                )
                if records
                else "-"
            )
            decisions = records[-1].approvals if records else []
            approvers = ", ".join(a.shown for a in decisions if not a.not_counted)
            rows.append((stage, now.digest if now else "-", gates or "(none)", approvers or "-"))
            ignored += [f"{stage}: {a.shown}" for a in decisions if a.not_counted]
        bad_in_qa = await client.head_manifest("qa/app", "1.1")
    print()
    print(f"{'stage':<8} {'digest':<72} {'gates':<40} approved by")
    for stage, digest, gates, approvers in rows:
        print(f"{stage:<8} {digest:<72} {gates:<40} {approvers}")
    for line in ignored:
        print(f"  {line}")
    same = len(set(digests.values())) == 1 and good.digest in digests.values()
    print(f"\napp:1.0: the same digest at every stage: {'yes' if same else 'NO'}")
    stopped = bad_in_qa is None
    print(f"app:1.1 ({bad.digest[:19]}…): {'stopped at qa' if stopped else 'NOT stopped'}")
    return same and stopped
