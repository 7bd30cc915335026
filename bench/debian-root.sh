#!/bin/bash
# Benchmark: build recipes/coreos-node.json (a Debian root of 150-odd
# packages: systemd, sshd, etcd, Docker) from cached packages, side by side
# with the pipeline a person would run by hand for the same root:
#
#   peer: apt-ftparchive packages (index of the same cached .debs)
#         + mmdebstrap --variant=essential --include=<the same pinned set>
#           with the merged-/usr hook, into a directory
#         + mkfs.btrfs --rootdir on an image file of the size of our root
#           partition
#         + sha256sum of that image
#   ours: build-image build recipes/coreos-node.json (the same mmdebstrap
#         inside, then normalisation, our Btrfs writer with zstd, the kernel,
#         initramfs and UKI, GPT, the manifest with the image's sha256)
#
# Ours does more (boot files, compression, GPT), the peer writes into a
# directory rather than a tarball (which mkfs.btrfs --rootdir could not read
# anyway). Both run as root (mmdebstrap --mode=root), offline, from the same
# cache; SOURCE_DATE_EPOCH is the recipe's for both.
#
#   RUNS=3 bench/debian-root.sh     (needs root, mmdebstrap, apt-utils, btrfs-progs)
#
# Each round runs the peer and ours back to back; the medians are reported
# with the load average before and after, and the ratio ours / peer. Peak
# RSS comes from /usr/bin/time. Not a test: it prints figures and exits 0.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
runs=${RUNS:-3}
lock=${BUILD_IMAGE_LOCK:-$repo/kernel/packages.lock}
cache=${BUILD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/build-image}
export BUILD_IMAGE_CACHE=$cache
unset BUILD_IMAGE_LOCK # ours reads the project folder's copy of the lock
[ "$(id -u)" -eq 0 ] || { echo "debian-root.sh: run as root (both sides use mmdebstrap --mode=root)" >&2; exit 1; }
for t in mmdebstrap:mmdebstrap apt-ftparchive:apt-utils mkfs.btrfs:btrfs-progs sha256sum:coreutils /usr/bin/time:time python3:python3; do
	command -v "${t%%:*}" >/dev/null || { echo "debian-root.sh: ${t%%:*} is needed (apt-get install ${t##*:})" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/debian-root-bench.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

(cd "$repo" && cargo build --release -q -p build-image)
bi=$repo/target/release/build-image
"$bi" -q fetch --lock "$lock" --cache "$cache" >/dev/null

# The recipe and the lock in a project folder of their own.
proj=$work/project
mkdir -p "$proj"
cp "$repo/recipes/coreos-node.json" "$proj/"
cp "$lock" "$proj/packages.lock"
epoch=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source_date_epoch"])' "$proj/coreos-node.json")

# The pinned set (name=version) and its .debs, from the lock's root set.
python3 - "$proj/coreos-node.json" "$proj/packages.lock" "$cache/debs" "$work/repo" "$work/include" <<'EOF'
import json, os, sys
recipe, lock, debs, repo, include = sys.argv[1:]
r = json.load(open(recipe))
l = json.load(open(lock))
key = ",".join(sorted(r["trees"]["root"][0]["debian"]["packages"]))
names = set(l["roots"][key])
os.makedirs(repo)
inc = []
for p in l["packages"]:
    if p["name"] in names:
        # the cache's file name, as the builder's Locked::file_name makes it
        f = "%s_%s_%s.deb" % (p["name"], p["version"].replace(":", "%3a"), p["architecture"])
        os.link(os.path.join(debs, f), os.path.join(repo, f))
        inc.append("%s=%s" % (p["name"], p["version"]))
open(include, "w").write(",".join(inc))
print("debian-root.sh: %d packages in the set" % len(inc), file=sys.stderr)
EOF

peer() { # $1: round
	local d=$work/peer-$1
	mkdir -p "$d"
	(cd "$work/repo" && apt-ftparchive packages . >Packages 2>/dev/null)
	SOURCE_DATE_EPOCH=$epoch mmdebstrap --quiet --mode=root --variant=essential --include="$(cat "$work/include")" \
		--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --aptopt='Acquire::Languages "none"' \
		--aptopt='APT::Install-Recommends "false"' --dpkgopt=force-unsafe-io \
		'' "$d/root" "deb [trusted=yes] copy://$work/repo ./" 2>"$d/mmdebstrap.log"
	truncate -s "$root_size" "$d/root.img"
	mkfs.btrfs -q --rootdir "$d/root" "$d/root.img" >/dev/null
	sha256sum "$d/root.img" >/dev/null
	rm -rf "$d"
}
ours() { # $1: round
	(cd "$proj" && "$bi" -q build coreos-node.json --out "$work/ours-$1" >/dev/null)
	rm -rf "$work/ours-$1"
}

# The size of our root partition, for the peer's image file.
(cd "$proj" && "$bi" -q build coreos-node.json --out "$work/size" >/dev/null)
root_size=$(sfdisk -J "$work/size/coreos-node.raw" | python3 -c 'import json,sys; p=[p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p.get("name")=="root"][0]; print(p["size"]*512)')
rm -rf "$work/size"
export -f peer ours
export work epoch root_size bi proj

load0=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$work/peer.times"
: >"$work/ours.times"
for i in $(seq "$runs"); do
	/usr/bin/time -f "%e %M" -a -o "$work/peer.times" bash -c "peer $i"
	/usr/bin/time -f "%e %M" -a -o "$work/ours.times" bash -c "ours $i"
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(cut -d' ' -f1 "$work/peer.times" | median)
o=$(cut -d' ' -f1 "$work/ours.times" | median)
orss=$(cut -d' ' -f2 "$work/ours.times" | median)
echo "coreos-node root ($(tr "," "\n" <"$work/include" | grep -c .) packages), $runs rounds, load $load0 -> $load1"
echo "  peer (apt-ftparchive + mmdebstrap + mkfs.btrfs --rootdir $((root_size >> 20)) MiB + sha256sum): median $p s  ($(tr '\n' ' ' <"$work/peer.times" | sed 's/ [0-9]* / /g'))"
echo "  ours (build-image build coreos-node.json):  median $o s, peak RSS $((orss / 1024)) MiB  ($(tr '\n' ' ' <"$work/ours.times" | sed 's/ [0-9]* / /g'))"
python3 -c "print('  ours / peer: %.2f' % ($o / $p))"
