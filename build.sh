#!/usr/bin/env bash
# build-image's one entry point.
#   ./build.sh [RECIPE]     build the default recipe (recipes/hello.json) into out/
#   ./build.sh test         install what the tests need, then run them all
#   ./build.sh deps         only install the test dependencies (Debian packages)
#   ./build.sh fetch [--update-lock] [--add NAME]   download the pinned Debian packages (kernel/packages.lock) into out/cache/debs
#                           (--add: pin NAME and its dependencies into the lock first)
#   ./build.sh schema       regenerate recipes/schema.json from the Rust types
#   ./build.sh bench        run the benchmarks in bench/ (side by side with the peer tools)
#   ./build.sh agent        build the static guest agent (initramfs /init):
#                           target/x86_64-unknown-linux-gnu/release/guest-agent
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the end-to-end tests call as oracles.
# cloud-init and ignition only for their validators (`cloud-init schema`,
# `ignition-validate`) on the cloud-config/ignition outputs; xorriso makes
# the ISO 9660 config drive of the vpc test.
TEST_PACKAGES=(curl qemu-utils qemu-system-x86 ovmf binutils kmod gdisk fdisk util-linux mount dosfstools mtools cpio e2fsprogs btrfs-progs debootstrap xz-utils zstd gzip file time python3-yaml
    python3 python3-venv python3-pip cloud-init ignition xorriso)

deps() {
    local missing=()
    for p in "${TEST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}" >&2
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# `./build.sh RECIPE.json` is short for `./build.sh build RECIPE.json`.
case "${1:-}" in *.json) set -- build "$@" ;; esac

case "${1:-build}" in
build)
    shift || true
    cargo build --release -q -p build-image
    ./target/release/build-image fetch --project .
    "$0" agent
    ./target/release/build-image build "${1:-recipes/hello.json}" --out out
    ;;
test)
    deps
    cargo build -q -p build-image
    ./target/debug/build-image fetch --project .
    "$0" agent
    # A real Debian root for the filesystem tests (debootstrap, cached).
    export BUILD_IMAGE_MINBASE=${BUILD_IMAGE_MINBASE:-$PWD/out/cache/minbase}
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
        cargo build -p guest-agent --release --target x86_64-unknown-linux-gnu
    echo "target/x86_64-unknown-linux-gnu/release/guest-agent" >&2
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
    echo "usage: ./build.sh [build [RECIPE] | test | deps | fetch [--update-lock] [--add NAME] | agent | schema | bench]" >&2
    exit 2
    ;;
esac
