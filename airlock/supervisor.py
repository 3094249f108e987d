"""Local processes for the demo, the tests and the benches: start one (argv, environment, log
file), wait until it is ready (an HTTP URL answering, or any check), stop it by PID (terminate,
wait, kill). A `Supervisor` stops everything it started, newest first.

    with Supervisor() as sup:
        web = sup.start("web", [...], env=env, log=logs / "web.log", ready="http://…/healthz")
        sup.wait("the deployments", lambda: ...)  # every process is checked to be alive
    # stopped here, newest first

`PrefectServer` is `prefect server start` on loopback, written once on top of it.
Readiness is polled (the process's own answer), never slept for.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from registry.errors import AirlockError

T = TypeVar("T")
READY = 60.0  # seconds a server may take to come up, unless the caller says otherwise
STOP = 20.0  # seconds a stopped process may take to exit before it is killed
TAIL = 3000  # characters of a log quoted in an error


class NotReady(AirlockError):
    """A process exited or did not become ready in time (exit code 3)."""

    exit_code = 3


def free_port() -> int:
    """A TCP port free on loopback now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(log: Path | None, chars: int = TAIL) -> str:
    """The end of a log file ('' if there is none)."""
    if log is None:
        return ""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# ---------------------------------------------------------------------------- one process


def spawn(
    argv: list[Any],
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    *,
    append: bool = False,
    cwd: Path | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """Start `argv` with stdout and stderr to `log` (truncated, or appended to), or to
    /dev/null without one; `popen` goes to subprocess.Popen as is (stdout=PIPE, text=True…)."""
    if log is None:
        popen.setdefault("stdout", subprocess.DEVNULL)
        popen.setdefault("stderr", subprocess.DEVNULL)
        return subprocess.Popen(argv, env=env, cwd=cwd, **popen)
    with log.open("ab" if append else "wb") as out:  # the child keeps its own descriptor
        popen.setdefault("stdout", out)
        popen.setdefault("stderr", subprocess.STDOUT)
        return subprocess.Popen(argv, env=env, cwd=cwd, **popen)


def stop(proc: subprocess.Popen, timeout: float = STOP) -> None:
    """Terminate by PID, wait up to `timeout`, then kill (and reap)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http_ok(url: str, status: int = 200, *, timeout: float = 2.0, verify: Any = True) -> bool:
    """Whether `url` answers `status` now (False while nothing listens)."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout, verify=verify).status_code == status
    except httpx.TransportError:
        return False


def http_json(url: str, timeout: float = 5.0) -> Any:
    """The JSON `url` answers with 200, or None (nothing listening, or another status)."""
    import httpx

    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


class _Watched(Protocol):
    name: str
    proc: subprocess.Popen
    log: Path | None


def wait_until(
    what: str,
    check: Callable[[], T | None] | str,
    *,
    watch: Iterable[_Watched] = (),
    timeout: float = READY,
    interval: float = 0.1,
    status: int = 200,
) -> T:
    """Poll `check` (a callable, or a URL that must answer `status`) until it gives something
    truthy, and return that. Each watched process must stay alive meanwhile: one that exits
    ends the wait with NotReady quoting its log's tail, as does the deadline."""
    if isinstance(check, str):
        url = check

        def check() -> Any:
            return http_ok(url, status)

    watched = list(watch)
    deadline = time.monotonic() + timeout
    while True:
        for w in watched:
            if w.proc.poll() is not None:
                where = f"; {w.log}:\n{tail(w.log)}" if w.log else ""
                raise NotReady(f"{w.name} exited ({w.proc.returncode}) before {what}{where}")
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            logs = "".join(f"\n{w.log}:\n{tail(w.log)}" for w in watched if w.log)
            raise NotReady(f"{what}: not ready in {timeout:.0f} s{logs}")
        time.sleep(interval)  # polling for the process's own answer, not hiding a race


def wait_http(
    url: str, proc: subprocess.Popen, log: Path | None, timeout: float = READY, status: int = 200
) -> None:
    """Until `url` answers `status`, while `proc` (its log in `log`) stays alive."""
    wait_until(url, url, watch=[Process(url, proc, log)], timeout=timeout, status=status)


@dataclass
class Process:
    """A started process: what it is called, its Popen, its log."""

    name: str
    proc: subprocess.Popen
    log: Path | None = None
    stop_timeout: float = STOP

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(
        self, check: Callable[[], T | None] | str, timeout: float = READY, status: int = 200
    ) -> T:
        return wait_until(f"{self.name} ready", check, watch=[self], timeout=timeout, status=status)

    def stop(self) -> None:
        stop(self.proc, self.stop_timeout)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class _Callback:
    stop: Callable[[], Any]


# ---------------------------------------------------------------------------- many


@dataclass
class Supervisor:
    """Processes started together, stopped together (newest first, each waited for)."""

    started: list[Process | _Stoppable] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[Any],
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        append: bool = False,
        ready: Callable[[], Any] | str | None = None,
        timeout: float = READY,
        status: int = 200,
        stop_timeout: float = STOP,
        **popen: Any,
    ) -> Process:
        """Spawn `argv` (see `spawn`); with `ready`, wait for it (a URL answering `status`, or a
        check) up to `timeout`. Kept either way: `close()` stops it even if it never got ready."""
        process = Process(
            name, spawn(argv, env, log, append=append, **popen), log, stop_timeout=stop_timeout
        )
        self.started.append(process)
        if ready is not None:
            process.wait_ready(ready, timeout, status)
        return process

    def adopt(self, thing: T) -> T:
        """Something with its own `stop()` (a registry, a server, a `Process`), stopped in turn."""
        self.started.append(thing)  # type: ignore[arg-type]
        return thing

    def on_close(self, callback: Callable[[], Any]) -> None:
        """Call `callback` in turn when closing (to close a client, remove a directory)."""
        self.started.append(_Callback(callback))

    @property
    def processes(self) -> list[Process]:
        return [p for p in self.started if isinstance(p, Process)]

    def wait(
        self,
        what: str,
        check: Callable[[], T | None] | str,
        timeout: float = READY,
        interval: float = 0.2,
    ) -> T:
        """Poll `check` until it gives something, every process started here kept alive."""
        return wait_until(what, check, watch=self.processes, timeout=timeout, interval=interval)

    def close(self) -> None:
        """Stop everything, newest first; each is stopped even if an earlier one failed."""
        errors: list[BaseException] = []
        while self.started:
            try:
                self.started.pop().stop()
            except Exception as e:  # the rest must still be stopped
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- Prefect


