"""A virtual registry gateway (`airlock virtual serve`, a process of its own) over real
registries: a local one, and a pull-through cache of an "upstream" (a stand-in for Docker Hub)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from airlock.localregistry import LocalRegistry, start_registry
from airlock.supervisor import Supervisor, free_port
from flows.records import PromotionRecord, write_record
from gates.keys import generate
from registry.client import RegistryClient
from registry.manifest import Descriptor
from tests.support.cli import AIRLOCK
from tests.support.images import Image, Pusher

PASSWORD = "alice-gw-pw"
TOKEN = "ci-gw-token-9b1e"


@dataclass
class Gw:
    url: str  # http://127.0.0.1:PORT
    host: str
    local: LocalRegistry
    pusher: Pusher  # straight to the member registry
    log: Path
    config: Path  # virtual.yaml
    upstream: Pusher  # the registry behind the pull-through cache (a stand-in for Docker Hub)
    keys: Path  # prod.key / prod.pub (the `signed` view trusts prod.pub), other.key

    def promote_by_record(self, repo: str, img: Image, tag: str, stage: str = "prod") -> None:
        """What a promotion leaves in the stage's repository: the image under its tag, and the
        stage's record of it (written by airlock's own writer) — but no VSA."""
        self.pusher.push(repo, img, tag)
        now = dt.datetime.now(dt.UTC)
        record = PromotionRecord(
            stage=stage,
            image=repo.split("/", 1)[1],
            digest=img.digest,
            source=f"{self.local.host}/staging/x@{img.digest}",
            target=f"{self.local.host}/{repo}:{tag}@{img.digest}",
            tags=[tag],
            airlock_version="test",
            started_at=now,
            finished_at=now,
        )

        async def write() -> None:
            async with RegistryClient(self.local.host) as client:
                subject = Descriptor(img.media_type, img.digest, len(img.raw))
                await write_record(client, repo, subject, record)

        asyncio.run(write())

    def get(self, path: str, *, auth: bool = False, **kw: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", auth=("alice", PASSWORD) if auth else None, **kw)


def gateway_config(local: LocalRegistry, cache: LocalRegistry) -> dict[str, object]:
    return {
        "registries": {"local": {"url": local.host}, "hub": {"url": cache.host}},
        "users": {
            "alice": {"password_env": "GW_ALICE_PASSWORD"},
            "ci": {"token_env": "GW_CI_TOKEN"},
        },
        "repositories": {
            "docker": {
                "members": [
                    {"registry": "local", "prefix": "dev"},
                    {"registry": "local", "prefix": "prod"},
                    {"registry": "hub", "prefix": "library"},
                ],
                "deploy": {"registry": "local", "prefix": "dev"},
                "read": ["alice", "ci"],
                "write": ["alice"],
            },
            "customers": {
                "members": [{"registry": "local", "prefix": "prod"}],
                "read": ["anonymous"],
            },
            "shop": {  # the production view: only what airlock promoted into prod
                "members": [{"registry": "local", "prefix": "prod"}],
                "read": ["anonymous"],
                "require_stage": "prod",
            },
            "signed": {  # the same, trusting only prod's signed VSAs
                "members": [{"registry": "local", "prefix": "prod"}],
                "read": ["anonymous"],
                "require_stage": {"stage": "prod", "public_key": "keys/prod.pub"},
            },
            "secret": {  # alice may not see it (only ci may read)
                "members": [{"registry": "local", "prefix": "secret"}],
                "deploy": {"registry": "local", "prefix": "secret"},
                "read": ["ci"],
            },
        },
    }


def start_gateway(base: Path, sup: Supervisor) -> Gw:
    """The registries and the gateway under `base`, each stopped by `sup` when it closes."""
    local = sup.adopt(start_registry(base / "local"))
    # a remote: distribution as a pull-through cache of an upstream registry
    upstream = sup.adopt(start_registry(base / "upstream"))
    cache = sup.adopt(start_registry(base / "cache", extra={"proxy": {"remoteurl": upstream.url}}))
    (base / "keys").mkdir()
    for name in ("prod", "other"):
        private, public = generate()
        (base / "keys" / f"{name}.key").write_bytes(private)
        (base / "keys" / f"{name}.pub").write_bytes(public)
    (base / "virtual.yaml").write_text(yaml.safe_dump(gateway_config(local, cache)))
    port = free_port()
    env = {
        **os.environ,
        "GW_ALICE_PASSWORD": PASSWORD,
        "GW_CI_TOKEN": TOKEN,
        "DOCKER_CONFIG": str(base),
    }
    pusher, upstream_pusher = Pusher(local.url), Pusher(upstream.url)
    sup.on_close(upstream_pusher.close)
    sup.on_close(pusher.close)
    log = base / "gateway.log"
    command = [AIRLOCK, "virtual", "serve", "--config", str(base / "virtual.yaml")]
    url = f"http://127.0.0.1:{port}"
    sup.start("gateway", [*command, "--port", str(port)], env=env, log=log, ready=f"{url}/healthz")
    config = base / "virtual.yaml"
    return Gw(url, f"127.0.0.1:{port}", local, pusher, log, config, upstream_pusher, base / "keys")
