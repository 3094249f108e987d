"""Benchmark `airlock copy` against `skopeo copy --all --preserve-digests` on real registries.

Run from the repository root:

    uv run python bench/copy_bench.py            # the full run (`make bench`)
    uv run python bench/copy_bench.py --quick    # smoke run: small images, no 1 GiB image

It starts its own Debian `docker-registry` processes in a temp dir, pushes random (incompressible)
images it generates itself, times both tools as whole processes (median of several runs, a fresh
target repository per run), counts requests and client bytes from the registry's own log, and
prints a markdown table that it also writes to bench/results/ (see bench/README.md).
Nothing is asserted: targets are reported as met or not.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from airlock.localregistry import LocalRegistry, start_registry
from airlock.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MiB = 1024 * 1024
GiB = 1024 * MiB
MB = 1000 * 1000  # the RSS target is in MB (10^6 bytes); MiB is shown alongside
CHUNK = MiB

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# Uncompressed layer type: skopeo then has no reason to (re)compress anything, and random bytes
# are honestly "uncompressed". With --preserve-digests it would refuse to change them anyway.
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
SKOPEO_COPY = [
    "skopeo",
    "copy",
    "--all",
    "--preserve-digests",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
]
TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- random bytes


def random_stream(size: int) -> Iterator[bytes]:
    """`size` incompressible bytes in CHUNK pieces, never all in memory.

    An AES-CTR keystream (via `cryptography`, a dev dependency) runs at several GB/s here, where
    os.urandom manages ~350 MB/s; os.urandom is the fallback.
    """
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        encrypt: Callable[[bytes], bytes] | None = None
    else:
        cipher = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16)))
        encrypt = cipher.encryptor().update
    zeros = bytes(CHUNK)
    left = size
    while left > 0:
        n = min(CHUNK, left)
        yield encrypt(zeros[:n]) if encrypt else os.urandom(n)
        left -= n


# ---------------------------------------------------------------------------- pushing images


@dataclass
class PushedImage:
    host: str
    repo: str
    tag: str
    digest: str
    sizes: dict[str, int]  # blob digest → size (config and layers)

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"


class Pusher:
    """A small independent pusher: plain synchronous httpx, streaming uploads (POST, PATCH, PUT)."""

    def __init__(self, registry: LocalRegistry):
        self.host = registry.host
        self.http = httpx.Client(base_url=registry.url, timeout=600)

    def close(self) -> None:
        self.http.close()

    def _start(self, repo: str) -> httpx.URL:
        r = self.http.post(f"/v2/{repo}/blobs/uploads/")
        if r.status_code != 202:
            raise RuntimeError(f"start upload to {repo}: {r.status_code} {r.text[:200]}")
        return httpx.URL(self.http.base_url).join(r.headers["location"])

    def _finish(self, location: httpx.URL, digest: str, body: bytes = b"") -> None:
        r = self.http.put(
            location.copy_merge_params({"digest": digest}),
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        if r.status_code != 201:
            raise RuntimeError(f"finish upload of {digest}: {r.status_code} {r.text[:200]}")

    def push_random_blob(self, repo: str, size: int) -> str:
        """Stream `size` random bytes in one chunked PATCH, hashing on the way; return digest."""
        location = self._start(repo)
        hasher = hashlib.sha256()

        def body() -> Iterator[bytes]:
            for chunk in random_stream(size):
                hasher.update(chunk)
                yield chunk

        r = self.http.patch(
            location, content=body(), headers={"Content-Type": "application/octet-stream"}
        )
        if r.status_code != 202:
            raise RuntimeError(f"upload to {repo}: {r.status_code} {r.text[:200]}")
        digest = "sha256:" + hasher.hexdigest()
        self._finish(httpx.URL(self.http.base_url).join(r.headers["location"]), digest)
        return digest

    def push_bytes_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._finish(self._start(repo), digest, data)
        return digest

    def push_image(self, repo: str, tag: str, layer_sizes: list[int]) -> PushedImage:
        """A single-platform OCI image of random layers; every call makes never-seen blobs."""
        sizes = {self.push_random_blob(repo, size): size for size in layer_sizes}
        layers = list(sizes)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": {"bench.nonce": os.urandom(8).hex()}},
                "rootfs": {"type": "layers", "diff_ids": layers},  # uncompressed: diff_id = digest
            }
        ).encode()
        config_digest = self.push_bytes_blob(repo, config)
        sizes[config_digest] = len(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": sizes[d]} for d in layers],
            }
        ).encode()
        r = self.http.put(
            f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        if r.status_code != 201:
            raise RuntimeError(f"push manifest {repo}:{tag}: {r.status_code} {r.text[:200]}")
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        return PushedImage(self.host, repo, tag, digest, sizes)

    def digest(self, repo: str, tag: str) -> str | None:
        r = self.http.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
        return "sha256:" + hashlib.sha256(r.content).hexdigest() if r.status_code == 200 else None


# ---------------------------------------------------------------------------- running the tools


@dataclass
class Timed:
    seconds: float  # wall time, spawn to exit
    cpu: float  # user + system CPU seconds of the process (and anything it waited for)
    stdout: str
    max_rss_kb: int | None = None


def run(argv: list[str], *, rss: bool = False) -> Timed:
    """Run a whole process; time it, and take its own rusage from wait4 (exact, per process).

    With rss, peak RSS comes from `/usr/bin/time -v` wrapping the command where that exists
    (its overhead is a fork/exec, ~1 ms), else from the wait4 rusage.
    """
    wrapped = [TIME_BIN, "-v", *argv] if rss and TIME_BIN else argv
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}: {stderr[-2000:]}")
    max_rss: int | None = None
    if rss:
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
        max_rss = int(found.group(1)) if found else usage.ru_maxrss  # KiB on Linux
    return Timed(seconds, usage.ru_utime + usage.ru_stime, stdout, max_rss)


def airlock_bin() -> list[str]:
    script = Path(sys.executable).parent / "airlock"
    return [str(script)] if script.exists() else [sys.executable, "-m", "airlock.cli"]


def airlock_copy(src: str, dst: str, *, rss: bool = False) -> tuple[Timed, dict[str, Any]]:
    timed = run([*airlock_bin(), "copy", src, dst, "--json"], rss=rss)
    return timed, json.loads(timed.stdout)


def skopeo_copy(src: str, dst: str, *, rss: bool = False) -> Timed:
    return run([*SKOPEO_COPY, f"docker://{src}", f"docker://{dst}"], rss=rss)


def airlock_in_process(src: str, dst: str) -> tuple[float, Any]:
    """The copy itself, after imports: parse, open a client, copy_image, close (as the CLI)."""
    from registry.client import RegistryClient
    from registry.copy import copy_image
    from registry.http import tune_http
    from registry.reference import parse

    tune_http()  # as the CLI does at start-up
    started = time.perf_counter()
    source, target = parse(src), parse(dst, default_tag=None)

    async def go() -> Any:
        src_client = RegistryClient(source.registry)
        same = target.registry == source.registry
        dst_client = src_client if same else RegistryClient(target.registry)
        try:
            return await copy_image(src_client, source, dst_client, target)
        finally:
            await src_client.aclose()
            if dst_client is not src_client:
                await dst_client.aclose()

    result = asyncio.run(go())
    return time.perf_counter() - started, result


# ---------------------------------------------------------------------------- registry log

# The registry's access log (Apache combined format, one line per HTTP request) is turned on for
# the bench: unlike the JSON "response completed" lines that LocalRegistry.request_log() reads, it
# also has error answers ("response completed with error") and unrouted 404s such as
# GET /v2/<repo>/referrers/<digest> on distribution 2.8.
ACCESS_LOG = {"log": {"level": "info", "formatter": "json", "accesslog": {"disabled": False}}}
ACCESS_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ')


@dataclass(frozen=True)
class Request:
    method: str
    uri: str
    status: int


def served(registry: LocalRegistry) -> list[Request]:
    """Every request the registry answered so far, from its access log."""
    out = []
    for line in registry.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            continue
        found = ACCESS_LINE.search(line)
        if found:
            out.append(Request(found.group(1), found.group(2), int(found.group(3))))
    return out


class LogWindow:
    """The requests a registry served between construction and `requests()`."""

    def __init__(self, registry: LocalRegistry):
        self.registry = registry
        self.start = len(served(registry))
        self.start_json = len(registry.request_log())

    def requests(self) -> list[Request]:
        # The registry logs a request just after answering it: wait until the log stops growing.
        found = served(self.registry)
        for _ in range(40):
            time.sleep(0.025)
            again = served(self.registry)
            if len(again) == len(found):
                break
            found = again
        return found[self.start :]

    def request_log(self) -> list[dict[str, Any]]:
        """What LocalRegistry.request_log() saw in the same window (for comparison)."""
        return self.registry.request_log()[self.start_json :]


@dataclass
class Traffic:
    downloaded: int = 0  # blob bytes served by GET (status 200)
    uploaded: int = 0  # blob bytes committed by an upload PUT ?digest= (status 201)

    @property
    def through_client(self) -> int:
        """Blob bytes that went through the client: every streamed blob is uploaded once."""
        return max(self.downloaded, self.uploaded)


def traffic(requests: list[Request], sizes: dict[str, int]) -> Traffic:
    t = Traffic()
    for r in requests:
        path, _, query = r.uri.partition("?")
        if r.method == "GET" and "/blobs/sha256:" in path and r.status == 200:
            t.downloaded += sizes.get(path.rsplit("/", 1)[1], 0)
        elif r.method == "PUT" and "/blobs/uploads/" in path and r.status == 201:
            t.uploaded += sizes.get(parse_qs(query).get("digest", [""])[0], 0)
    return t


def to_target(requests: list[Request], repo: str) -> list[Request]:
    """Requests to the target: under /v2/<repo>/ plus the /v2/ pings."""
    return [
        r for r in requests if r.uri.startswith(f"/v2/{repo}/") or r.uri.split("?")[0] == "/v2/"
    ]


# ---------------------------------------------------------------------------- reporting


@dataclass
class Row:
    scenario: str
    airlock: str
    skopeo: str
    ratio: str = "—"
    target: str = "—"
    met: str = "—"


@dataclass
class Settings:
    quick: bool
    runs: int
    big_runs: int
    layers: int
    layer_size: int
    many_layers: int
    many_layer_size: int
    big_size: int | None  # None: the 1 GiB scenario is skipped
    output: Path
    keep: bool


@dataclass
class Bench:
    settings: Settings
    tmp: Path
    a: LocalRegistry
    b: LocalRegistry
    push_a: Pusher
    push_b: Pusher
    caller_env: dict[str, str]  # the environment the bench was started in (see bytecode_env)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counter: int = 0
    load_before: str = ""

    def fresh(self, prefix: str) -> str:
        """A repository name never used before in this run."""
        self.counter += 1
        return f"bench/{prefix}-{self.counter}"

    def verify(self, pusher: Pusher, repo: str, tag: str, digest: str) -> None:
        got = pusher.digest(repo, tag)
        if got != digest:
            raise RuntimeError(
                f"{pusher.host}/{repo}:{tag} is {got}, expected {digest}: the copy is wrong"
            )


def median(values: list[float]) -> float:
    return statistics.median(values)


def secs(values: list[float]) -> str:
    return f"{median(values):.3f} s"


def samples(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def human(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    return f"{n} B"


def ratio_row(
    scenario: str,
    a: list[float],
    s: list[float],
    limit: float | None,
    a_label: str = "",
    s_label: str = "",
) -> Row:
    ratio = median(a) / median(s)
    row = Row(scenario, secs(a) + a_label, secs(s) + s_label, f"{ratio:.2f}x")
    if limit is not None:
        row.target = f"≤ {limit:.1f}x"
        row.met = "yes" if ratio <= limit else "**no**"
    return row


def cpu_row(scenario: str, a: list[float], s: list[float]) -> Row:
    """Client CPU (user + system): what the copy costs the machine, apart from waiting."""
    return Row(
        f"{scenario}: client CPU (user+sys)", secs(a), secs(s), f"{median(a) / median(s):.2f}x"
    )


def table(rows: list[Row]) -> str:
    lines = ["| scenario | airlock | skopeo | ratio | target | met? |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r.scenario} | {r.airlock} | {r.skopeo} | {r.ratio} | {r.target} | {r.met} |"
        for r in rows
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- scenarios


def use_cached_bytecode(tmp: Path) -> dict[str, str]:
    """Let child Pythons cache bytecode (in tmp, not in the repo); return the caller's environment.

    Some sandboxes and CI images set PYTHONDONTWRITEBYTECODE=1; a venv made by `uv sync` has no
    .pyc files (unless --compile-bytecode), so every `airlock` process would then compile all of
    httpx and airlock from source (~0.1-0.2 s here). A normal installation has .pyc files after
    the first run, so that is what the copy timings measure; the start-up rows also show the cost
    in the caller's environment when it differs.
    """
    caller = dict(os.environ)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return caller


def warm_up(bench: Bench) -> None:
    """One untimed copy with each tool: writes airlock's .pyc, loads both tools' binaries."""
    log("warm-up copies (untimed)")
    image = bench.push_a.push_image(bench.fresh("warmup-src"), "v1", [4096])
    airlock_copy(image.ref, f"{bench.a.host}/{bench.fresh('warmup-airlock')}:v1")
    skopeo_copy(image.ref, f"{bench.a.host}/{bench.fresh('warmup-skopeo')}:v1")
    airlock_in_process(image.ref, f"{bench.a.host}/{bench.fresh('warmup-inproc')}:v1")


def import_seconds(statement: str, env: dict[str, str] | None = None) -> float:
    """Sum of the `self` column of `python -X importtime` (every module imported, once)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    total = 0
    for line in proc.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+)\s+\|", line)
        if found:
            total += int(found.group(1))
    return total / 1e6


