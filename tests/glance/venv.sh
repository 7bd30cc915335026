#!/usr/bin/env bash
# Make (once) the Python venv with OpenStack Glance and Keystone that the
# upload tests run on loopback. Idempotent: a stamp file records what was
# installed; a second run does nothing.
#   tests/glance/venv.sh [CACHE_DIR]     (default: $BUILD_IMAGE_CACHE, else ~/.cache/build-image)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${1:-${BUILD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/build-image}}"
mkdir -p "$cache"
for v in glance keystone; do
    venv="$cache/$v-venv"
    pkgs="$v gunicorn"
    if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$pkgs" ]; then
        continue
    fi
    echo "creating $venv ($pkgs)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q $pkgs >&2
    echo "$pkgs" > "$venv/.installed"
done