def quiet_env(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for Prefect processes with their home in `home`, no telemetry."""
    return {
        **(os.environ if base is None else base),
        "PREFECT_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


@dataclass
class PrefectServer:
    """`prefect server start` on loopback, its home (and SQLite database, unless `db_url` names
    another) in `home`. `start`, `stop` and `restart` keep the port and the data. The UI, when
    on, is told where the API is (without that it names the default port, and every page of a
    server on another port says "Can't connect")."""

    home: Path
    port: int = field(default_factory=free_port)
    db_url: str | None = None
    ui: bool = False
    base_env: Mapping[str, str] | None = None  # default: this process's environment
    extra_env: dict[str, str] = field(default_factory=dict)  # the server's, on top
    log: Path | None = None  # default: home/server.log, appended to
    append: bool = True
    timeout: float = READY
    process: Process | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.process.proc if self.process else None

    @property
    def log_path(self) -> Path:
        return self.log or self.home / "server.log"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        return [*command, "--port", str(self.port), *([] if self.ui else ["--no-ui"])]

    def server_env(self) -> dict[str, str]:
        env = quiet_env(self.home, self.base_env)
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_SERVER_API_PORT"] = str(self.port)
        env["PREFECT_UI_API_URL"] = self.api
        if self.db_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.db_url
        return {**env, **self.extra_env}

    def client_env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server (and nothing else)."""
        return {**quiet_env(self.home, self.base_env), "PREFECT_API_URL": self.api, **extra}

    def start(self, *, wait: bool = True) -> Process:
        self.process = Process(
            "prefect server",
            spawn(self.command(), self.server_env(), self.log_path, append=self.append),
            self.log_path,
        )
        if wait:
            self.wait_ready()
        return self.process

    def ready(self) -> Any:
        return http_json(f"{self.api}/health")

    def wait_ready(self, timeout: float | None = None) -> None:
        assert self.process is not None, "start() first"
        self.process.wait_ready(self.ready, self.timeout if timeout is None else timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()
