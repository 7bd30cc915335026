#!/bin/bash
# Benchmark the ext4 writer against mke2fs -d on the same trees, the same
# image size and the same inode count, in the same run:
#
#   fs write    peer: mke2fs -q -F -t ext4 -b 4096 -N INODES -d TREE IMG SIZE
#               ours: builder/examples/ext4_bench (loads the tree as a `dir`
#                     layer with owners preserved, then times ext4::write
#                     + fsync alone; mke2fs fsyncs too). Tree loading is
#                     printed separately, and a "load + write" ratio too,
#                     since mke2fs's wall time includes walking the tree.
#   end to end  peer: mke2fs -d (as above) && sha256sum IMG
#               ours: build-image -q build RECIPE --out DIR, one ext4
#                     partition, "size": "auto" (tree + 20%), a `dir` layer
#                     with owner preserve; includes tree loading, the input
#                     digest of the tree, the GPT disk, fsync and the
#                     manifest (sha256 of the image).
#   RSS         peak RSS (/usr/bin/time -f %M) of ours (and of mke2fs).
#
# SIZE is what "size": "auto" gives for the tree (the minimum + 20%); INODES
# is the inode count of our filesystem at that size (mke2fs -N), so both
# tools make the same geometry.
#
#   bench/ext4.sh [TREE...]   default: /work/cache/minbase (created with
#                             bench/minbase.sh when missing) and a generated
#                             tree of one 1 GiB file + 100,000 small files
#                             (made once, cached in $EXT4_BENCH_CACHE,
#                             default /work/cache/ext4-1g-100k)
#
# Each command runs RUNS times (default 5), interleaved; medians are
# reported. Ours is checked with e2fsck -fn. Temp files live in one mktemp
# folder, removed on exit. Not a test: it prints figures and ratios
# (ours / peer) and exits 0.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
runs=${RUNS:-5}
gen=${EXT4_BENCH_CACHE:-/work/cache/ext4-1g-100k}
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-ext4.XXXXXX")
trap 'rm -rf "$work"' EXIT

for tool in mke2fs dumpe2fs e2fsck sha256sum python3 /usr/bin/time; do
	command -v $tool >/dev/null || { echo "ext4.sh: $tool is needed" >&2; exit 1; }
done

# One 1 GiB file of pseudo-random bytes (mke2fs skips all-zero blocks, so
# zeros would measure nothing) plus 100,000 files of 0-4095 bytes in 100
# folders. Deterministic; built in $gen.tmp and renamed when complete.
make_generated() {
	[ -d "$gen/small" ] && return 0
	mkdir -p "$(dirname "$gen")"
	exec 8>"$gen.lock"
	flock 8
	if [ ! -d "$gen/small" ]; then
		echo "ext4.sh: generating $gen (1 GiB + 100,000 small files)" >&2
		rm -rf "$gen.tmp" "$gen"
		python3 - "$gen.tmp" <<-'EOF'
			import os, random, sys
			root = sys.argv[1]
			rng = random.Random(20240601)
			os.makedirs(root)
			with open(os.path.join(root, "big.bin"), "wb") as f:
			    for _ in range(1024):
			        f.write(rng.randbytes(1 << 20))
			for d in range(100):
			    sub = os.path.join(root, "small", "d%03d" % d)
			    os.makedirs(sub)
			    for i in range(1000):
			        with open(os.path.join(sub, "f%05d" % (d * 1000 + i)), "wb") as f:
			            f.write(rng.randbytes(rng.randrange(0, 4096)))
		EOF
		mv "$gen.tmp" "$gen"
	fi
	exec 8>&-
}

