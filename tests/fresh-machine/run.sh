#!/usr/bin/env bash
# Reproduce a fresh machine of the project's kind, then run the README's two
# commands in a fresh clone, as issue 17 asks. DESTRUCTIVE: it removes
# packages and replaces apt's lists. Run it as root on a throwaway Debian 12
# machine only (never in CI).
#
#   tests/fresh-machine/run.sh BASELINE OLD_LISTS QEMU_UTILS_DEB
#
# BASELINE        a file listing, one per line, the packages a new machine
#                 has (`dpkg-query -W -f='${Package}\n' | sort` on a new one).
#                 Every package installed since is purged.
# OLD_LISTS       a folder holding a copy of /var/lib/apt/lists from a new
#                 machine (older than the archive: `apt-get download` of a
#                 pinned version then fails until `apt-get update`).
# QEMU_UTILS_DEB  a qemu-utils .deb newer than bookworm's (the backport that
#                 new machines come with; `dpkg-repack qemu-utils` on a new
#                 machine makes it). Installing Debian's qemu-system-x86
#                 removes it, and qemu-img with it, unless `deps` pins both.
#
# Then: `git clone` of this repository into a temp folder, `./build.sh`,
# `./build.sh test`, each timed, with the out/ cache of the clone empty.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
baseline=$1 lists=$2 qemu_deb=$3
repo="$(cd "$(dirname "$0")/../.." && pwd)"

extra=$(comm -23 <(dpkg-query -W -f='${Package}\n' | sort) <(sort "$baseline"))
if [ -n "$extra" ]; then
    echo "purging $(echo "$extra" | wc -w) packages installed since the baseline" >&2
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $extra >/dev/null
fi
dpkg -i "$qemu_deb" >/dev/null
rm -rf /var/lib/apt/lists && cp -a "$lists" /var/lib/apt/lists
echo "state: $(qemu-img --version | head -1); apt lists from $(stat -c %y /var/lib/apt/lists/*_InRelease | sort | tail -1)" >&2

work=$(mktemp -d /tmp/fresh-machine.XXXXXX)
git clone -q "$repo" "$work/clone"
cd "$work/clone"
echo "== ./build.sh" >&2
/usr/bin/time -f "./build.sh: %e s" ./build.sh
echo "== ./build.sh test" >&2
/usr/bin/time -f "./build.sh test: %e s" ./build.sh test
