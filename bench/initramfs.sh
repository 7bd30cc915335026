#!/bin/bash
# Benchmark the initramfs writer against the classic pipeline on the same tree,
# in the same run:
#
#   peer gzip: (cd TREE && find . | cpio -o -H newc | gzip -6)
#   peer zstd: (cd TREE && find . | cpio -o -H newc | zstd -3 -T$THREADS)
#   ours:      builder/examples/initramfs_bench (load the tree as a `dir`
#              layer with owners preserved, then write the initramfs)
#
#   bench/initramfs.sh [TREE]     default TREE: /work/cache/minbase (created
#                                 with bench/minbase.sh when missing)
#
# Each command runs RUNS times (default 3), interleaved; the best wall time is
# reported. Ours is checked to decode to a cpio with the same entry count,
# and to be byte-identical when written again with one worker.
# Not a test: it prints figures and ratios (ours / peer) and exits 0.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
tree=${1:-/work/cache/minbase}
runs=${RUNS:-3}
threads=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$here/minbase.sh" "$tree"
for tool in cpio gzip zstd; do
	command -v $tool >/dev/null || { echo "initramfs.sh: $tool is needed" >&2; exit 1; }
done
(cd "$repo" && cargo build --release --example initramfs_bench -q)
bench="$repo/target/release/examples/initramfs_bench"

now() { date +%s.%N; }
best() { # NAME SECONDS: keep the minimum per name
	local n=$1 t=$2 f="$work/best.$1"
	if [ ! -e "$f" ] || awk -v a="$t" -v b="$(cat "$f")" 'BEGIN{exit !(a<b)}'; then echo "$t" >"$f"; fi
}
timed() { # NAME CMD...
	local n=$1; shift
	local s e
	s=$(now); "$@"; e=$(now)
	best "$n" "$(awk -v s="$s" -v e="$e" 'BEGIN{printf "%.3f", e-s}')"
}
peer_gzip() { (cd "$tree" && find . | cpio -o -H newc 2>/dev/null | gzip -6 >"$work/peer.gz"); }
peer_zstd() { (cd "$tree" && find . | cpio -o -H newc 2>/dev/null | zstd -q -3 -T"$threads" >"$work/peer.zst"); }
ours_gzip() { "$bench" "$tree" "$work/ours.gz" gzip >"$work/ours.gz.txt"; }
ours_zstd() { "$bench" "$tree" "$work/ours.zst" zstd >"$work/ours.zst.txt"; }

# Warm the page cache once so that no side pays for the first read.
(cd "$tree" && find . | cpio -o -H newc 2>/dev/null >/dev/null)

for _ in $(seq "$runs"); do
	timed peer_gzip peer_gzip
	timed ours_gzip ours_gzip
	timed peer_zstd peer_zstd
	timed ours_zstd ours_zstd
done

# Sanity: ours decodes and holds as many entries as the tree has.
n_tree=$( (cd "$tree" && find . | wc -l) )
n_gz=$(gzip -dc "$work/ours.gz" | cpio -it 2>/dev/null | wc -l)
n_zst=$(zstd -dc "$work/ours.zst" | cpio -it 2>/dev/null | wc -l)
[ "$n_gz" = "$n_tree" ] && [ "$n_zst" = "$n_tree" ] || {
	echo "initramfs.sh: entry counts differ: tree $n_tree, ours gzip $n_gz, ours zstd $n_zst" >&2
	exit 1
}

# Reproducibility: one worker and a second run give the same bytes.
"$bench" "$tree" "$work/ours1.gz" gzip - 1 >/dev/null
"$bench" "$tree" "$work/ours1.zst" zstd - 1 >/dev/null
cmp -s "$work/ours.gz" "$work/ours1.gz" && cmp -s "$work/ours.zst" "$work/ours1.zst" || {
	echo "initramfs.sh: output differs between $threads workers and 1 worker" >&2
	exit 1
}

size() { stat -c %s "$1"; }
t() { cat "$work/best.$1"; }
echo "tree: $tree ($n_tree entries, cpio $(awk '{for(i=1;i<=NF;i++) if($i ~ /^cpio_bytes=/) {sub("cpio_bytes=","",$i); print $i}}' "$work/ours.gz.txt") bytes), $threads CPUs, best of $runs runs"
printf '%-36s %9s %12s\n' "command" "wall s" "bytes"
printf '%-36s %9s %12s\n' "peer: find|cpio -H newc|gzip -6" "$(t peer_gzip)" "$(size "$work/peer.gz")"
printf '%-36s %9s %12s\n' "ours: gzip (level 6)" "$(t ours_gzip)" "$(size "$work/ours.gz")"
printf '%-36s %9s %12s\n' "peer: find|cpio -H newc|zstd -3 -T$threads" "$(t peer_zstd)" "$(size "$work/peer.zst")"
printf '%-36s %9s %12s\n' "ours: zstd (level 3)" "$(t ours_zstd)" "$(size "$work/ours.zst")"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
echo "gzip: time ours/peer $(ratio "$(t ours_gzip)" "$(t peer_gzip)")  size ours/peer $(ratio "$(size "$work/ours.gz")" "$(size "$work/peer.gz")")  (target: time <= 0.25, size <= 1.05)"
echo "zstd: time ours/peer-zstd $(ratio "$(t ours_zstd)" "$(t peer_zstd)")  size ours/peer-zstd $(ratio "$(size "$work/ours.zst")" "$(size "$work/peer.zst")")"
echo "zstd: time ours/peer-gzip $(ratio "$(t ours_zstd)" "$(t peer_gzip)")  size ours/peer-gzip $(ratio "$(size "$work/ours.zst")" "$(size "$work/peer.gz")")"
echo "ours gzip: $(cat "$work/ours.gz.txt")"
echo "ours zstd: $(cat "$work/ours.zst.txt")"
