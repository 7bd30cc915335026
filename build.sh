#!/usr/bin/env bash
# build-image's one entry point.
#   ./build.sh [RECIPE]     build the default recipe (recipes/hello.json) into out/ (see use_lock below for the lock)
#   ./build.sh test         install what the tests need, then run them all
#   ./build.sh deps         only install the test dependencies (Debian packages), then check the commands
#   ./build.sh check        only check that every command the tests call is present
#   ./build.sh lint         cargo fmt --check and clippy -D warnings over the workspace
#   ./build.sh fetch [--update-lock] [--add NAME]   download the pinned Debian packages (kernel/packages.lock) into ~/.cache/build-image/debs (strict)
#                           (--add: pin NAME and its dependencies into the lock first)
#   ./build.sh schema       regenerate recipes/schema.json from the Rust types
#   ./build.sh bench        run the benchmarks in bench/ (side by side with the peer tools)
#   ./build.sh agent        build the static guest agent alone, for agent development (build-image embeds
#                           its own): target/x86_64-unknown-linux-gnu/agent/guest-agent
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the end-to-end tests call as oracles.
# cloud-init and ignition only for their validators (`cloud-init schema`,
# `ignition-validate`) on the cloud-config/ignition outputs; xorriso makes
# the ISO 9660 config drive of the vpc test; vde2's switch is the private
# network between the machines of the cluster tests; skopeo and umoci read
# the `oci` output (inspect, copy, unpack).
TEST_PACKAGES=(curl qemu-utils qemu-system-x86 ovmf binutils kmod gdisk fdisk util-linux mount dosfstools mtools cpio e2fsprogs btrfs-progs debootstrap xz-utils zstd gzip file time python3-yaml
    python3 python3-venv python3-pip cloud-init ignition xorriso mmdebstrap uidmap openssh-client vde2 skopeo umoci)

# The commands the tests and the build call, each with the package that has it.
# `deps` checks every one after installing, so a machine that lost one
# (qemu-system-x86 from Debian removes a newer qemu-utils, and qemu-img with
# it) fails here, loudly, instead of in the middle of the tests.
REQUIRED_COMMANDS=(
    curl:curl qemu-img:qemu-utils qemu-system-x86_64:qemu-system-x86 objcopy:binutils modinfo:kmod
    sgdisk:gdisk sfdisk:fdisk losetup:util-linux mount:mount mkfs.vfat:dosfstools fsck.fat:dosfstools
    mcopy:mtools mmd:mtools cpio:cpio e2fsck:e2fsprogs debugfs:e2fsprogs mke2fs:e2fsprogs
    mkfs.btrfs:btrfs-progs btrfs:btrfs-progs debootstrap:debootstrap xz:xz-utils zstd:zstd gzip:gzip file:file
    /usr/bin/time:time python3:python3 cloud-init:cloud-init ignition-validate:ignition xorriso:xorriso
    dpkg-deb:dpkg apt-get:apt mmdebstrap:mmdebstrap newuidmap:uidmap unshare:util-linux setpriv:util-linux chroot:coreutils
    ssh:openssh-client scp:openssh-client ssh-keygen:openssh-client ssh-keyscan:openssh-client vde_switch:vde2
    skopeo:skopeo umoci:umoci tar:tar sha256sum:coreutils
)
OVMF_FILES=(/usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd)

# What is missing: packages not installed, commands not found, firmware files absent.
missing_tools() {
    local c
    for c in "${REQUIRED_COMMANDS[@]}"; do
        command -v "${c%%:*}" >/dev/null 2>&1 || echo "command ${c%%:*} (package ${c##*:})"
    done
    for c in "${OVMF_FILES[@]}"; do [ -e "$c" ] || echo "file $c (package ovmf)"; done
}

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

deps() {
    local missing=() p
    for p in "${TEST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})) || [ -n "$(missing_tools)" ]; then
        echo "deps: installing ${missing[*]:-(reinstalling for missing commands)}" >&2
        # Always refresh the lists first: a new machine's lists are older
        # than the archive, and apt would ask for files that are gone.
        sudo_ apt-get update -qq
        # One consistent transaction. qemu-utils goes with qemu-system-x86
        # at the same version: a machine that came with a newer qemu-utils
        # (a backport) would otherwise lose it, and qemu-img with it, when
        # qemu-system-x86 pulls in qemu-system-common.
        local qv pkgs=()
        qv=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
        for p in "${TEST_PACKAGES[@]}"; do
            if [ "$p" = qemu-utils ] && [ -n "$qv" ] && [ "$qv" != "(none)" ]; then pkgs+=("qemu-utils=$qv"); else pkgs+=("$p"); fi
        done
        DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq --allow-downgrades "${pkgs[@]}" >/dev/null
    fi
    check_tools
}

