#!/usr/bin/env bash
# Start a real OpenStack Keystone (identity v3) on 127.0.0.1:PORT for the
# upload tests: sqlite, fernet tokens, bootstrapped with user `admin`
# (password given), project `admin`, domain `Default`, region RegionOne.
# With GLANCE_URL, the catalog gets an `image` service with that public
# endpoint. Returns when the API answers.
#   tests/glance/keystone.sh STATE_DIR PORT ADMIN_PASSWORD [GLANCE_URL]
# Writes STATE_DIR/keystone.pid and STATE_DIR/keystone.log.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
state="$(mkdir -p "$1" && cd "$1" && pwd)"
port="$2"
password="$3"
glance_url="${4:-}"
venv="${BUILD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/build-image}/keystone-venv"
[ -x "$venv/bin/gunicorn" ] || "$root/tests/glance/venv.sh" >&2
mkdir -p "$state/conf"
cat > "$state/conf/keystone.conf" <<CONF
[database]
connection = sqlite:///$state/keystone.sqlite
[token]
provider = fernet
[fernet_tokens]
key_repository = $state/fernet-keys
[fernet_receipts]
key_repository = $state/fernet-keys
[credential]
key_repository = $state/credential-keys
CONF
ks() { "$venv/bin/keystone-manage" --config-file "$state/conf/keystone.conf" "$@" >>"$state/manage.log" 2>&1 || { tail -30 "$state/manage.log" >&2; exit 1; }; }
url="http://127.0.0.1:$port/v3"
if [ ! -f "$state/keystone.sqlite" ]; then
    ks db_sync
    ks fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    ks credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    ks bootstrap --bootstrap-password "$password" --bootstrap-username admin \
        --bootstrap-project-name admin --bootstrap-role-name admin \
        --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
        --bootstrap-admin-url "$url" --bootstrap-public-url "$url" --bootstrap-internal-url "$url"
fi
export OS_KEYSTONE_CONFIG_DIR="$state/conf" OS_KEYSTONE_CONFIG_FILES=keystone.conf
cd "$state"
# Keystone parses sys.argv with oslo.config: hide gunicorn's arguments.
printf 'import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa\n' > "$state/ks_wsgi.py"
"$venv/bin/gunicorn" 'ks_wsgi:application' --chdir "$state" -b "127.0.0.1:$port" -w 1 --no-control-socket \
    --pid "$state/keystone.pid" >>"$state/keystone.log" 2>&1 &
python3 - "$url" "$password" "$glance_url" <<'PY' || { tail -40 "$state/keystone.log" >&2; exit 1; }
import json, sys, time, urllib.request
url, password, glance = sys.argv[1:4]
def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json", **({"X-Auth-Token": token} if token else {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers, json.loads(r.read() or b"null")
for _ in range(120):
    try:
        call("GET", "/")
        break
    except Exception:
        time.sleep(0.5)
else:
    sys.exit("keystone did not answer")
if glance:
    auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": password}}},
                     "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    h, _ = call("POST", "/auth/tokens", auth)
    tok = h["X-Subject-Token"]
    _, svcs = call("GET", "/services?type=image", token=tok)
    for s in svcs["services"]:
        call("DELETE", f"/services/{s['id']}", token=tok)
    _, svc = call("POST", "/services", {"service": {"type": "image", "name": "glance"}}, token=tok)
    call("POST", "/endpoints", {"endpoint": {"service_id": svc["service"]["id"], "interface": "public",
                                             "region_id": "RegionOne", "url": glance}}, token=tok)
PY
