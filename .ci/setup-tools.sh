#!/usr/bin/env bash
# Installs the non-Python tools the tests drive (Chromium, promtool/prometheus); idempotent.
# Each area's installer (.ci/install-*.sh) lives beside this file and is called from here.
# Installing needs root (apt); without it, a missing tool stops the run with the command to type.
set -euo pipefail
cd "$(dirname "$0")"
for installer in install-*.sh; do
  if [ -x "$installer" ]; then
    "./$installer"
  fi
done