if (($# == 0)); then
	"$here/minbase.sh" /work/cache/minbase
	make_generated
	set -- /work/cache/minbase "$gen"
fi

(cd "$repo" && cargo build --release -q -p build-image --bin build-image --example ext4_bench)
bench="$repo/target/release/examples/ext4_bench"
cli="$repo/target/release/build-image"

now() { date +%s.%N; }
secs() { awk -v s="$1" -v e="$2" 'BEGIN{printf "%.3f", e-s}'; }
rec() { echo "$2" >>"$work/t.$1"; } # NAME VALUE: one sample
median() { sort -g "$work/t.$1" | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
field() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p"; } # FILE KEY
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

peer_mkfs() { # TREE IMG SIZE INODES
	rm -f "$2"; : >"$2"
	/usr/bin/time -f %M -o "$work/rss.peer" mke2fs -q -F -t ext4 -b 4096 -N "$4" -d "$1" "$2" "$(($3 / 1024))k"
}

table=()
for tree in "$@"; do
	tree=$(cd "$tree" && pwd)
	name=$(basename "$tree")
	rm -f "$work"/t.* "$work"/*.img
	rm -rf "$work/out"
	# Warm the page cache once so that no side pays for the first read.
	find "$tree" -type f -print0 | xargs -0 cat >/dev/null
	entries=$(find "$tree" | wc -l)
	bytes=$(du -sb "$tree" | cut -f1)

	# The size "auto" gives, and our inode count at that size.
	"$bench" "$tree" "$work/ours.img" >"$work/ours.txt"
	size=$(field "$work/ours.txt" size_bytes)
	e2fsck -fn "$work/ours.img" >"$work/fsck.txt" 2>&1 || {
		cat "$work/fsck.txt" >&2
		echo "ext4.sh: e2fsck -fn finds errors in our image of $tree" >&2
		exit 1
	}
	inodes=$(dumpe2fs -h "$work/ours.img" 2>/dev/null | sed -n 's/^Inode count: *//p')
	rm -f "$work/ours.img"

	cat >"$work/recipe.json" <<-EOF
		{
		  "name": "bench",
		  "source_date_epoch": 1700000000,
		  "trees": { "root": [{ "dir": "$tree", "to": "/", "owner": "preserve" }] },
		  "disk": { "partitions": [
		    { "label": "root", "type": "linux", "size": "auto", "filesystem": "ext4", "tree": "root" }
		  ] },
		  "outputs": ["raw"]
		}
	EOF

	load0=$(loadavg)
	for _ in $(seq "$runs"); do
		# fs write: the writer alone.
		/usr/bin/time -f %M -o "$work/rss.ours" "$bench" "$tree" "$work/ours.img" "$size" >"$work/ours.txt"
		rm -f "$work/ours.img"
		for k in load_s min_s write_s sync_s fs_s total_s; do rec "ours_$k" "$(field "$work/ours.txt" $k)"; done
		rec ours_rss "$(cat "$work/rss.ours")"
		s=$(now); peer_mkfs "$tree" "$work/peer.img" "$size" "$inodes"; e=$(now)
		rm -f "$work/peer.img"
		rec peer_fs "$(secs "$s" "$e")"
		rec peer_rss "$(cat "$work/rss.peer")"

		# End to end.
		rm -rf "$work/out"
		s=$(now)
		/usr/bin/time -f %M -o "$work/rss.cli" "$cli" -q build "$work/recipe.json" --out "$work/out"
		e=$(now)
		rec ours_e2e "$(secs "$s" "$e")"
		rec cli_rss "$(cat "$work/rss.cli")"
		disk=$(stat -c %s "$work/out/bench.raw")
		rm -rf "$work/out"
		s=$(now)
		peer_mkfs "$tree" "$work/peer.img" "$size" "$inodes"
		sha256sum "$work/peer.img" >/dev/null
		e=$(now)
		rm -f "$work/peer.img"
		rec peer_e2e "$(secs "$s" "$e")"
	done
	load1=$(loadavg)

	ours_load=$(awk -v a="$(median ours_load_s)" -v b="$(median ours_min_s)" -v c="$(median ours_fs_s)" 'BEGIN{printf "%.3f", a+b+c}')
	echo
	echo "tree: $tree ($entries entries, $(mib "$bytes") MiB); image $(mib "$size") MiB, $inodes inodes; disk (ours, GPT) $(mib "$disk") MiB"
	echo "$(nproc) CPUs; load average before $load0, after $load1; median of $runs runs"
	printf '%-34s %9s %9s %9s\n' "step" "peer s" "ours s" "ours/peer"
	printf '%-34s %9s %9s %9s\n' "fs write (writer alone)" "$(median peer_fs)" "$(median ours_fs_s)" "$(ratio "$(median ours_fs_s)" "$(median peer_fs)")"
	printf '%-34s %9s %9s %9s\n' "fs write incl. tree load+min_size" "$(median peer_fs)" "$ours_load" "$(ratio "$ours_load" "$(median peer_fs)")"
	printf '%-34s %9s %9s %9s\n' "end to end (+ sha256 of image)" "$(median peer_e2e)" "$(median ours_e2e)" "$(ratio "$(median ours_e2e)" "$(median peer_e2e)")"
	echo "ours fs write: load $(median ours_load_s) s, min_size $(median ours_min_s) s, write $(median ours_write_s) s, fsync $(median ours_sync_s) s"
	echo "peak RSS: ours writer $(mib "$(($(median ours_rss | cut -d. -f1) * 1024))") MiB, ours CLI $(mib "$(($(median cli_rss | cut -d. -f1) * 1024))") MiB, mke2fs $(mib "$(($(median peer_rss | cut -d. -f1) * 1024))") MiB"
	echo "targets: fs write ours/peer <= 0.45, end to end <= 0.5"
done
