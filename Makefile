# Every target installs what it needs first (scripts/bootstrap.sh is idempotent and quick).
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never
# Trust the machine's CA store (where a proxy or a company CA is the norm), not only uv's own.
export UV_SYSTEM_CERTS := true

.PHONY: bootstrap demo test lint bench reliability

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	uv run --frozen airlock demo

test: bootstrap
	uv run --frozen ruff check .
	uv run --frozen python -m pytest -q

# The fault matrix, the bad-input corpus, secrets, least privilege, TLS, the insider attacks
# (all part of `make test`).
reliability: bootstrap
	uv run --frozen python -m pytest -q tests/flows/test_faults.py tests/test_bad_input_corpus.py \
		tests/e2e tests/flows/test_least_privilege.py tests/registry/test_retries.py \
		tests/registry/test_auth.py tests/registry/test_client.py tests/registry/test_secrets.py \
		tests/registry/test_travel.py tests/flows/test_insider.py \
		tests/flows/test_insider_served.py tests/virtual/test_stageview.py

lint: bootstrap
	uv run --frozen ruff check .
	uv run --frozen ruff format --check registry airlock

bench: bootstrap
	uv run --frozen python bench/copy_bench.py
	uv run --frozen python bench/gates_bench.py
	uv run --frozen python bench/scan_bench.py
	uv run --frozen python bench/promote_bench.py
	uv run --frozen python bench/push_bench.py
	uv run --frozen python bench/release_bench.py
	uv run --frozen python bench/virtual_bench.py
	uv run --frozen python bench/verify_bench.py
