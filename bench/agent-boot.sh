#!/bin/bash
# The guest agent as the initramfs /init against a one-line busybox /init
# script (`echo MARKER; poweroff -f`): the same Debian cloud kernel, the
# same initramfs contents otherwise, qemu -accel tcg.
#
#   wall clock  qemu start -> marker on the console, ROUNDS rounds
#               (default 5), round-robin over the three variants so that
#               load from elsewhere spreads over all alike; min and median.
#   guest time  one boot each under `-icount shift=0,sleep=off`: the guest
#               clock counts instructions, so the kernel's own timestamps
#               ("Run /init as init process", "reboot: Power down") measure
#               the work done whatever the host's load. The target is the
#               agent (without modules) adding at most +0.300 s to the
#               whole boot, initramfs unpacking included.
#
#   bench/agent-boot.sh [ROUNDS]
#
# Needs what `./build.sh test` needs (qemu-system-x86, the cached kernel
# package: ./build.sh fetch).
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD_IMAGE_CACHE=${BUILD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/build-image}
export BUILD_IMAGE_LOCK=${BUILD_IMAGE_LOCK:-$PWD/kernel/packages.lock}
AGENT_TIMING_ROUNDS=${1:-5} cargo test -q -p e2e-tests --test agent_boot -- \
    --ignored --exact timing_against_a_busybox_init --nocapture 2>&1 |
    grep -v '^running\|^test result\|^$\|^test timing'
