"""`airlock demo` (= `make demo`): the whole story on one machine, embedded defaults, no setup.

Everything runs on loopback under a project-local state directory (.airlock-demo/):

1. a Prefect server on SQLite, the webhook receiver, and a registry whose notifications go to
   the receiver (with a bearer token made for this run);
2. `airlock serve`: prefect.yaml's deployments, bound to a demo pipeline —
   dev → qa [tests, scan] → staging [signature, verified with a key made for this run] →
   prod [approval];
3. CI's part: an image is built and pushed by digest, its test and scan reports and its
   signature are attached, then the tag is pushed. The push alone triggers promote-on-push:
   qa, staging, and prod waits for an approval, which the demo gives with `airlock approve`
   (or a person gives in the UI, with --interactive);
4. a second image, whose scan has CRITICAL findings, is stopped at qa's scan gate;
5. a table: stage, digest, gates, who approved — the same digest at every stage.

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

from registry import mediatypes as mt
from registry.client import RegistryClient
from registry.errors import AirlockError
from registry.manifest import Descriptor, Manifest, digest_of, parse_manifest

T = TypeVar("T")
DATA = Path(__file__).resolve().parent / "demo_data"
STATE_DIR = Path(".airlock-demo")
WAIT = 120.0  # seconds for any one step before the demo gives up
APPROVER = "release-manager"


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
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

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
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
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


async def ci_build(host: str, version: str, scan_report: str, key: Any) -> tuple[Manifest, float]:
    """CI's part: build, push by digest, attach reports and signature, then push the tag (the
    notification that starts the pipeline, once the evidence is there). Returns the manifest
    and when the tag was pushed."""
    from registry.referrers import artifact, push_referrer

    manifest, blobs = sample_image(version)
    subject = manifest.descriptor
    async with RegistryClient(host) as client:
        await push(client, "dev/app", manifest.digest, manifest, blobs)
        for kind, data in (
            (mt.TEST_REPORT_PYTEST, (DATA / "tests.pytest.json").read_bytes()),
            (mt.SCAN_REPORT_TRIVY, _scan(scan_report, "dev/app", manifest)),
        ):
            art, art_blobs = artifact(subject, kind, data)
            await push_referrer(client, "dev/app", art, art_blobs)
        sig, sig_blobs = _signature(subject, f"{host}/dev/app", key)
        await push(client, "dev/app", f"sha256-{manifest.digest[7:]}.sig", sig, sig_blobs)
        pushed = time.time()
        await client.put_manifest("dev/app", version, manifest)
    return manifest, pushed


# ---------------------------------------------------------------------------- processes


@dataclass
class Services:
    state: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    registry: Any = None

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.state / "logs" / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        """Newest first, each waited for: the runner pauses its deployments through the Prefect
        server on its way out, so the server goes last."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.registry is not None:
            self.registry.stop()

    def pids(self) -> str:
        pids = [str(p.pid) for _, p in self.procs]
        if self.registry is not None:
            pids.append(str(self.registry.proc.pid))
        return " ".join(pids)


class DemoFailed(AirlockError):
    exit_code = 3


def until(what: str, check: Callable[[], T | None], services: Services, timeout: float = WAIT) -> T:
    """Poll `check` until it gives a value (each service is checked to be alive meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in services.procs:
            if proc.poll() is not None:
                raise DemoFailed(f"{name} exited; see {services.state / 'logs' / name}.log")
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise DemoFailed(f"timed out waiting for {what}; logs in {services.state / 'logs'}")


def _get(url: str) -> Any:
    import httpx

    try:
        r = httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


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
        """The promote run of `image` into `stage`, once it waits for an approval it can take."""
        paused = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}
        for run in self.post("/flow_runs/filter", paused):
            params = run["parameters"] or {}
            keyset = (run["state"].get("state_details") or {}).get("run_input_keyset")
            if not (
                params.get("to_stage") == stage and image in params.get("image", "") and keyset
            ):
                continue
            # Prefect saves the Resume form's schema just after pausing: wait for it
            if _get(f"{self.url}/flow_runs/{run['id']}/input/{keyset['schema']}") is not None:
                return run
        return None

    def final(self, run_id: str) -> dict[str, Any] | None:
        run = _get(f"{self.url}/flow_runs/{run_id}")
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
    gates:
      - {{kind: tests, policy: {{min_tests: 1, max_failed: 0}}}}
      - {{kind: scan, policy: {{fail_on: HIGH}}}}
  - name: staging
    registry: local
    repository: "staging/{{name}}"
    immutable: true
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
    gates:
      - {{kind: approval, policy: {{required: 1}}, timeout: 10m}}
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
    require_stage: prod
"""


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
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
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


