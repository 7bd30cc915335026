#!/usr/bin/env bash
# Start a real OpenStack Glance (v2 API) on 127.0.0.1:PORT for the upload
# tests: sqlite database, file store, no auth (`[paste_deploy] flavor =`
# empty, and the old default policies so that an unauthenticated admin
# context may create images). Returns when the API answers.
#   tests/glance/start.sh STATE_DIR PORT
# Writes STATE_DIR/glance.pid and STATE_DIR/glance.log. State (database and
# images) is kept in STATE_DIR, so stopping and starting again keeps it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
state="$(mkdir -p "$1" && cd "$1" && pwd)"
port="$2"
venv="${BUILD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/build-image}/glance-venv"
[ -x "$venv/bin/gunicorn" ] || "$root/tests/glance/venv.sh" >&2
mkdir -p "$state/conf" "$state/images" "$state/staging" "$state/tasks"
cp "$venv/etc/glance/glance-api-paste.ini" "$state/conf/"
cat > "$state/conf/glance-api.conf" <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $port
enabled_backends = fs:file
public_endpoint = http://127.0.0.1:$port
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $state/images
[os_glance_staging_store]
filesystem_store_datadir = $state/staging
[os_glance_tasks_store]
filesystem_store_datadir = $state/tasks
[database]
connection = sqlite:///$state/glance.sqlite
[paste_deploy]
flavor =
config_file = $state/conf/glance-api-paste.ini
[oslo_policy]
# Without auth the request context has no roles; the pre-Wallaby defaults
# (still shipped as deprecated rules) let such a context act.
enforce_new_defaults = false
enforce_scope = false
[oslo_concurrency]
lock_path = $state/locks
CONF
export OS_GLANCE_CONFIG_DIR="$state/conf"
if [ ! -f "$state/glance.sqlite" ]; then
    "$venv/bin/glance-manage" --config-dir "$state/conf" db_sync >"$state/db_sync.log" 2>&1 \
        || { cat "$state/db_sync.log" >&2; exit 1; }
fi
cd "$state"
"$venv/bin/gunicorn" 'glance.wsgi.api:application' -b "127.0.0.1:$port" -w 1 --timeout 600 --no-control-socket \
    --pid "$state/glance.pid" >>"$state/glance.log" 2>&1 &
for _ in $(seq 1 120); do
    if python3 - "$port" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/versions", timeout=2).read()
PY
    then
        exit 0
    fi
    sleep 0.5
done
echo "glance did not answer on 127.0.0.1:$port; its log:" >&2
tail -50 "$state/glance.log" >&2
exit 1
