#!/usr/bin/env bash
# Installs the non-Python tools the tests drive (root only, idempotent): each area's
# installer (.ci/install-*.sh) lives beside this file and is called from here.
set -euo pipefail
cd "$(dirname "$0")"
for installer in install-*.sh; do
  [ -x "$installer" ] && "./$installer"
done
exit 0
