#!/bin/sh
# Create (once) a Debian bookworm minbase tree for tests and benchmarks.
#
#   bench/minbase.sh DIR     e.g. bench/minbase.sh /work/cache/minbase
#
# Idempotent: if DIR/etc/debian_version exists, nothing is done. The tree is
# built in DIR.tmp and renamed into place only when debootstrap succeeded, so
# an interrupted run never leaves a half tree at DIR. Concurrent callers are
# serialised with flock on DIR.lock. Needs root (debootstrap) and network.
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian).
set -eu

dir=${1:?usage: $0 DIR}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}

if [ -e "$dir/etc/debian_version" ]; then
	exit 0
fi

mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
# Another caller may have finished while we waited for the lock.
if [ -e "$dir/etc/debian_version" ]; then
	exit 0
fi

command -v debootstrap >/dev/null 2>&1 || {
	echo "minbase.sh: debootstrap not found; install it (apt-get install -y debootstrap)" >&2
	exit 1
}

rm -rf "$dir.tmp"
debootstrap --variant=minbase "$suite" "$dir.tmp" "$mirror"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "minbase.sh: created $dir ($(cat "$dir/etc/debian_version"))" >&2
