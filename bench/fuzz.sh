#!/usr/bin/env bash
# bench/fuzz.sh [SECONDS]: run every cargo-fuzz target (fuzz/, libFuzzer,
# nightly) for SECONDS each (default 600), one after the other, and print a
# markdown table per target: executions, executions per second, coverage
# (libFuzzer's cov/ft of its last status line), corpus size and crashes.
# Not part of CI.
#
# Each target runs with -rss_limit_mb=256 -timeout=1: an input that takes
# over a second (a hang) or over 256 MiB is a finding like a crash. After a
# finding libFuzzer stops; the script starts it again on the same corpus
# until the time is up, so a target's row counts every finding of its
# SECONDS. Findings are in fuzz/artifacts/TARGET/ (crash-*, timeout-*,
# oom-*); reproduce one with
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-…
#
# As root, the runs happen in a private mount namespace where everything is
# read-only except fuzz/ (corpus, artifacts) and a 512 MiB tmpfs on /tmp:
# the apply targets write fuzzed configurations into folders, and a
# confinement bug must not reach the machine. Without root (or unshare),
# the targets run as the user, whose permissions are the limit.
#
# FUZZ_TARGETS="a b" runs only those; FUZZ_JOBS is not offered on purpose:
# targets run one at a time.
set -euo pipefail
secs=${1:-600}
here=$(cd "$(dirname "$0")/.." && pwd)
fuzz=$here/fuzz
bin=$fuzz/target/x86_64-unknown-linux-gnu/release

if [ "${BUILD_IMAGE_FUZZ_SANDBOX:-}" != setup ]; then
    (cd "$fuzz" && cargo +nightly fuzz build -a >&2)
    bash "$fuzz/seed.sh" >&2
    if [ "$(id -u)" = 0 ] && [ -z "${BUILD_IMAGE_FUZZ_SANDBOX:-}" ] && unshare -m --propagation private true 2>/dev/null; then
        exec unshare -m --propagation private env BUILD_IMAGE_FUZZ_SANDBOX=setup bash "$0" "$secs"
    fi
    echo "fuzz.sh: not root or no unshare: running without the read-only sandbox" >&2
else
    mount --bind "$fuzz" "$fuzz"
    mount -o remount,bind,ro /
    mount -t tmpfs -o size=512m,mode=1777 fuzz-tmp /tmp
    export BUILD_IMAGE_FUZZ_SANDBOX=1
fi
export TMPDIR=/tmp
# AddressSanitizer (for the C under some Rust crates: zstd, liblzma) holds
# freed memory in a 256 MiB quarantine by default, which alone would pass
# -rss_limit_mb=256: keep it small so the limit measures the target. Leaks
# (once-per-process caches) are not findings.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=8:detect_leaks=0:detect_odr_violation=0}

targets=${FUZZ_TARGETS:-$(cd "$fuzz" && cargo +nightly fuzz list 2>/dev/null || ls "$fuzz/fuzz_targets" | sed 's/\.rs$//')}
rows=()
for t in $targets; do
    mkdir -p "$fuzz/corpus/$t" "$fuzz/artifacts/$t"
    log=$(mktemp)
    start=$(date +%s)
    before=$(ls "$fuzz/artifacts/$t" | wc -l)
    execs=0 runs=0 cov=- ft=- corpus=-
    while :; do
        left=$((start + secs - $(date +%s)))
        [ "$left" -gt 0 ] || break
        runs=$((runs + 1))
        "$bin/$t" "$fuzz/corpus/$t" -artifact_prefix="$fuzz/artifacts/$t/" -max_total_time="$left" \
            -rss_limit_mb=256 -timeout=1 -close_fd_mask=3 -print_final_stats=1 >"$log" 2>&1 || true
        n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        execs=$((execs + ${n:-0}))
        last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
        if [ -n "$last" ]; then
            cov=$(sed -E 's/.* cov: ([0-9]+).*/\1/' <<<"$last")
            ft=$(sed -E 's/.* ft: ([0-9]+).*/\1/' <<<"$last")
            corpus=$(sed -E 's/.* corp: ([0-9]+)\/.*/\1/' <<<"$last")
        fi
        if ! grep -qE '^==[0-9]+== ERROR|^SUMMARY: libFuzzer|Test unit written to|^==[0-9]+== libFuzzer: (out-of-memory|timeout)' "$log"; then
            break # time is up, no finding
        fi
        grep -E 'Test unit written to' "$log" | sed "s|^|  $t: |" >&2 || true
        [ "$runs" -lt 50 ] || break
    done
    took=$(($(date +%s) - start))
    found=$(($(ls "$fuzz/artifacts/$t" | wc -l) - before))
    rate=$((execs / (took > 0 ? took : 1)))
    rows+=("| $t | $took | $execs | $rate | $cov | $ft | $corpus | $found |")
    echo "fuzz.sh: $t: $took s, $execs executions, $rate/s, cov $cov, ft $ft, $found finding(s)" >&2
    rm -f "$log"
done

echo "| target | seconds | executions | exec/s | cov | ft | corpus | crashes |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