# Fail loudly when a command the tests run is missing.
check_tools() {
    local gone
    gone=$(missing_tools)
    if [ -n "$gone" ]; then
        echo "deps: missing after install (run ./build.sh deps; see TEST_PACKAGES in build.sh):" >&2
        echo "$gone" | sed 's/^/  /' >&2
        return 1
    fi
    echo "deps: all ${#REQUIRED_COMMANDS[@]} commands and ${#OVMF_FILES[@]} firmware files present" >&2
}

# Downloaded packages (checked against the lock's sha256 on every use), the
# Glance/Keystone venvs and the debootstrap minbase live in build-image's own
# default cache, outside the clone: ${XDG_CACHE_HOME:-~/.cache}/build-image,
# shared by every clone on the machine, as cargo shares ~/.cargo. A fresh
# machine fills it once; $BUILD_IMAGE_CACHE moves it.
export BUILD_IMAGE_CACHE=${BUILD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/build-image}

# The pinned packages, for this repository's own builds and tests.
# `build-image fetch` is strict: it uses exactly the versions that
# kernel/packages.lock names, or fails. Debian's archive drops a version when
# a point release or security update replaces it, and the repository's lock
# must not break the tests on that day. So: when every pinned version is
# still to be had, the lock is used as it is; otherwise a copy of it,
# out/test-lock/packages.lock, is re-pinned to the archive's current versions
# (`fetch --update-lock`) and used through $BUILD_IMAGE_LOCK, saying so. The
# lock in the repository is never changed by this; `./build.sh fetch
# --update-lock` changes it on purpose.
use_lock() {
    local bin=$1 copy=out/test-lock/packages.lock
    if "$bin" -q fetch --lock kernel/packages.lock; then
        export BUILD_IMAGE_LOCK=$PWD/kernel/packages.lock
        return
    fi
    echo "build.sh: kernel/packages.lock names versions that Debian's archive no longer has (above);" >&2
    echo "build.sh: building against a copy re-pinned to the archive's current versions: $copy" >&2
    mkdir -p "$(dirname "$copy")"
    cp kernel/packages.lock "$copy"
    "$bin" -q fetch --lock "$copy" --update-lock
    export BUILD_IMAGE_LOCK=$PWD/$copy
}

# `./build.sh RECIPE.json` is short for `./build.sh build RECIPE.json`.
case "${1:-}" in *.json) set -- build "$@" ;; esac

case "${1:-build}" in
build)
    shift || true
    cargo build --release -q -p build-image
    use_lock ./target/release/build-image
    ./target/release/build-image build "${1:-recipes/hello.json}" --out out
    ;;
test)
    deps
    cargo build -q -p build-image
    use_lock ./target/debug/build-image
    # A real Debian root for the filesystem tests (debootstrap, cached).
    export BUILD_IMAGE_MINBASE=${BUILD_IMAGE_MINBASE:-$BUILD_IMAGE_CACHE/minbase}
    sh bench/minbase.sh "$BUILD_IMAGE_MINBASE"
    # OpenStack Glance + Keystone for the upload tests (a cached venv).
    tests/glance/venv.sh
    cargo build -q --workspace --all-targets
    cargo test -q --workspace -- --test-threads=2
    ;;
deps)
    deps
    tests/glance/venv.sh
    ;;
check)
    # Only check that every command the tests call is present.
    check_tools
    ;;
lint)
    cargo fmt --all --check
    cargo clippy -q --workspace --all-targets -- -D warnings
    ;;
fetch)
    shift
    cargo build -q -p build-image
    ./target/debug/build-image fetch --project . "$@"
    ;;
schema)
    cargo run -q -p build-image -- schema > recipes/schema.json
    ;;
agent)
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build -p guest-agent --profile agent --target x86_64-unknown-linux-gnu
    echo "target/x86_64-unknown-linux-gnu/agent/guest-agent" >&2
    ;;
bench)
    deps
    for b in bench/*.sh; do
        [ "$(basename "$b")" = minbase.sh ] && continue
        echo "== $b" >&2
        bash "$b"
    done
    ;;
*)
    echo "usage: ./build.sh [build [RECIPE] | test | deps | check | lint | fetch [--update-lock] [--add NAME] | agent | schema | bench]" >&2
    exit 2
    ;;
esac
