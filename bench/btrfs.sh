#!/bin/bash
# Benchmark the Btrfs writer against mkfs.btrfs --rootdir on the same trees,
# in the same run:
#
#   minbase: the Debian minbase tree (bench/minbase.sh)
#   sparse:  minbase plus /sparse.img, a 3 GiB file with 3 MiB of data and
#            the rest holes
#
# 1. write:   peer `mkfs.btrfs -q --rootdir TREE IMG` (+ fdatasync) on a fresh
#             sparse image (1 GiB for minbase, 4 GiB for sparse, as mkfs.btrfs
#             fills holes); ours builder/examples/btrfs_bench on an image of
#             the same size: the tree is loaded as a `dir` layer with owners
#             preserved, and only `fs::btrfs::write` + fsync is timed (the
#             whole process time is shown too).
# 2. end to end: peer mkfs.btrfs --rootdir + sha256sum on an image of the
#             size ours made; ours `build-image build` of a recipe with one
#             btrfs root partition, "size": "auto" (GPT, manifest with the
#             image's and the input's sha256).
# 3. space:   data/metadata/system used bytes (`btrfs filesystem df -b` on a
#             read-only loop mount; needs root) of the 1 GiB images, and the
#             smallest image each can hold the tree in (ours: the writer's
#             min_size; peer: bisected on a loop device, which it cannot
#             enlarge as it does image files, and mkfs.btrfs --shrink).
# 4. holes:   allocated bytes (stat %b) of both sparse-tree images against
#             the tree's allocated bytes (du).
# 5. ours with zstd (mkfs.btrfs 6.2 cannot compress with --rootdir).
# 6. peak RSS of ours (/usr/bin/time -f %M), example and CLI.
#
#   bench/btrfs.sh [TREE]     default TREE: /work/cache/minbase (created
#                             with bench/minbase.sh when missing)
#
# Each timing runs RUNS times (default 5; at most 3 on the sparse tree,
# where the peer writes 3 GiB), peer and ours interleaved; the
# median is reported, with the load average before and after. Ours' images
# pass `btrfs check`, and the sparse file reads back identical through the
# kernel. Not a test: it prints figures and ratios (ours / peer) and exits 0.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
tree=${1:-/work/cache/minbase}
runs=${RUNS:-5}
work=$(mktemp -d /var/tmp/btrfs-bench.XXXXXX)
mnt="$work/mnt"
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
	rm -rf "$work"
}
trap cleanup EXIT

"$here/minbase.sh" "$tree"
for tool in mkfs.btrfs btrfs sha256sum /usr/bin/time; do
	command -v $tool >/dev/null || { echo "btrfs.sh: $tool is needed" >&2; exit 1; }
done
(cd "$repo" && cargo build --release -p build-image --bin build-image --example btrfs_bench -q)
bench="$repo/target/release/examples/btrfs_bench"
cli="$repo/target/release/build-image"
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# The sparse tree: a copy of the tree plus a 3 GiB file with three 1 MiB
# data runs (start, middle, end).
sparse="$work/sparse-tree"
cp -a "$tree" "$sparse"
truncate -s 3G "$sparse/sparse.img"
for off in 0 1536 3071; do
	head -c 1M /dev/urandom | dd of="$sparse/sparse.img" bs=1M seek=$off conv=notrunc status=none
done

