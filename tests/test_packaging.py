"""The wheel is enough: built with `uv build`, installed into a fresh virtual environment, and run
from a directory with no checkout and no prefect.yaml, `airlock serve` finds its deployments in
the prefect.yaml the wheel carries (flows/prefect.yaml; pyproject.toml force-includes it), and a
./prefect.yaml, where there is one, wins.

Dependencies are installed at the versions uv.lock pins (from uv's cache, else the index); the
whole test takes ~15 s on these machines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["promote-on-push", "promote", "drift-watch", "rescan"]
PIPELINE = (
    "registries: {r: {url: 'reg.example'}}\n"
    "stages:\n"
    "  - {name: build, registry: r, repository: 'ci/{name}/out'}\n"
    "  - {name: live, registry: r, repository: 'live/{name}'}\n"
)
# What `airlock serve` would serve, without serving: the deployments it builds, named, and the
# file it read them from (flows/deployments.py).
LIST = """
import asyncio, json, sys
from flows import deployments
made = asyncio.run(deployments.runner_deployments(sys.argv[1], schedules=False))
print(json.dumps({
    "spec": str(deployments.prefect_yaml()),
    "names": [d.name for d in made],
    "match": [t.match.model_dump() for d in made for t in d.triggers or []],
}))
"""


def _uv() -> str:
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if uv is None:
        pytest.skip("uv is not installed (`make test` installs it)")
    return uv


def _run(args: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment holding the wheel built from this checkout, and the
    environment to run it in (nothing of this checkout's)."""
    uv, tmp = _uv(), tmp_path_factory.mktemp("packaging")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "AIRLOCK_PIPELINE", "UV_PROJECT_ENVIRONMENT")
        and not k.startswith("PREFECT_")
    }
    env.update(UV_PYTHON_DOWNLOADS="never", PREFECT_HOME=str(tmp / "prefect"), DO_NOT_TRACK="1")
    _run([uv, "build", "--wheel", "--out-dir", tmp / "dist", ROOT], ROOT, env)
    [wheel] = (tmp / "dist").glob("airlock-*.whl")
    requirements = tmp / "requirements.txt"
    export = [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"]
    _run([*export, "--output-file", requirements], ROOT, env)
    venv = tmp / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, venv], tmp, env)
    python = venv / "bin" / "python"
    _run([uv, "pip", "install", "--quiet", "--python", python, "-r", requirements, wheel], tmp, env)
    return venv, env


def test_the_wheel_carries_prefect_yaml_and_the_demo_data(
    installed: tuple[Path, dict[str, str]],
) -> None:
    venv, env = installed
    site = _run([venv / "bin" / "python", "-c", "import flows; print(flows.__file__)"], venv, env)
    flows = Path(site.strip()).parent
    assert flows.is_relative_to(venv), flows  # the installed copy, not this checkout
    assert (flows / "prefect.yaml").read_bytes() == (ROOT / "prefect.yaml").read_bytes()
    assert sorted(p.name for p in (flows.parent / "airlock" / "demo_data").iterdir()) == sorted(
        p.name for p in (ROOT / "airlock" / "demo_data").iterdir()
    )


def test_serve_reads_the_packaged_prefect_yaml_outside_a_checkout(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    assert not (tmp_path / "prefect.yaml").exists()
    out = _run([venv / "bin" / "airlock", "serve", "--help"], tmp_path, env)
    assert "--pipeline FILE" in out
    (tmp_path / "p.yaml").write_text(PIPELINE)

    served = json.loads(_run([venv / "bin" / "python", "-c", LIST, "p.yaml"], tmp_path, env))

    spec = Path(served["spec"])
    assert spec.is_relative_to(venv.resolve()) and spec.parent.name == "flows", spec
    assert spec.read_bytes() == (ROOT / "prefect.yaml").read_bytes()
    assert served["names"] == NAMES
    [match] = served["match"]
    assert match["airlock.repository"] == "ci/*/out"  # promote-on-push, bound to this pipeline


def test_a_prefect_yaml_in_the_current_directory_wins(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    (tmp_path / "p.yaml").write_text(PIPELINE)
    (tmp_path / "prefect.yaml").write_text(
        "deployments:\n  - {name: only-here, entrypoint: 'flows/promote.py:promote'}\n"
    )

    served = json.loads(_run([venv / "bin" / "python", "-c", LIST, "p.yaml"], tmp_path, env))

    assert served["spec"] == str((tmp_path / "prefect.yaml").resolve())
    assert served["names"] == ["only-here"]
