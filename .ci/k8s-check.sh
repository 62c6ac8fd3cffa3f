#!/usr/bin/env bash
# `make k8s-check`: render and validate k8s/ and the Dockerfile with no cluster,
# check the alerts with promtool, and check that every metric a dashboard or an
# alert names is really exported (that test starts the dev servers).
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-tools.sh
uv run ruff check tests/k8s
uv run ruff format --check tests/k8s
uv run pytest tests/k8s -q
