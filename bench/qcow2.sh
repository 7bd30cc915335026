#!/usr/bin/env bash
# Conversion benchmark, side by side with qemu-img on the same input in the
# same run: raw → qcow2, raw → compressed qcow2 (-c), raw → VMDK
# streamOptimized. The input is a 2 GiB sparse raw image holding ~300 MB of
# data: a tar of a Debian minbase tree (compressible, like a real root) and
# 64 MiB of random bytes (incompressible), at scattered offsets.
#   bash bench/qcow2.sh [WORKDIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$root/out/bench-qcow2}"
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
echo "input: $(stat -c %s "$raw") bytes, $((data >> 20)) MiB allocated ($(nproc) cores)"
t() { # t LABEL CMD… → seconds
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s.%N)
    awk "BEGIN{printf \"%.3f\", $e - $s}"
}
row() { # row WHAT PEER_SECONDS OURS_SECONDS PEER_FILE OURS_FILE FORMAT
    local ratio
    ratio=$(awk "BEGIN{printf \"%.2f\", $2 / $3}")
    qemu-img compare -q -f raw -F "$6" "$raw" "$5" || { echo "MISMATCH: $5" >&2; exit 1; }
    printf '%-26s qemu-img %6.2f s %5d MiB | ours %6.2f s %5d MiB | speed ratio (qemu/ours) %sx\n' \
        "$1" "$2" $(($(stat -c %s "$4") >> 20)) "$3" $(($(stat -c %s "$5") >> 20)) "$ratio"
}
rm -f "$work"/*.qcow2 "$work"/*.vmdk
p=$(t qemu-img convert -O qcow2 "$raw" "$work/peer.qcow2")
o=$(t "$bi" -q convert "$raw" --to qcow2 -o "$work/ours.qcow2")
row "qcow2" "$p" "$o" "$work/peer.qcow2" "$work/ours.qcow2" qcow2
p=$(t qemu-img convert -c -O qcow2 "$raw" "$work/peer-c.qcow2")
o=$(t "$bi" -q convert "$raw" --to qcow2 --compress -o "$work/ours-c.qcow2")
row "qcow2 compressed" "$p" "$o" "$work/peer-c.qcow2" "$work/ours-c.qcow2" qcow2
o1=$(BUILD_IMAGE_THREADS=1 t "$bi" -q convert "$raw" --to qcow2 --compress -o "$work/ours-c1.qcow2")
row "qcow2 compressed, 1 thread" "$p" "$o1" "$work/peer-c.qcow2" "$work/ours-c1.qcow2" qcow2
cmp -s "$work/ours-c.qcow2" "$work/ours-c1.qcow2" && echo "  (1 and 2 threads give identical files)"
p=$(t qemu-img convert -O vmdk -o subformat=streamOptimized "$raw" "$work/peer.vmdk")
o=$(t "$bi" -q convert "$raw" --to vmdk -o "$work/ours.vmdk")
row "vmdk streamOptimized" "$p" "$o" "$work/peer.vmdk" "$work/ours.vmdk" vmdk
