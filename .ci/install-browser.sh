#!/bin/sh
# Make sure Debian's Chromium is installed for the Playwright browser tests.
# Idempotent: does nothing when /usr/bin/chromium is already there.
# Playwright drives this system browser through executable_path; no
# `playwright install` (browser download) is needed or used.
set -eu

CHROMIUM="${TB_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: $CHROMIUM is missing and apt-get is not available;" >&2
    echo "install Chromium with your system's package manager." >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-browser: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# fonts-dejavu-core: a font with Latin accents so screenshots render Spanish text.
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version