def bench_startup(bench: Bench) -> None:
    """Interpreter start-up and import cost, reported apart from the copy itself."""
    n = max(bench.settings.runs, 5)
    bare = [run([sys.executable, "-c", "pass"]).seconds for _ in range(n)]
    version = [run([*airlock_bin(), "--version"]).seconds for _ in range(n)]
    skopeo_version = [run(["skopeo", "--version"]).seconds for _ in range(n)]
    copy_path = "import asyncio, airlock.cli, registry.copy"
    cli = median([import_seconds("import airlock.cli") for _ in range(n)])
    full = median([import_seconds(copy_path) for _ in range(n)])
    prefect = subprocess.run(
        [sys.executable, "-c", f"{copy_path}; import sys; print('prefect' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    bench.rows.append(
        Row(
            "start-up: `airlock --version` vs `skopeo --version`, wall",
            secs(version),
            secs(skopeo_version),
            f"{median(version) / median(skopeo_version):.2f}x",
            "small",
            "—",
        )
    )
    bench.rows.append(Row("start-up: bare `python -c pass`, wall", secs(bare), "—"))
    bench.rows.append(
        Row("imports: `import airlock.cli` (-X importtime, sum of self)", f"{cli:.3f} s", "—")
    )
    bench.rows.append(
        Row(
            f"imports: copy path (`{copy_path}`)",
            f"{full:.3f} s",
            "—",
            target="no Prefect",
            met="yes" if prefect == "False" else "**no**",
        )
    )
    notes = (
        f"start-up samples (s): python -c pass [{samples(bare)}]; airlock --version"
        f" [{samples(version)}]; skopeo --version [{samples(skopeo_version)}]"
    )
    if bench.caller_env.get("PYTHONDONTWRITEBYTECODE") and not bench.caller_env.get(
        "PYTHONPYCACHEPREFIX"
    ):
        uncached = median([import_seconds(copy_path, bench.caller_env) for _ in range(n)])
        bench.rows.append(
            Row(
                "imports: copy path in the caller's environment"
                " (PYTHONDONTWRITEBYTECODE=1: no .pyc for the venv)",
                f"{uncached:.3f} s",
                "—",
            )
        )
        notes += "; the caller's environment sets PYTHONDONTWRITEBYTECODE=1"
    bench.notes.append(notes)


def bench_same_registry(bench: Bench) -> None:
    """Within one registry: cold skopeo (fresh image per run), then warm skopeo (same images)."""
    s, reg, pusher = bench.settings, bench.a, bench.push_a
    sizes = [s.layer_size] * s.layers
    label = f"{s.layers} x {human(s.layer_size)}"
    images: list[PushedImage] = []
    cold_a: list[float] = []
    cold_s: list[float] = []
    bytes_a: list[int] = []
    bytes_a_json: list[int] = []
    bytes_s: list[int] = []
    cpu_a: list[float] = []
    cpu_s: list[float] = []
    for i in range(s.runs):
        log(f"same registry, cold skopeo: run {i + 1}/{s.runs}")
        image = pusher.push_image(bench.fresh("same-src"), "v1", sizes)
        images.append(image)
        for tool in ("airlock", "skopeo") if i % 2 == 0 else ("skopeo", "airlock"):
            repo = bench.fresh(f"same-cold-{tool}")
            window = LogWindow(reg)
            if tool == "airlock":
                timed, result = airlock_copy(image.ref, f"{reg.host}/{repo}:v1")
                cold_a.append(timed.seconds)
                cpu_a.append(timed.cpu)
                bytes_a_json.append(result["bytes_streamed"])
                bytes_a.append(traffic(window.requests(), image.sizes).through_client)
            else:
                timed = skopeo_copy(image.ref, f"{reg.host}/{repo}:v1")
                cold_s.append(timed.seconds)
                cpu_s.append(timed.cpu)
                bytes_s.append(traffic(window.requests(), image.sizes).through_client)
            bench.verify(pusher, repo, "v1", image.digest)
    bench.rows.append(ratio_row(f"same registry, {label}, skopeo cache cold", cold_a, cold_s, 0.5))
    bench.rows.append(cpu_row(f"same registry, {label}, skopeo cold", cpu_a, cpu_s))
    a_bytes = max(bytes_a)
    bench.rows.append(
        Row(
            f"same registry, {label}: blob bytes through the client (registry log)",
            f"{human(a_bytes)} (--json bytes_streamed {human(max(bytes_a_json))})",
            f"{human(median(bytes_s))} (cold)",
            "—",
            "airlock 0 B",
            "yes" if a_bytes == 0 else "**no**",
        )
    )
    bench.notes.append(
        f"same registry cold (s): airlock [{samples(cold_a)}];"
        f" skopeo [{samples(cold_s)}]; CPU airlock [{samples(cpu_a)}], skopeo"
        f" [{samples(cpu_s)}]"
    )

    warm_s: list[float] = []
    warm_a_proc: list[float] = []
    warm_a_inproc: list[float] = []
    warm_bytes_s: list[int] = []
    warm_cpu_s: list[float] = []
    warm_cpu_inproc: list[float] = []
    warm_cpu_proc: list[float] = []
    for i, image in enumerate(images):
        log(f"same registry, warm skopeo: run {i + 1}/{len(images)}")
        repo = bench.fresh("same-warm-skopeo")
        window = LogWindow(reg)
        timed = skopeo_copy(image.ref, f"{reg.host}/{repo}:v1")
        warm_s.append(timed.seconds)
        warm_cpu_s.append(timed.cpu)
        warm_bytes_s.append(traffic(window.requests(), image.sizes).through_client)
        bench.verify(pusher, repo, "v1", image.digest)

        repo = bench.fresh("same-warm-inproc")
        cpu = time.process_time()
        seconds, result = airlock_in_process(image.ref, f"{reg.host}/{repo}:v1")
        warm_cpu_inproc.append(time.process_time() - cpu)
        warm_a_inproc.append(seconds)
        bench.verify(pusher, repo, "v1", image.digest)

        repo = bench.fresh("same-warm-airlock")
        timed = airlock_copy(image.ref, f"{reg.host}/{repo}:v1")[0]
        warm_a_proc.append(timed.seconds)
        warm_cpu_proc.append(timed.cpu)
        bench.verify(pusher, repo, "v1", image.digest)
    through = f" ({human(median(warm_bytes_s))} through client)"
    bench.rows.append(
        ratio_row(
            f"same registry, {label}, skopeo warm: airlock copy in process",
            warm_a_inproc,
            warm_s,
            1.0,
            s_label=through,
        )
    )
    bench.rows.append(
        ratio_row(
            f"same registry, {label}, skopeo warm: airlock whole process", warm_a_proc, warm_s, None
        )
    )
    bench.notes.append(
        f"same registry warm (s): airlock in process [{samples(warm_a_inproc)}] (after an untimed"
        f" warm-up copy, so lazy imports are not in it); airlock whole process"
        f" [{samples(warm_a_proc)}]; skopeo [{samples(warm_s)}]; CPU airlock in process"
        f" [{samples(warm_cpu_inproc)}], whole process [{samples(warm_cpu_proc)}], skopeo"
        f" [{samples(warm_cpu_s)}]"
    )


def bench_many_layers(bench: Bench) -> None:
    """50 layers within one registry: requests airlock makes to the target repository."""
    s, reg, pusher = bench.settings, bench.a, bench.push_a
    layers = s.many_layers
    limit = layers + 6
    log(f"{layers}-layer image: pushing")
    image = pusher.push_image(bench.fresh("many-src"), "v1", [s.many_layer_size] * layers)
    counts_a: list[int] = []
    counts_s: list[int] = []
    times_a: list[float] = []
    times_s: list[float] = []
    breakdown_a: Counter[str] = Counter()
    breakdown_s: Counter[str] = Counter()
    json_counts: list[int] = []
    for i in range(s.runs):
        log(f"{layers}-layer image: run {i + 1}/{s.runs}")
        repo = bench.fresh("many-airlock")
        window = LogWindow(reg)
        times_a.append(airlock_copy(image.ref, f"{reg.host}/{repo}:v1")[0].seconds)
        mine = to_target(window.requests(), repo)
        counts_a.append(len(mine))
        breakdown_a = Counter(r.method for r in mine)
        json_counts.append(
            sum(
                1
                for e in window.request_log()
                if e["uri"].startswith(f"/v2/{repo}/") or e["uri"] == "/v2/"
            )
        )
        bench.verify(pusher, repo, "v1", image.digest)

        repo = bench.fresh("many-skopeo")
        window = LogWindow(reg)
        times_s.append(skopeo_copy(image.ref, f"{reg.host}/{repo}:v1").seconds)
        theirs = to_target(window.requests(), repo)
        counts_s.append(len(theirs))
        breakdown_s = Counter(r.method for r in theirs)
        bench.verify(pusher, repo, "v1", image.digest)

    def by_method(c: Counter[str]) -> str:
        return ", ".join(f"{m} {n}" for m, n in c.most_common())

    worst = max(counts_a)
    bench.rows.append(
        Row(
            f"same registry, {layers} layers: requests to the target",
            f"{worst} ({by_method(breakdown_a)})",
            f"{int(median(counts_s))} ({by_method(breakdown_s)})",
            "—",
            f"≤ {limit} (layers + 6)",
            "yes" if worst <= limit else "**no**",
        )
    )
    bench.rows.append(
        ratio_row(
            f"same registry, {layers} x {human(s.many_layer_size)}: time", times_a, times_s, None
        )
    )
    bench.notes.append(
        f"{layers} layers: airlock requests per run {counts_a}, skopeo {counts_s} (skopeo's first"
        f" run has a cold cache and streams; later runs mount); times airlock [{samples(times_a)}],"
        f" skopeo [{samples(times_s)}]. Counted from the access log; LocalRegistry.request_log()"
        f" sees only {json_counts} of airlock's (it skips error answers and unrouted 404s)"
    )


def bench_cross_registry(bench: Bench) -> None:
    """Two registries: both tools stream every blob (a fresh image per run: no skopeo mounts)."""
    s = bench.settings
    sizes = [s.layer_size] * s.layers
    label = f"{s.layers} x {human(s.layer_size)}"
    times_a: list[float] = []
    times_s: list[float] = []
    cpu_a: list[float] = []
    cpu_s: list[float] = []
    times_inproc: list[float] = []
    for i in range(s.runs):
        log(f"cross registry: run {i + 1}/{s.runs}")
        image = bench.push_a.push_image(bench.fresh("cross-src"), "v1", sizes)
        # For context: the same copy in process, after imports (not a target).
        repo = bench.fresh("cross-inproc")
        times_inproc.append(airlock_in_process(image.ref, f"{bench.b.host}/{repo}:v1")[0])
        bench.verify(bench.push_b, repo, "v1", image.digest)
        for tool in ("airlock", "skopeo") if i % 2 == 0 else ("skopeo", "airlock"):
            repo = bench.fresh(f"cross-{tool}")
            dst = f"{bench.b.host}/{repo}:v1"
            if tool == "airlock":
                timed = airlock_copy(image.ref, dst)[0]
                times_a.append(timed.seconds)
                cpu_a.append(timed.cpu)
            else:
                timed = skopeo_copy(image.ref, dst)
                times_s.append(timed.seconds)
                cpu_s.append(timed.cpu)
            bench.verify(bench.push_b, repo, "v1", image.digest)
    bench.rows.append(ratio_row(f"cross registry, {label}", times_a, times_s, 0.9))
    bench.rows.append(cpu_row(f"cross registry, {label}", cpu_a, cpu_s))
    bench.rows.append(
        ratio_row(
            f"cross registry, {label}: airlock copy in process (context)",
            times_inproc,
            times_s,
            None,
        )
    )
    bench.notes.append(
        f"cross registry (s): airlock [{samples(times_a)}], in process"
        f" [{samples(times_inproc)}]; skopeo [{samples(times_s)}];"
        f" CPU airlock [{samples(cpu_a)}], skopeo [{samples(cpu_s)}]"
    )


def bench_big(bench: Bench) -> None:
    """One 1 GiB layer across registries: airlock's peak RSS, and both tools' time."""
    s = bench.settings
    assert s.big_size is not None
    times_a: list[float] = []
    times_s: list[float] = []
    rss_a: list[int] = []
    rss_s: list[int] = []
    cpu_a: list[float] = []
    cpu_s: list[float] = []
    for i in range(s.big_runs):
        log(f"{human(s.big_size)} layer: pushing image {i + 1}/{s.big_runs}")
        started = time.perf_counter()
        image = bench.push_a.push_image(bench.fresh("big-src"), "v1", [s.big_size])
        log(f"  pushed in {time.perf_counter() - started:.1f} s; copying")
        for tool in ("airlock", "skopeo") if i % 2 == 0 else ("skopeo", "airlock"):
            repo = bench.fresh(f"big-{tool}")
            dst = f"{bench.b.host}/{repo}:v1"
            if tool == "airlock":
                timed, _ = airlock_copy(image.ref, dst, rss=True)
                times_a.append(timed.seconds)
                cpu_a.append(timed.cpu)
                rss_a.append(timed.max_rss_kb or 0)
            else:
                timed = skopeo_copy(image.ref, dst, rss=True)
                times_s.append(timed.seconds)
                cpu_s.append(timed.cpu)
                rss_s.append(timed.max_rss_kb or 0)
            bench.verify(bench.push_b, repo, "v1", image.digest)

    def mem(kb: float) -> str:
        return f"{kb * 1024 / MB:.1f} MB ({kb / 1024:.1f} MiB)"

    worst = max(rss_a)
    label = human(s.big_size)
    bench.rows.append(
        Row(
            f"cross registry, 1 x {label}: peak RSS",
            mem(worst),
            mem(median(rss_s)),
            "—",
            "airlock ≤ 100 MB",
            "yes" if worst * 1024 <= 100 * MB else "**no**",
        )
    )
    bench.rows.append(ratio_row(f"cross registry, 1 x {label}: time", times_a, times_s, None))
    bench.rows.append(cpu_row(f"cross registry, 1 x {label}", cpu_a, cpu_s))
    bench.notes.append(
        f"1 x {label}: airlock RSS KiB {rss_a}, skopeo {rss_s}; time airlock [{samples(times_a)}],"
        f" skopeo [{samples(times_s)}]; CPU airlock [{samples(cpu_a)}], skopeo [{samples(cpu_s)}]"
        f" (RSS via {'/usr/bin/time -v' if TIME_BIN else 'wait4'})"
    )


# ---------------------------------------------------------------------------- main


def settings_from(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 5 x 2 MiB layers, 50 small layers, 3 runs, no 1 GiB image",
    )
    p.add_argument("--no-big", action="store_true", help="skip the 1 GiB single-layer scenario")
    p.add_argument("--runs", type=int, help="runs per measurement (median; default 5, quick 3)")
    p.add_argument("--big-runs", type=int, default=3, help="runs of the 1 GiB scenario (default 3)")
    p.add_argument(
        "--output",
        type=Path,
        help="markdown results file (default bench/results/latest.md;"
        " bench/results/quick.md with --quick)",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the temp dir (registries' storage and logs)"
    )
    args = p.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    if runs < 3:
        p.error("--runs must be at least 3 (medians of fewer are noise)")
    return Settings(
        quick=args.quick,
        runs=runs,
        big_runs=max(args.big_runs, 1),
        layers=5,
        layer_size=2 * MiB if args.quick else 20 * MiB,
        many_layers=50,
        many_layer_size=16 * 1024 if args.quick else 1 * MiB,
        big_size=None if args.quick or args.no_big else 1 * GiB,
        output=args.output or RESULTS / ("quick.md" if args.quick else "latest.md"),
        keep=args.keep,
    )


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor() or "?",
    )
    mem = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "0",
    )

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    return (
        f"nproc {os.cpu_count()}, {cpu}, {int(mem) / 1024 / 1024:.1f} GiB RAM,"
        f" {platform.system()} {platform.release()}; Python {platform.python_version()};"
        f" {version(['skopeo', '--version'])}; docker-registry"
        f" {version(['docker-registry', '--version']).split()[-1]};"
        f" {version([*airlock_bin(), '--version'])}"
    )


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    prefix = "uv run python" if os.environ.get("UV") else "python"
    return f"{prefix} bench/copy_bench.py {shlex.join(args)}".strip()


