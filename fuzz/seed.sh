#!/usr/bin/env bash
# Seed corpora for the fuzz targets from the repository's fixtures and the
# small text seeds in fuzz/seeds/, into fuzz/corpus/TARGET/ (not committed:
# libFuzzer adds to them as it runs). Safe to run again: existing corpus
# files stay, seeds are (re)written under their own names.
#
# Every target's input starts with a mode byte (see fuzz_targets/*.rs):
# for the JSON targets an even first byte means "the rest is the
# document", so those seeds get a space (0x20) in front; the archive
# target's byte picks the reader (0 tar, 1 deb, 2 oci).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
corpus=$here/corpus

put() { # put TARGET NAME PREFIX FILE...: PREFIX (printf format) + each file
    local t=$1 name=$2 prefix=$3
    shift 3
    mkdir -p "$corpus/$t"
    { printf "$prefix"; cat "$@"; } > "$corpus/$t/seed-$name"
}

for f in "$repo"/tests/ignition/*.ign "$repo"/tests/ignition/invalid/* "$repo"/tests/seed/ignition-*.json; do
    n=$(basename "$f")
    put ignition "$n" ' ' "$f"
    put ignition_apply "$n" ' ' "$f"
    put userdata "ign-$n" '' "$f"
done
for f in "$repo"/tests/cloud-config/*.yaml "$repo"/tests/seed/cloud-config.yml; do
    n=$(basename "$f")
    put cloudconfig "$n" '' "$f"
    put cloudconfig_apply "$n" '' "$f"
    put userdata "cc-$n" '' "$f"
done
printf '#!/bin/sh\necho hi\n' > "$corpus/userdata-script.tmp" && put userdata script '' "$corpus/userdata-script.tmp"
printf '\xef\xbb\xbf#include\nhttp://x\n' > "$corpus/userdata-include.tmp" && put userdata include '' "$corpus/userdata-include.tmp"
rm -f "$corpus"/*.tmp

for f in "$here"/seeds/network_data/*; do
    put network_data "$(basename "$f")" ' ' "$f"
    # The OEM configuration carries the same shape under "network".
    put meta_data "net-$(basename "$f")" ' ' "$f"
done
for f in "$here"/seeds/meta_data/*; do put meta_data "$(basename "$f")" ' ' "$f"; done
for f in "$here"/seeds/cmdline/*; do put cmdline "$(basename "$f")" '' "$f"; done
for f in "$repo"/recipes/*.json; do put recipe "$(basename "$f")" ' ' "$f"; done

# Archives made with the system's tools from a tiny tree.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/t/etc" "$tmp/t/usr/bin" "$tmp/t/a/.wh..wh..opq"
echo hello > "$tmp/t/etc/hostname"
ln -s ../usr/bin "$tmp/t/bin"
ln "$tmp/t/etc/hostname" "$tmp/t/etc/hardlink"
touch "$tmp/t/.wh.gone"
tar --format=gnu -C "$tmp/t" -cf "$tmp/gnu.tar" .
tar --format=pax --pax-option=SCHILY.xattr.user.x=y -C "$tmp/t" -cf "$tmp/pax.tar" .
gzip -c "$tmp/gnu.tar" > "$tmp/gnu.tar.gz"
put archive gnu.tar '\x00' "$tmp/gnu.tar"
put archive pax.tar '\x00' "$tmp/pax.tar"
put archive gnu.tar.gz '\x00' "$tmp/gnu.tar.gz"
if command -v dpkg-deb >/dev/null; then
    mkdir -p "$tmp/deb/DEBIAN"
    cp -a "$tmp/t/etc" "$tmp/deb/"
    printf 'Package: fuzz\nVersion: 1\nArchitecture: all\nMaintainer: x <x@x>\nDescription: x\n' > "$tmp/deb/DEBIAN/control"
    dpkg-deb -Zgzip --root-owner-group -b "$tmp/deb" "$tmp/fuzz.deb" >/dev/null
    put archive fuzz.deb '\x01' "$tmp/fuzz.deb"
fi
# docker save: manifest.json, config, one layer.
mkdir -p "$tmp/img/l0"
cp "$tmp/gnu.tar" "$tmp/img/l0/layer.tar"
echo '{"config":{"Entrypoint":["/bin/sh"],"Env":["A=1"]}}' > "$tmp/img/config.json"
echo '[{"Config":"config.json","Layers":["l0/layer.tar"]}]' > "$tmp/img/manifest.json"
tar -C "$tmp/img" -cf "$tmp/docker.tar" .
put archive docker.tar '\x02' "$tmp/docker.tar"

# The structured targets start from a few arbitrary inputs (odd first
# byte: generated structure).
for t in dhcp_parse dhcp_lease gpt_agent inspect network_data ignition recipe archive; do
    for k in 1 2 3; do
        mkdir -p "$corpus/$t"
        { printf '\x05'; head -c $((k * 97)) /dev/zero | tr '\0' "\\$((k + 1))"; } > "$corpus/$t/seed-structured-$k"
    done
done
echo "seeded: $(find "$corpus" -name 'seed-*' | wc -l) files in $corpus"
