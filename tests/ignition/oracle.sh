#!/bin/bash
# oracle.sh CONFIG.ign ROOT
#
# Runs Debian's real Ignition (2.14) `fetch` and `files` stages on the
# directory ROOT, as tests/tests/ignition_conformance.rs uses it: the
# agent's Ignition applier must leave the same tree. Adapted from
# research/oracle/ign-oracle.sh; unlike it, ROOT is prepared by the caller
# (a copy of the image's /etc and friends) and is not replaced.
#
# * platform `file`: the config comes from $IGNITION_CONFIG_FILE; `files`
#   reads only the config cache that `fetch` wrote.
# * Debian's build relabels for SELinux at the end of `files`: a config
#   saying SELINUXTYPE=none plus a no-op `setfiles` on PATH let it finish;
#   both are removed afterwards.
# * IGNITION_WRITE_AUTHORIZED_KEYS_FRAGMENT=false: keys go to
#   ~/.ssh/authorized_keys (Debian's sshd reads only that), as ours do.
# * SOURCE_DATE_EPOCH (from the caller) is passed on to useradd/usermod,
#   which write it as the shadow `lastchg` day.
# * Ignition's own traces are removed: /etc/.ignition-result.json.
# Exit status: 0 when Ignition succeeded; 1 with its CRITICAL lines otherwise.
set -eu
IGN=${IGNITION_BIN:-/usr/lib/dracut/modules.d/30ignition/ignition}
cfg=$(realpath "$1"); root=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$root/etc/selinux"
had_selinux_config=no; [ -e "$root/etc/selinux/config" ] && had_selinux_config=yes
[ $had_selinux_config = yes ] || echo SELINUXTYPE=none > "$root/etc/selinux/config"
mkdir -p "$work/shim"; printf '#!/bin/sh\ncat >/dev/null\n' > "$work/shim/setfiles"; chmod 755 "$work/shim/setfiles"
export PATH="$work/shim:$PATH" IGNITION_WRITE_AUTHORIZED_KEYS_FRAGMENT=false
rc=0
if ! IGNITION_CONFIG_FILE="$cfg" "$IGN" -platform file -stage fetch \
     -config-cache "$work/ignition.json" -state-file "$work/state" -log-to-stdout > "$work/fetch.log" 2>&1; then
  grep -E 'CRITICAL|error' "$work/fetch.log" | head -5; rc=1
elif ! "$IGN" -platform file -stage files -root "$root" \
     -config-cache "$work/ignition.json" -state-file "$work/state" -log-to-stdout > "$work/files.log" 2>&1; then
  grep -E '^CRITICAL' "$work/files.log" | head -5; rc=1
fi
[ $had_selinux_config = yes ] || rm -f "$root/etc/selinux/config"
rm -f "$root/etc/.ignition-result.json"
exit $rc