def report(bench: Bench, argv: list[str] | None, started: float) -> str:
    s = bench.settings
    skipped = "" if s.big_size else " The 1 GiB scenario was skipped (--quick or --no-big)."
    return "\n".join(
        [
            "# airlock copy vs skopeo copy",
            "",
            f"- command: `{command_line(argv)}`",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} (took"
            f" {time.perf_counter() - started:.0f} s)",
            f"- machine: {machine()}",
            f"- medians of {s.runs} runs ({s.big_runs} for the big image); skopeo runs as"
            " `" + shlex.join([*SKOPEO_COPY, "docker://SRC", "docker://DST"]) + "`;"
            " airlock as `airlock copy SRC DST --json`. Times are whole processes unless the row"
            f' says "in process".{skipped}',
            "- Python children (airlock) cache bytecode in the temp dir (PYTHONPYCACHEPREFIX), as"
            " an installed tool would after its first run; PYTHONDONTWRITEBYTECODE in the caller's"
            f" environment: {bench.caller_env.get('PYTHONDONTWRITEBYTECODE', 'unset')}.",
            f"- load average (1, 5, 15 min) before: {bench.load_before}; after: {load_average()}"
            " — other work on the machine shows up as noise in the times.",
            "",
            table(bench.rows),
            "",
            "## Raw samples",
            "",
            *[f"- {note}" for note in bench.notes],
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    settings = settings_from(argv)
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            print(
                f"bench: {tool} is not installed (Debian package {tool}); `make test` installs it",
                file=sys.stderr,
            )
            return 2
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
    caller_env = use_cached_bytecode(tmp)
    with Supervisor() as sup:  # on the way out, newest first: pushers, registries, then tmp
        if settings.keep:
            sup.on_close(lambda: log(f"kept {tmp}"))
        else:
            sup.on_close(lambda: shutil.rmtree(tmp, ignore_errors=True))
        a = sup.adopt(start_registry(tmp / "a", extra=ACCESS_LOG))
        b = sup.adopt(start_registry(tmp / "b", extra=ACCESS_LOG))
        pushers = [Pusher(a), Pusher(b)]
        for pusher in pushers:
            sup.on_close(pusher.close)
        bench = Bench(
            settings, tmp, a, b, *pushers, caller_env=caller_env, load_before=load_average()
        )
        log(f"registries {a.host} and {b.host} in {tmp}")
        warm_up(bench)
        bench_startup(bench)
        bench_same_registry(bench)
        bench_many_layers(bench)
        bench_cross_registry(bench)
        if settings.big_size:
            bench_big(bench)
        text = report(bench, argv, started)
        print(table(bench.rows))
        settings.output.parent.mkdir(parents=True, exist_ok=True)
        partial = settings.output.with_suffix(".md.tmp")
        partial.write_text(text)
        partial.replace(settings.output)
        log(f"written to {settings.output}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
