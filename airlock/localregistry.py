"""Start the real Debian `docker-registry` (CNCF distribution 2.8) on a free loopback port.

Used by `airlock demo`, the tests and the benches. Each registry gets its own storage and log and
is stopped by PID. Readiness is polled (GET /v2/ until it answers), never slept for.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from airlock.supervisor import NotReady, Process, free_port, spawn, stop, wait_until
from registry.errors import AirlockError

REGISTRY_BIN = "docker-registry"


class LocalRegistryError(AirlockError):
    """The local registry could not be started (exit code 3)."""


@dataclass
class LocalRegistry:
    host: str  # 127.0.0.1:PORT, as used in references
    root: Path  # storage root
    log: Path
    proc: subprocess.Popen = field(repr=False)
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    ca_bundle: Path | None = None  # set when serving HTTPS

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_bundle else 'http'}://{self.host}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc, timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port and storage (for fault tests)."""
        self.stop()
        self.proc = _spawn(self.root.parent / "config.json", self.log)
        _wait_ready(self)

    def request_log(self) -> list[dict[str, Any]]:
        """Requests the registry served, from its JSON access log: method and uri of each."""
        out = []
        for line in self.log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            completed = entry.get("msg", "").startswith("response completed")  # "… with error" too
            if completed and "http.request.method" in entry:
                out.append(
                    {
                        "method": entry["http.request.method"],
                        "uri": entry["http.request.uri"],
                        "status": entry.get("http.response.status"),
                    }
                )
        return out


def start_registry(
    base: Path,
    *,
    auth: dict[str, Any] | None = None,
    storage_root: Path | None = None,
    extra: dict[str, Any] | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> LocalRegistry:
    """Start a registry under `base`. `tls` is (certificate, key, CA bundle) to serve HTTPS."""
    base.mkdir(parents=True, exist_ok=True)
    root = storage_root or base / "storage"
    root.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(5):  # a free port can be taken between probing and binding: try another
        port = free_port()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(root)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": f"127.0.0.1:{port}", "secret": "test-secret"},
        }
        if auth:
            config["auth"] = auth
        if tls:
            config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if extra:
            config.update(extra)
        config_path = base / "config.json"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        log = base / "registry.log"
        proc = _spawn(config_path, log)
        registry = LocalRegistry(
            f"127.0.0.1:{port}", root, log, proc, config, ca_bundle=tls[2] if tls else None
        )
        try:
            _wait_ready(registry)
            return registry
        except LocalRegistryError as e:
            registry.stop()
            last_error = str(e)
            if "address already in use" not in last_error:
                raise
    raise LocalRegistryError(f"docker-registry did not start: {last_error}")


def _spawn(config_path: Path, log: Path) -> subprocess.Popen:
    if shutil.which(REGISTRY_BIN) is None:
        raise LocalRegistryError(
            "docker-registry is not installed: `make demo` or `make test` installs"
            " it (Debian package docker-registry)"
        )
    return spawn([REGISTRY_BIN, "serve", str(config_path)], log=log, append=True)


def _wait_ready(registry: LocalRegistry, timeout: float = 15.0) -> None:
    """Until the registry answers GET /v2/ at all (any status: it listens)."""
    verify = ssl.create_default_context(cafile=registry.ca_bundle) if registry.ca_bundle else True

    def answers() -> bool:
        try:
            httpx.get(f"{registry.url}/v2/", timeout=1.0, verify=verify)
        except httpx.TransportError:
            return False
        return True

    process = Process("docker-registry", registry.proc, registry.log)
    try:
        wait_until(
            "docker-registry answered", answers, watch=[process], timeout=timeout, interval=0.02
        )
    except NotReady as e:
        raise LocalRegistryError(str(e)) from None
