#!/usr/bin/env bash
# build-image's one entry point.
#   ./build.sh              build the default recipe (recipes/demo.json) into out/
#   ./build.sh test         install what the tests need, then run them all
#   ./build.sh deps         only install the test dependencies (Debian packages)
#   ./build.sh schema       regenerate recipes/schema.json from the Rust types
#   ./build.sh bench        run the benchmarks in bench/ (side by side with the peer tools)
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the end-to-end tests call as oracles.
TEST_PACKAGES=(qemu-utils gdisk fdisk util-linux mount dosfstools mtools cpio e2fsprogs btrfs-progs debootstrap xz-utils zstd gzip file time
    python3 python3-venv python3-pip)

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

case "${1:-build}" in
build)
    shift || true
    cargo build --release -q -p build-image
    ./target/release/build-image build "${1:-recipes/demo.json}" --out out
    ;;
test)
    deps
    # OpenStack Glance + Keystone for the upload tests (a cached venv).
    tests/glance/venv.sh
    cargo build -q --workspace --all-targets
    cargo test -q --workspace -- --test-threads=2
    ;;
deps)
    deps
    tests/glance/venv.sh
    ;;
schema)
    cargo run -q -p build-image -- schema > recipes/schema.json
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
    echo "usage: ./build.sh [build [RECIPE] | test | deps | schema | bench]" >&2
    exit 2
    ;;
esac
