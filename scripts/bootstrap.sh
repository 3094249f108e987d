#!/usr/bin/env bash
# Install what airlock needs on a Debian machine, skipping whatever is already there:
# Debian packages (docker-registry, skopeo, apache2-utils for htpasswd, postgresql for the
# scale-out end-to-end test, nginx-light for the virtual gateway's, chromium and chromium-driver
# for the browser test of the Prefect UI), uv, and the project.
# Idempotent; `make demo`, `make test` and .ci/run all start with it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
# the tests start a throw-away cluster of their own; the package's default cluster is not used
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need_apt+=(postgresql)
# the virtual gateway's tests run the nginx config airlock generates (started on loopback)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# the browser test approves a promotion in the Prefect UI: headless Chromium, driven by selenium
# through chromedriver (both at these paths; no browser is downloaded)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: installing Debian packages: ${need_apt[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v uv >/dev/null; then
  export PATH="$HOME/.local/bin:$PATH"
fi
if ! command -v uv >/dev/null; then
  echo "bootstrap: installing uv from PyPI" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  # Debian's python3 is externally managed (PEP 668): install uv for this user only.
  python3 -m pip install --quiet --user uv 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages uv
fi

# uv must not download a Python (no network for it here): use the machine's python3 (>= 3.11).
# Compile bytecode at install time, so no `airlock` run pays for it (PYTHONDONTWRITEBYTECODE).
UV_PYTHON_DOWNLOADS=never UV_SYSTEM_CERTS=true uv sync --frozen --quiet --compile-bytecode
# ... and airlock's own modules, which uv installs editable (not compiled by --compile-bytecode):
# where PYTHONDONTWRITEBYTECODE is set, every `airlock copy` would otherwise compile ~20 of them
# (~30 ms), and every flow run more.
.venv/bin/python -m compileall -q -j 0 airlock registry gates flows webhooks virtual >/dev/null
