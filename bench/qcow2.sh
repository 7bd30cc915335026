#!/usr/bin/env bash
# Conversion benchmark, side by side with qemu-img on the same input in the
# same run: raw → qcow2, raw → compressed qcow2 (-c), raw → VMDK
# streamOptimized, raw → fixed VHD. The input is a 2 GiB sparse raw image holding ~300 MB of
# data: a tar of a Debian minbase tree (compressible, like a real root) and
# 64 MiB of random bytes (incompressible), at scattered offsets.
#
# Each round runs every conversion back to back, so that the sides of a
# ratio see the same machine load; RUNS rounds are made and the medians
# printed. The ratio is ours/peer in time: below 1.00 we are faster.
#
# Compared at equal durability, two ways:
#   no sync:  `qemu-img convert` as it runs by default (cache=unsafe: the
#             output is left in the page cache, never flushed) against
#             `build-image convert --no-sync` (the same);
#   synced:   `qemu-img convert -t writeback` (flushes the output before it
#             exits) against `build-image convert` (its default: O_DIRECT,
#             fsync, rename).
# Before each timed command the page cache is flushed (`sync`), so that one
# command's writeback does not land in the next one's time.
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
    sync
    s=$(now)
    "$@" >/dev/null 2>&1
    e=$(now)
    awk "BEGIN{printf \"%.3f\", $e - $s}"
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
declare -A T
add() { T[$1]+="$2 "; }
# pair KEY PEER-ARGS… -- OURS-ARGS…: the four timings of one conversion.
pair() {
    local key=$1 peer=() ours=()
    shift
    while [ "$1" != -- ]; do peer+=("$1"); shift; done
    shift
    ours=("$@")
    local pout="$work/peer.$key" oout="$work/ours.$key"
    rm -f "$pout" "$oout"
    add "$key.peer" "$(t qemu-img convert "${peer[@]}" "$raw" "$pout")"
    rm -f "$pout"
    add "$key.peerw" "$(t qemu-img convert -t writeback "${peer[@]}" "$raw" "$pout")"
    add "$key.oursn" "$(t "$bi" -q convert "$raw" "${ours[@]}" --no-sync -o "$oout")"
    rm -f "$oout"
    add "$key.ours" "$(t "$bi" -q convert "$raw" "${ours[@]}" -o "$oout")"
}
for r in $(seq "$runs"); do
    pair qcow2 -O qcow2 -- --to qcow2
    pair c.qcow2 -c -O qcow2 -- --to qcow2 --compress
    rm -f "$work/ours.c1.qcow2"
    add c1.ours "$(BUILD_IMAGE_THREADS=1 t "$bi" -q convert "$raw" --to qcow2 --compress -o "$work/ours.c1.qcow2")"
    pair vmdk -O vmdk -o subformat=streamOptimized -- --to vmdk
    pair vhd -O vpc -o subformat=fixed -- --to vhd
    # Same bytes every round.
    for f in ours.qcow2 ours.c.qcow2 ours.c1.qcow2; do
        sum=$(sha256sum < "$work/$f")
        k=${f//./_}
        [ "$r" = 1 ] && eval "first_$k='$sum'"
        eval "[ \"\$first_$k\" = \"$sum\" ]" || { echo "NOT DETERMINISTIC: $f differs in round $r" >&2; exit 1; }
    done
done
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }
row() { # row WHAT KEY FORMAT
    local p w n o
    p=$(echo "${T[$2.peer]}" | median)
    w=$(echo "${T[$2.peerw]}" | median)
    n=$(echo "${T[$2.oursn]}" | median)
    o=$(echo "${T[$2.ours]}" | median)
    qemu-img compare -q -f raw -F "$3" "$raw" "$work/ours.$2" || { echo "MISMATCH: ours.$2" >&2; exit 1; }
    printf '%-22s no sync: qemu-img %6.3f s, ours %6.3f s = %sx | synced: qemu-img -t writeback %6.3f s, ours %6.3f s = %sx | %4d / %4d MiB\n' \
        "$1" "$p" "$n" "$(ratio "$n" "$p")" "$w" "$o" "$(ratio "$o" "$w")" \
        $(($(stat -c %s "$work/peer.$2") >> 20)) $(($(stat -c %s "$work/ours.$2") >> 20))
}
qemu-img check -q "$work/ours.qcow2" && qemu-img check -q "$work/ours.c.qcow2"
row "qcow2" qcow2 qcow2
row "qcow2 compressed" c.qcow2 qcow2
c1=$(echo "${T[c1.ours]}" | median)
echo "  compressed on 1 thread (synced): ours $c1 s = $(ratio "$c1" "$(echo "${T[c.qcow2.peerw]}" | median)")x of qemu-img -t writeback -c"
cmp -s "$work/ours.c.qcow2" "$work/ours.c1.qcow2" && echo "  (1 and 2 threads give identical files)"
row "vmdk streamOptimized" vmdk vmdk
row "vhd fixed" vhd vpc
echo "all times (s):"
for k in $(echo "${!T[@]}" | tr ' ' '\n' | sort); do echo "  $k: ${T[$k]}"; done
