#!/usr/bin/env bash
# Makes sure `python3 -m venv` works: Debian splits venv/ensurepip into python3-venv, which a minimal
# machine lacks. Idempotent and silent when nothing is missing.
set -euo pipefail
python="${1:-python3}"
if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "ensure-python: Hawser needs Python 3.11 or newer as '$python'" >&2
    exit 1
fi
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "ensure-python: installing python3-venv from Debian's packages" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