def run_demo(
    state_dir: Path | None = None, *, keep: bool = False, interactive: bool = False
) -> int:
    from airlock.localregistry import free_port

    state = (state_dir or STATE_DIR).resolve()
    shutil.rmtree(state, ignore_errors=True)  # each run starts clean
    (state / "logs").mkdir(parents=True)
    clock = Clock()
    services = Services(state)
    airlock = [sys.executable, "-m", "airlock.cli"]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AIRLOCK_"))}
    base_env.update(
        PREFECT_HOME=str(state / "prefect"),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DOCKER_CONFIG=str(state / "docker"),  # the demo registry needs no credentials
    )
    (state / "docker").mkdir()
    try:
        # 1. Prefect, the receiver, the registry
        token = secrets.token_urlsafe(24)
        receiver_port = free_port()
        receiver = f"http://127.0.0.1:{receiver_port}"
        pipeline_file = state / "pipeline.yaml"

        from airlock.localregistry import start_registry

        endpoint = {
            "name": "airlock",
            "url": f"{receiver}/registry",
            "headers": {"Authorization": [f"Bearer {token}"]},
            "timeout": "5s",
            "threshold": 10,
            "backoff": "1s",
        }
        services.registry = start_registry(
            state / "registry", extra={"notifications": {"endpoints": [endpoint]}}
        )
        host = services.registry.host
        clock.say(f"registry        {services.registry.url}  (notifies {receiver}/registry)")
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        ui = ["--no-ui"] if not (keep or interactive) else []
        server = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        # The UI asks /ui-settings where the API is: without these it names the default port
        # (4200), and every page of a server on another port says "Can't connect".
        server_env = {
            **base_env,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": api_url,
        }
        services.spawn("prefect-server", [*server, "--port", str(port), *ui], server_env)
        env = {**base_env, "PREFECT_API_URL": api_url}

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        public_pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        gateway_port = free_port()
        customers = f"127.0.0.1:{gateway_port}/customers"
        pipeline_file.write_text(_pipeline_yaml(host, public_pem, customers))
        (state / "virtual.yaml").write_text(_virtual_yaml(host))
        until("the Prefect server", lambda: _get(f"{api_url}/health"), services)
        clock.say(f"prefect server  {api_url.removesuffix('/api')}  (SQLite in {state})")
        receiver_env = {**env, "AIRLOCK_WEBHOOK_TOKEN": token}
        receiver_cmd = ["webhooks", "serve", "--port", str(receiver_port)]
        receiver_cmd += ["--pipeline", str(pipeline_file)]
        receiver_cmd += ["--state", str(state / "webhooks.sqlite")]  # not in the home folder
        services.spawn("webhooks", [*airlock, *receiver_cmd], receiver_env)
        serve_env = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        serve_cmd = ["serve", "--pipeline", str(pipeline_file), "--no-schedules"]
        services.spawn("deployments", [*airlock, *serve_cmd], serve_env)
        gateway_cmd = ["virtual", "serve", "--config", str(state / "virtual.yaml")]
        services.spawn("gateway", [*airlock, *gateway_cmd, "--port", str(gateway_port)], env)
        until("the webhook receiver", lambda: _get(f"{receiver}/healthz"), services)
        clock.say(f"webhooks        {receiver}  (registry → Prefect events)")
        api = Api(api_url)
        until(
            "the served deployments",
            lambda: len(api.post("/deployments/filter", {})) >= 4,
            services,
        )
        clock.say("deployments     promote-on-push, promote, drift-watch, rescan (served)")

        # 2. CI pushes a good image and a bad one; the pushes start the pipeline
        good, pushed = asyncio.run(ci_build(host, "1.0", "scan-clean.trivy.json", key))
        clock.say(f"CI pushed       {host}/dev/app:1.0  {good.digest}")
        bad, _ = asyncio.run(ci_build(host, "1.1", "scan-critical.trivy.json", key))
        clock.say(f"CI pushed       {host}/dev/app:1.1  {bad.digest}  (its scan: CRITICAL)")

        good_ref = f"{host}/dev/app:1.0@{good.digest}"
        bad_ref = f"{host}/dev/app:1.1@{bad.digest}"
        run = until("the pipeline run of app:1.0", lambda: api.pipeline_run(good_ref), services)
        started = until(
            "the pipeline run to start",
            lambda: (_get(f"{api_url}/flow_runs/{run['id']}") or {}).get("start_time"),
            services,
        )
        to_start = dt.datetime.fromisoformat(started).timestamp() - pushed
        clock.say(f"promote-on-push run {run['name']} started {to_start:.1f} s after the push")

        async def staged() -> bool:
            async with RegistryClient(host) as client:
                now = await client.head_manifest("staging/app", "1.0")
            return now is not None and now.digest == good.digest

        until("app:1.0 to reach staging", lambda: asyncio.run(staged()), services)
        to_staging = time.time() - pushed
        clock.say(f"app:1.0 reached staging {to_staging:.1f} s after the push (qa, staging passed)")

        # 3. prod waits for a person
        waiting = until(
            "prod's approval request",
            lambda: api.waiting_approval("app:1.0"),
            services,
            timeout=WAIT if not interactive else 600,
        )
        from flows.approvals import run_pages

        ui_run = asyncio.run(run_pages(api_url.removesuffix("/api")))(waiting["id"])
        if interactive:
            clock.say(f"prod is waiting for an approval: open {ui_run} and press Resume")
            clock.say(f"  (or run: airlock approve {waiting['id']} --by NAME)")
        else:
            approve = [*airlock, "approve", waiting["id"], "--by", APPROVER, "--comment", "demo"]
            given = subprocess.run(approve, env=env, capture_output=True, text=True, timeout=60)
            if given.returncode != 0:
                raise DemoFailed(f"airlock approve failed: {given.stderr.strip()}")
            clock.say(f"approved        by {APPROVER} (airlock approve {waiting['id']}; {ui_run})")
        done = until(
            "the pipeline run of app:1.0 to end",
            lambda: api.final(run["id"]),
            services,
            timeout=WAIT if not interactive else 600,
        )
        clock.say(f"app:1.0 pipeline run: {done['state']['name']}")

        bad_run = until("the pipeline run of app:1.1", lambda: api.pipeline_run(bad_ref), services)
        bad_done = until(
            "the pipeline run of app:1.1 to end", lambda: api.final(bad_run["id"]), services
        )
        clock.say(
            f"app:1.1 pipeline run: {bad_done['state']['name']}: "
            f"{bad_done['state'].get('message') or ''}"
        )

        ok = asyncio.run(_report(host, good, bad))
        until(
            "the customers' gateway",
            lambda: _get(f"http://{customers.split('/')[0]}/healthz"),
            services,
        )
        ok = _customer_pull(customers, good, bad, state) and ok
        clock.say(
            f"done: push → flow start {to_start:.1f} s, push → staging {to_staging:.1f} s,"
            f" whole demo {time.monotonic() - clock.start:.1f} s"
        )
        if keep:
            print(
                f"\nleft running (--keep): UI {api_url.removesuffix('/api')}, registry"
                f" {services.registry.url}; stop with: kill {services.pids()}"
            )
        return 0 if ok and done["state"]["type"] == "COMPLETED" else 3
    finally:
        if not keep:
            services.stop()


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
