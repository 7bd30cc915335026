#!/usr/bin/env bash
# Conversion benchmark, side by side with qemu-img on the same input in the
# same run: raw → qcow2, raw → compressed qcow2 (-c), raw → VMDK
# streamOptimized, raw → fixed VHD. The input is a 2 GiB sparse raw image holding ~300 MB of
# data: a tar of a Debian minbase tree (compressible, like a real root) and
# 64 MiB of random bytes (incompressible), at scattered offsets.
#
# Each round runs every pair (qemu-img, then ours) back to back, so that the
# two sides of a ratio see the same machine load; RUNS rounds are made and
# the medians printed. The ratio is ours/peer in time: below 1.00 we are
# faster. Our times include what qemu-img does not do: the fsync of the
# output and its rename into place (build-image's outputs are atomic). The
# "+ sync" column is qemu-img followed by `sync FILE`, for that comparison.
#   RUNS=5 bash bench/qcow2.sh [WORKDIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$root/out/bench-qcow2}"
runs="${RUNS:-5}"
mkdir -p "$work"
cd "$root"
cargo build --release -q -p build-image
bi="$root/target/release/build-image"
raw="$work/input.raw"
if [ ! -f "$raw" ]; then
    src=/work/cache/minbase
    [ -d "$src" ] || src=/usr/lib
    truncate -s 2G "$raw"
    tar -C "$src" -cf - . 2>/dev/null | head -c $((240 << 20)) | dd of="$raw" bs=1M seek=64 conv=notrunc status=none
    head -c $((64 << 20)) /dev/urandom | dd of="$raw" bs=1M seek=1400 conv=notrunc status=none
fi
sync
data=$(du -B1 "$raw" | cut -f1)
echo "input: $(stat -c %s "$raw") bytes, $((data >> 20)) MiB allocated ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)), $runs rounds"
now() { date +%s.%N; }
t() { # t CMD… → seconds
    local s e
    s=$(now)
    "$@" >/dev/null 2>&1
    e=$(now)
    awk "BEGIN{printf \"%.3f\", $e - $s}"
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
declare -A T
add() { T[$1]+="$2 "; }
for r in $(seq "$runs"); do
    rm -f "$work"/*.qcow2 "$work"/*.vmdk "$work"/*.vhd
    add qcow2.peer "$(t qemu-img convert -O qcow2 "$raw" "$work/peer.qcow2")"
    add qcow2.sync "$(t sync "$work/peer.qcow2")"
    add qcow2.ours "$(t "$bi" -q convert "$raw" --to qcow2 -o "$work/ours.qcow2")"
    add c.peer "$(t qemu-img convert -c -O qcow2 "$raw" "$work/peer-c.qcow2")"
    add c.sync "$(t sync "$work/peer-c.qcow2")"
    add c.ours "$(t "$bi" -q convert "$raw" --to qcow2 --compress -o "$work/ours-c.qcow2")"
    add c1.ours "$(BUILD_IMAGE_THREADS=1 t "$bi" -q convert "$raw" --to qcow2 --compress -o "$work/ours-c1.qcow2")"
    add vmdk.peer "$(t qemu-img convert -O vmdk -o subformat=streamOptimized "$raw" "$work/peer.vmdk")"
    add vmdk.sync "$(t sync "$work/peer.vmdk")"
    add vmdk.ours "$(t "$bi" -q convert "$raw" --to vmdk -o "$work/ours.vmdk")"
    add vhd.peer "$(t qemu-img convert -O vpc -o subformat=fixed "$raw" "$work/peer.vhd")"
    add vhd.sync "$(t sync "$work/peer.vhd")"
    add vhd.ours "$(t "$bi" -q convert "$raw" --to vhd -o "$work/ours.vhd")"
    # Same bytes every round.
    for f in ours ours-c ours-c1; do
        sum=$(sha256sum < "$work/$f.qcow2")
        [ "$r" = 1 ] && eval "first_${f//-/_}='$sum'"
        eval "[ \"\$first_${f//-/_}\" = \"$sum\" ]" || { echo "NOT DETERMINISTIC: $f.qcow2 differs in round $r" >&2; exit 1; }
    done
done
row() { # row WHAT KEY PEER_FILE OURS_FILE FORMAT [PEER_KEY]
    local p s o
    p=$(echo "${T[${6:-$2}.peer]}" | median)
    s=$(echo "${T[${6:-$2}.sync]}" | median)
    o=$(echo "${T[$2.ours]}" | median)
    qemu-img compare -q -f raw -F "$5" "$raw" "$4" || { echo "MISMATCH: $4" >&2; exit 1; }
    printf '%-26s qemu-img %6.2f s (+ sync %5.2f s) %4d MiB | ours %6.2f s %4d MiB | ours/peer %sx (vs peer + sync %sx)\n' \
        "$1" "$p" "$(awk "BEGIN{print $p + $s}")" $(($(stat -c %s "$3") >> 20)) "$o" $(($(stat -c %s "$4") >> 20)) \
        "$(awk "BEGIN{printf \"%.2f\", $o / $p}")" "$(awk "BEGIN{printf \"%.2f\", $o / ($p + $s)}")"
}
qemu-img check -q "$work/ours.qcow2" && qemu-img check -q "$work/ours-c.qcow2"
row "qcow2" qcow2 "$work/peer.qcow2" "$work/ours.qcow2" qcow2
row "qcow2 compressed" c "$work/peer-c.qcow2" "$work/ours-c.qcow2" qcow2
row "qcow2 compressed, 1 thread" c1 "$work/peer-c.qcow2" "$work/ours-c1.qcow2" qcow2 c
cmp -s "$work/ours-c.qcow2" "$work/ours-c1.qcow2" && echo "  (1 and 2 threads give identical files)"
row "vmdk streamOptimized" vmdk "$work/peer.vmdk" "$work/ours.vmdk" vmdk
row "vhd fixed" vhd "$work/peer.vhd" "$work/ours.vhd" vpc
for k in qcow2.peer qcow2.ours c.peer c.ours vmdk.peer vmdk.ours vhd.peer vhd.ours; do echo "  $k: ${T[$k]}"; done
