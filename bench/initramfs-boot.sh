#!/bin/bash
# Manual check that a real Linux kernel unpacks our initramfs (gzip, zstd and
# none): Debian's cloud kernel boots in qemu (TCG; KVM is used if KVM=1) with
# an initramfs holding a static busybox and test data: incompressible data
# (stored gzip blocks), a multi-block text file with a hardlink, a symlink,
# setuid and sticky modes and a device. /init verifies them and prints
# INITRAMFS-CHECK-OK or INITRAMFS-CHECK-FAILED.
#
#   bench/initramfs-boot.sh [WORKDIR]      (default: a temporary directory)
#
# Needs root (mknod), apt-get (to download linux-image-cloud-amd64 and
# busybox-static as .deb files, not installed), qemu-system-x86_64.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
work=${1:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"

if [ ! -e k/boot ]; then
	apt-get download linux-image-cloud-amd64 busybox-static
	img=$(dpkg -I linux-image-cloud-amd64_*.deb | sed -n 's/.*Depends: \(linux-image-[^ ,]*\).*/\1/p')
	apt-get download "$img"
	dpkg-deb -x linux-image-[0-9]*.deb k
	dpkg-deb -x busybox-static_*.deb bb
fi
kernel=$(ls k/boot/vmlinuz-*)

rm -rf root && mkdir -p root/bin root/dev root/proc root/data root/tmp
cp bb/bin/busybox root/bin/busybox
head -c 3000000 /dev/urandom >root/data/random.bin
seq -f "line %g of a compressible text file" 1 60000 >root/data/text.txt
ln root/data/text.txt root/data/text-link.txt
ln -s text.txt root/data/sym
chmod 4755 root/data/random.bin
chmod 1777 root/tmp
mknod root/dev/console c 5 1
(cd root/data && sha256sum random.bin text.txt >../sums)
cat >root/init <<'INIT'
#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
cd /data
ok=1
$bb sha256sum -c /sums || ok=0
[ "$($bb stat -c %i text.txt)" = "$($bb stat -c %i text-link.txt)" ] || { echo "hardlink broken"; ok=0; }
[ "$($bb stat -c %h text.txt)" = 2 ] || { echo "nlink wrong"; ok=0; }
[ "$($bb readlink sym)" = text.txt ] || { echo "symlink wrong"; ok=0; }
[ "$($bb stat -c %a random.bin)" = 4755 ] || { echo "setuid lost"; ok=0; }
[ "$($bb stat -c %a /tmp)" = 1777 ] || { echo "sticky lost"; ok=0; }
[ "$($bb stat -c %t:%T /dev/console)" = 5:1 ] || { echo "device wrong"; ok=0; }
[ $ok = 1 ] && echo "INITRAMFS-CHECK-OK" || echo "INITRAMFS-CHECK-FAILED"
$bb poweroff -f
INIT
chmod 755 root/init

(cd "$repo" && cargo build --release --example initramfs_bench -q)
accel="-accel tcg -cpu max"
[ "${KVM:-0}" = 1 ] && accel="-enable-kvm -cpu host"
fail=0
for c in gzip zstd none; do
	"$repo/target/release/examples/initramfs_bench" root "initrd.$c" "$c" >/dev/null
	# shellcheck disable=SC2086
	timeout 300 qemu-system-x86_64 $accel -m 512 -nographic -no-reboot -kernel "$kernel" \
		-initrd "initrd.$c" -append "console=ttyS0 panic=-1" >"boot.$c.log" 2>&1 || true
	if grep -aq INITRAMFS-CHECK-OK "boot.$c.log"; then
		echo "$c: INITRAMFS-CHECK-OK"
	else
		echo "$c: FAILED, see $work/boot.$c.log"
		fail=1
	fi
done
exit $fail