# Warm the page cache once so that no side pays for the first read.
for t in "$tree" "$sparse"; do tar -C "$t" -cf - . | cat >/dev/null; done

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN{printf "%.3f", e-s}'; }
add() { echo "$2" >>"$work/v.$1"; } # NAME VALUE: one sample
med() { sort -g "$work/v.$1" | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
field() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p"; } # FILE KEY of a key=value line
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
fresh() { rm -f "$1"; truncate -s "$2" "$1"; } # IMG SIZE: a new sparse image

peer_write() { # NAME TREE SIZE
	local img="$work/peer-$1.img" s
	fresh "$img" "$3"
	s=$(now)
	mkfs.btrfs -q --rootdir "$2" "$img" >/dev/null 2>&1
	sync -d "$img"
	add "peer_write_$1" "$(since "$s")"
}
ours_write() { # NAME TREE SIZE [COMPRESSION]
	local n=$1 img="$work/ours-$1${4:+-$4}.img" s
	fresh "$img" "$3"
	s=$(now)
	/usr/bin/time -o "$work/rss" -f %M "$bench" "$2" "$img" "${4:-none}" >"$work/ours-$1${4:+-$4}.txt"
	n=$n${4:+_$4}
	add "ours_proc_$n" "$(since "$s")"
	add "ours_write_$n" "$(field "$work/ours-$1${4:+-$4}.txt" write_s)"
	add "ours_rss_$n" "$(cat "$work/rss")"
}
recipe() { # NAME TREE
	cat >"$work/$1.json" <<-EOF
	{ "name": "$1", "source_date_epoch": 1700000000,
	  "trees": { "root": [{ "dir": "$2", "owner": "preserve" }] },
	  "disk": { "partitions": [
	    { "label": "root", "type": "root-x86-64", "size": "auto", "filesystem": "btrfs", "tree": "root" } ] },
	  "outputs": ["raw"] }
	EOF
}
ours_e2e() { # NAME TREE
	local out="$work/out-$1" s
	rm -rf "$out"
	s=$(now)
	/usr/bin/time -o "$work/rss" -f %M "$cli" build "$work/$1.json" --out "$out" >/dev/null 2>&1
	add "ours_e2e_$1" "$(since "$s")"
	add "ours_e2e_rss_$1" "$(cat "$work/rss")"
	stat -c %s "$out/$1.raw" >"$work/e2e-size-$1"
}
peer_e2e() { # NAME TREE: on an image of the size ours made
	local img="$work/peer-e2e-$1.img" s
	fresh "$img" "$(cat "$work/e2e-size-$1")"
	s=$(now)
	if mkfs.btrfs -q --rootdir "$2" "$img" >/dev/null 2>&1; then
		sha256sum "$img" >/dev/null
		add "peer_e2e_$1" "$(since "$s")"
	fi
	# mkfs.btrfs 6.2 --rootdir enlarges an image file that is too small.
	stat -c %s "$img" >"$work/peer-e2e-size-$1"
	rm -f "$img"
}

declare -A size=([minbase]=1G [sparse]=4G)
declare -A src=([minbase]="$tree" [sparse]="$sparse")
for n in minbase sparse; do
	recipe "$n" "${src[$n]}"
	ours_e2e "$n" "${src[$n]}" # once more for the image size (and warm-up)
	rm -f "$work/v.ours_e2e_$n" "$work/v.ours_e2e_rss_$n"
done
for i in $(seq "$runs"); do
	for n in minbase sparse; do
		[ "$n" = sparse ] && [ "$i" -gt 3 ] && continue # 3 runs: the peer writes 3 GiB
		peer_write "$n" "${src[$n]}" "${size[$n]}"
		ours_write "$n" "${src[$n]}" "${size[$n]}"
		peer_e2e "$n" "${src[$n]}"
		ours_e2e "$n" "${src[$n]}"
	done
	ours_write minbase "$tree" 1G zstd
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

# Ours passes btrfs check; the sparse file reads back identical.
for img in "$work/ours-minbase.img" "$work/ours-sparse.img" "$work/ours-minbase-zstd.img"; do
	btrfs check --readonly --check-data-csum "$img" >"$work/check.log" 2>&1 || {
		cat "$work/check.log" >&2
		echo "btrfs.sh: btrfs check failed on $img" >&2
		exit 1
	}
done

# Space: used bytes per block-group type, through the kernel.
mkdir -p "$mnt"
df_used() { # IMG KIND -> used bytes ("?" without a loop mount)
	local f="$work/df.$(basename "$1").txt"
	if [ ! -e "$f" ]; then
		if mount -o ro,loop "$1" "$mnt" 2>/dev/null; then
			btrfs filesystem df -b "$mnt" >"$f"
			if [ "$(basename "$1")" = ours-sparse.img ]; then
				cmp "$mnt/sparse.img" "$sparse/sparse.img" || { echo "btrfs.sh: sparse file differs" >&2; exit 1; }
			fi
			umount "$mnt"
		else
			echo "(no loop mount)" >"$f"
		fi
	fi
	sed -n "s/^$2,.*used=\([0-9]*\).*/\1/p" "$f" | grep . || echo "?"
}
for img in ours-minbase peer-minbase ours-minbase-zstd ours-sparse; do
	for k in Data Metadata System; do df_used "$work/$img.img" $k >"$work/used.$img.$k"; done
done
u() { cat "$work/used.$1.$2"; }

# Smallest images.
"$bench" "$tree" - >"$work/ours-min.txt"
ours_min=$(field "$work/ours-min.txt" min_size)
fresh "$work/ours-min.img" "$ours_min"
"$bench" "$tree" "$work/ours-min.img" >/dev/null
btrfs check --readonly "$work/ours-min.img" >/dev/null 2>&1 || { echo "btrfs.sh: check failed at min_size" >&2; exit 1; }
fresh "$work/peer-min.img" 2G
mkfs.btrfs -q --rootdir "$tree" --shrink "$work/peer-min.img" >/dev/null 2>&1
peer_shrink=$(stat -c %s "$work/peer-min.img")
# The peer on a fixed-size device (a loop device: it cannot enlarge it),
# bisected to 1 MiB.
peer_fits() { # MIB
	local dev ok=1
	fresh "$work/loop.img" "$1M"
	dev=$(losetup -f --show "$work/loop.img" 2>/dev/null) || return 2
	mkfs.btrfs -q --rootdir "$tree" "$dev" >/dev/null 2>&1 && ok=0
	losetup -d "$dev"
	return $ok
}
peer_min="?"
if peer_fits 2048; then
	lo=128 hi=2048 # lo does not fit (checked below), hi does
	if ! peer_fits $lo; then
		while [ $((hi - lo)) -gt 1 ]; do
			m=$(((lo + hi) / 2))
			if peer_fits $m; then hi=$m; else lo=$m; fi
		done
		peer_min=$((hi << 20))
	fi
fi
rm -f "$work/loop.img"
"$bench" "$sparse" - >"$work/ours-min-sparse.txt"
ours_min_sparse=$(field "$work/ours-min-sparse.txt" min_size)
fresh "$work/peer-min-sparse.img" 4G
mkfs.btrfs -q --rootdir "$sparse" --shrink "$work/peer-min-sparse.img" >/dev/null 2>&1
peer_min_sparse=$(stat -c %s "$work/peer-min-sparse.img")

alloc() { stat -c '%b %B' "$1" | awk '{print $1*$2}'; }
tree_alloc=$(du -sB1 "$sparse" | cut -f1)
tree_apparent=$(du -sB1 --apparent-size "$sparse" | cut -f1)
minbase_bytes=$(field "$work/ours-minbase.txt" content_bytes)
entries=$(find "$tree" | wc -l)

printf '\ntree: %s (%s entries, %s of file content); sparse: + 3 GiB file with 3 MiB data\n' "$tree" "$entries" "$(mib "$minbase_bytes")"
echo "$(nproc) CPUs, median of $runs runs, load average before: $load0, after: $load1"
echo "$(mkfs.btrfs --version 2>&1 | head -1)"
printf '%-44s | %-22s | %-22s | %s\n' "what" "peer" "ours" "ours/peer"
row() { printf '%-44s | %-22s | %-22s | %s\n' "$@"; }
for n in minbase sparse; do
	row "write $n (${size[$n]} image), ours write only" "$(med peer_write_$n) s" "$(med ours_write_$n) s" "$(ratio "$(med ours_write_$n)" "$(med peer_write_$n)")"
	row "write $n, ours whole process (load+write)" "$(med peer_write_$n) s" "$(med ours_proc_$n) s" "$(ratio "$(med ours_proc_$n)" "$(med peer_write_$n)")"
	if [ -e "$work/v.peer_e2e_$n" ]; then
		row "end to end $n ($(mib "$(cat "$work/e2e-size-$n")") image)" "$(med peer_e2e_$n) s" "$(med ours_e2e_$n) s" "$(ratio "$(med ours_e2e_$n)" "$(med peer_e2e_$n)")"
	else
		row "end to end $n ($(mib "$(cat "$work/e2e-size-$n")") image)" "failed" "$(med ours_e2e_$n) s" "-"
	fi
	[ "$(cat "$work/peer-e2e-size-$n")" = "$(cat "$work/e2e-size-$n")" ] ||
		echo "  (mkfs.btrfs enlarged its $(mib "$(cat "$work/e2e-size-$n")") image file to $(mib "$(cat "$work/peer-e2e-size-$n")") and hashed that)"
done
for k in Data Metadata System; do
	row "$k used, minbase (btrfs fi df)" "$(u peer-minbase $k)" "$(u ours-minbase $k)" "$(ratio "$(u ours-minbase $k)" "$(u peer-minbase $k)" 2>/dev/null || echo -)"
done
if [ "$peer_min" = "?" ]; then
	row "smallest image, minbase (peer: --shrink)" "$(mib "$peer_shrink")" "$(mib "$ours_min")" "$(ratio "$ours_min" "$peer_shrink")"
else
	row "smallest image, minbase (fixed-size device)" "$(mib "$peer_min")" "$(mib "$ours_min")" "$(ratio "$ours_min" "$peer_min")"
	row "smallest image, minbase (peer: --shrink)" "$(mib "$peer_shrink")" "$(mib "$ours_min")" "$(ratio "$ours_min" "$peer_shrink")"
fi
row "smallest image, sparse (peer: --shrink)" "$(mib "$peer_min_sparse")" "$(mib "$ours_min_sparse")" "$(ratio "$ours_min_sparse" "$peer_min_sparse")"
row "allocated, sparse-tree image (tree: $(mib "$tree_alloc"))" "$(mib "$(alloc "$work/peer-sparse.img")")" "$(mib "$(alloc "$work/ours-sparse.img")")" "$(ratio "$(alloc "$work/ours-sparse.img")" "$(alloc "$work/peer-sparse.img")")"
row "allocated, minbase image" "$(mib "$(alloc "$work/peer-minbase.img")")" "$(mib "$(alloc "$work/ours-minbase.img")")" "$(ratio "$(alloc "$work/ours-minbase.img")" "$(alloc "$work/peer-minbase.img")")"
row "ours zstd, minbase: write only / process" "-" "$(med ours_write_minbase_zstd) s / $(med ours_proc_minbase_zstd) s" "$(ratio "$(med ours_write_minbase_zstd)" "$(med peer_write_minbase)") (vs peer uncompressed)"
row "ours zstd, minbase: data / metadata used" "$(u peer-minbase Data) / $(u peer-minbase Metadata)" "$(u ours-minbase-zstd Data) / $(u ours-minbase-zstd Metadata)" "$(ratio "$(u ours-minbase-zstd Data)" "$(u peer-minbase Data)" 2>/dev/null || echo -) (data)"
row "ours peak RSS: example minbase / sparse" "-" "$(med ours_rss_minbase) / $(med ours_rss_sparse) KiB" "-"
row "ours peak RSS: example zstd / CLI minbase" "-" "$(med ours_rss_minbase_zstd) / $(med ours_e2e_rss_minbase) KiB" "-"
row "ours peak RSS: CLI sparse" "-" "$(med ours_e2e_rss_sparse) KiB" "-"
over=$(($(alloc "$work/ours-sparse.img") - tree_alloc))
echo "holes: ours allocates $(mib "$over") more than the sparse tree's $(mib "$tree_alloc") (apparent $(mib "$tree_apparent")); target < 100 MiB"
echo "targets: write <= 0.25, end to end <= 0.35, smallest minbase image ~260 MiB"
