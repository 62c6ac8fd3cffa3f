#!/usr/bin/env bash
# Installs what `make dev` and `make test` need on a fresh Debian-like machine that has
# Python 3.11+: uv, the locked Python dependencies, and the servers (redis-server,
# PostgreSQL) when they are missing. As root it uses apt; otherwise it stops and prints
# the one command to run. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-server)
# PostgreSQL: the client always (psql), the server binaries only if none answers at TB_DATABASE_URL
# (devservices then runs a private one with initdb/pg_ctl).
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing ${need_apt[*]} with apt" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts the packaged servers; ours run on their own ports, so stop theirs.
    if [[ " ${need_apt[*]} " == *" redis-server "* ]]; then
      (service redis-server stop || true) >/dev/null 2>&1
    fi
  else
    echo "bootstrap: missing ${need_apt[*]}. Run once: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

export PATH="$HOME/.local/bin:$PATH"
# Trust the system's certificate store (where a site's own CA is installed), not only uv's
# bundled roots: behind a TLS-inspecting proxy the bundled roots fail with UnknownIssuer.
export UV_NATIVE_TLS="${UV_NATIVE_TLS:-1}" UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}"
if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv into a private venv under .tb/" >&2
  python3 -m venv .tb/uv-venv
  .tb/uv-venv/bin/pip install -q uv
  mkdir -p "$HOME/.local/bin"
  ln -sf "$PWD/.tb/uv-venv/bin/uv" "$HOME/.local/bin/uv"
fi

uv sync --frozen --quiet
