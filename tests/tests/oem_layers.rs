//! OEM layers 30–50 applied by the guest agent, for real: appliances built
//! by the builder with an OEM partition, booted under qemu TCG (direct
//! kernel boot of the `kernel+initramfs` outputs, the raw image as a virtio
//! disk), and the agent's merge checked against the builder's.
//!
//! * an initramfs appliance, platform `qemu`, vfat OEM partition whose tree
//!   adds `/config.d/50-site.json` (hostname) and a malformed
//!   `/config.d/60-broken.json`, two NICs on two qemu user networks: the
//!   guest's hostname is the site's, the broken file is logged and skipped,
//!   `/run/agent/oem.json` is the effective merge, and both NICs got a DHCP
//!   address (the platform's `"link": "*"`);
//! * a root-mode image (ext4 root, ext4 OEM partition, the same site file)
//!   booted with `oem.hostname=…` added to the kernel command line: layer
//!   40 wins over layer 30, the OEM partition is mounted at
//!   `/usr/share/oem` in the real root, `/run/agent/oem.json` is there too;
//! * no boot: `inspect` reads the OEM files from ext4 and btrfs
//!   partitions; `inspect` applies the `oem.*` keys of the image's own
//!   kernel command line (the UKI's `.cmdline`, GRUB's embedded config) as
//!   layer 40, and says when the UEFI and BIOS lines differ.
//!
//! The merge and the `oem.*` parser themselves are the `oem-rules` crate's,
//! shared by the builder and the agent, and property-tested there.
//!
//! Needs the pinned packages (`./build.sh fetch`); the agent is the one
//! built into build-image.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

const DONE: &str = "OEM-TEST: DONE";
const SITE: &str = "{\"hostname\": \"site-host\", \"site\": {\"rack\": 7}}\n";

/// Shell lines (for `sh -c` or an init script) that print what the test
/// checks: hostname, the effective OEM config on one line, addresses,
/// mounts, then the marker.
fn report() -> Vec<String> {
    [
        "echo \"OEM-HOSTNAME: $(busybox hostname)\"",
        "echo \"OEM-JSON: $(busybox tr -d '\\n' < /run/agent/oem.json)\"",
        "echo \"OEM-PROV: $(busybox tr -d '\\n' < /run/agent/oem-provenance.json)\"",
        "busybox ip -4 -o addr show | busybox sed 's/^/OEM-ADDR: /'",
        "busybox grep ' /usr/share/oem ' /proc/mounts | busybox sed 's/^/OEM-MOUNT: /'",
        "echo \"OEM-CONFIG: $(busybox head -c 2 /usr/share/oem/config.json)\"",
        "echo 'OEM-TEST: DONE'",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const MODULES: [&str; 3] = ["virtio_pci", "virtio_net", "virtio_blk"];

/// The initramfs appliance: vfat OEM partition, platform qemu.
fn appliance_recipe() -> Value {
    json!({
        "name": "oem-appliance",
        "source_date_epoch": 1700000000,
        "trees": {
            "initrd": [ { "deb": "busybox-static" }, { "symlink": "/bin/sh", "target": "busybox" } ],
            "oemtree": [
                { "file": "/config.d/50-site.json", "content": SITE },
                { "file": "/config.d/60-broken.json", "content": "{\"hostname\": \"broken\",\n" }
            ]
        },
        "initramfs": { "tree": "initrd", "compression": "gzip" },
        "kernel": { "package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200 quiet", "modules": MODULES },
        "oem": { "platform": "qemu", "hostname": "recipe-host" },
        "init": ["/bin/busybox", "sh", "-c", report().join("; ")],
        "disk": { "partitions": [
            { "label": "ESP", "type": "esp", "size": "34MiB" },
            { "label": "OEM", "type": "linux", "size": "34MiB", "filesystem": "vfat", "tree": "oemtree" }
        ]},
        "outputs": ["raw", "kernel+initramfs"]
    })
}

/// Root mode: ext4 root without /usr/share/oem (the agent makes it), ext4
/// OEM partition.
fn root_recipe() -> Value {
    let init = format!("#!/bin/busybox sh\nbusybox mount -t proc proc /proc 2>/dev/null\n{}\nbusybox poweroff -f\n", report().join("\n"));
    json!({
        "name": "oem-root",
        "source_date_epoch": 1700000000,
        "trees": {
            "root": [
                { "deb": "busybox-static" },
                { "symlink": "/bin/sh", "target": "busybox" },
                { "mkdir": "/proc" }, { "mkdir": "/sys" }, { "mkdir": "/dev" }, { "mkdir": "/run" }, { "mkdir": "/etc" },
                { "file": "/sbin/init", "mode": "0755", "content": init }
            ],
            "oemtree": [ { "file": "/config.d/50-site.json", "content": SITE } ]
        },
        "kernel": { "package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200 quiet", "modules": ["virtio_pci", "virtio_blk"] },
        "oem": { "platform": "qemu", "user": "admin" },
        "disk": { "partitions": [
            { "label": "ESP", "type": "esp", "size": "34MiB" },
            { "label": "OEM", "type": "linux", "size": "34MiB", "filesystem": "ext4", "tree": "oemtree" },
            { "label": "root", "type": "root-x86-64", "size": "64MiB", "filesystem": "ext4", "tree": "root" }
        ]},
        "outputs": ["raw", "kernel+initramfs"]
    })
}

/// Build `recipe` from a folder inside the project (package names resolve
/// through kernel/packages.lock) into `out`; returns the manifest.
fn build(recipe: &Value, out: &Path) -> Value {
    build_said(recipe, out).0
}

/// [`build`], with what the build printed on stderr (with `-q`: warnings).
fn build_said(recipe: &Value, out: &Path) -> (Value, String) {
    let name = recipe["name"].as_str().unwrap();
    let said = build_in_project(recipe, out);
    (serde_json::from_slice(&fs::read(out.join(format!("{name}.manifest.json"))).unwrap()).unwrap(), said)
}

/// Direct kernel boot of NAME's kernel+initramfs in `out` with NAME.raw as
/// a virtio disk (a copy: the boot must not change the built image),
/// `extra` qemu arguments; waits for power-off. Returns the serial log.
fn boot(out: &Path, name: &str, cmdline: &str, extra: &[&str]) -> String {
    let disk = out.join("disk.raw");
    fs::copy(out.join(format!("{name}.raw")), &disk).unwrap();
    let mut args = vec!["-drive".to_string(), format!("file={},format=raw,if=virtio", disk.display())];
    args.extend(extra.iter().map(|a| a.to_string()));
    let (exited, took, text) = boot_to_poweroff(
        &out.join(format!("{name}.vmlinuz")),
        &out.join(format!("{name}.initramfs")),
        cmdline,
        &args,
        &out.join("serial.log"),
    );
    assert!(exited, "{name} did not power off in {took:?}:\n{text}");
    assert!(text.lines().any(|l| l.trim_end() == DONE), "{name}: no marker:\n{text}");
    eprintln!("{name}: booted and powered off in {took:?}");
    for l in text.lines().filter(|l| l.contains("oem:") || l.contains("net:") || l.contains("network configured") || l.starts_with("OEM-"))
    {
        eprintln!("  {l}");
    }
    text
}

/// The value after `TAG: ` on the guest's lines.
fn tagged<'a>(log: &'a str, tag: &str) -> Vec<&'a str> {
    let p = format!("{tag}: ");
    log.lines().filter_map(|l| l.strip_prefix(p.as_str())).map(str::trim_end).collect()
}

fn one_json(log: &str, tag: &str) -> Value {
    let v = tagged(log, tag);
    let s = v.first().unwrap_or_else(|| panic!("no {tag} line:\n{log}"));
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{tag} is not JSON ({e}): {s}\n{log}"))
}

/// Layers 00–20 as the builder rendered them for `recipe` (`build-image
/// inspect` of the built image), so the checks below compare the agent's
/// result with an independent merge, not with constants.
fn inspect(image: &Path) -> Value {
    let o = run(&root(), &["inspect", "--json", image.to_str().unwrap()]);
    assert!(o.status.success(), "inspect: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn merge(into: &mut Value, over: Value) {
    oem_rules::merge(into, over);
}

#[test]
fn appliance_merges_config_d_skips_a_broken_file_and_dhcps_every_nic() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path();
    let m = build(&appliance_recipe(), out);
    let cmdline = m["boot"]["cmdline"].as_str().unwrap().to_string();
    assert!(!cmdline.contains("root="), "appliance mode: {cmdline}");
    let image = out.join("oem-appliance.raw");
    // What the builder says layers 00–30 are (it reads config.d as layer 30 too).
    let insp = inspect(&image);
    let base = insp["oem"]["config"].clone();
    assert_eq!(base["hostname"], "recipe-host", "{insp}");
    let log = boot(
        out,
        "oem-appliance",
        &cmdline,
        &[
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:00:01:01",
            "-netdev",
            "user,id=n1,net=10.0.3.0/24",
            "-device",
            "virtio-net-pci,netdev=n1,mac=52:54:00:00:01:02",
        ],
    );
    // Layer 30: the site file over the recipe's hostname; the broken one skipped, named, with the JSON error.
    assert_eq!(tagged(&log, "OEM-HOSTNAME"), ["site-host"], "{log}");
    let broken = log
        .lines()
        .find(|l| l.contains("60-broken.json is malformed, skipped"))
        .unwrap_or_else(|| panic!("no log line for the broken file:\n{log}"));
    assert!(broken.contains("EOF while parsing"), "the JSON error is in the line: {broken}");
    let mut want = base.clone();
    merge(&mut want, serde_json::from_str(SITE).unwrap());
    let got = one_json(&log, "OEM-JSON");
    assert_eq!(got, want, "/run/agent/oem.json is the merge of layers 00-20 and the site file");
    let prov = one_json(&log, "OEM-PROV");
    assert_eq!(prov["hostname"], "30-config.d-50-site");
    assert_eq!(prov["site.rack"], "30-config.d-50-site");
    assert_eq!(prov["network.networks"], "10-platform-qemu");
    // The OEM partition was mounted read-only on /usr/share/oem.
    let mounts = tagged(&log, "OEM-MOUNT");
    assert!(mounts.len() == 1 && mounts[0].contains(" vfat ro,"), "{mounts:?}\n{log}");
    assert_eq!(tagged(&log, "OEM-CONFIG"), ["{"]);
    // "link": "*": a DHCP lease on both NICs, as the kernel reports them.
    let addrs = tagged(&log, "OEM-ADDR").join("\n");
    assert!(addrs.contains("inet 10.0.2.15/24"), "first NIC: {addrs}\n{log}");
    assert!(addrs.contains("inet 10.0.3.15/24"), "second NIC: {addrs}\n{log}");
    assert!(log.contains("network configured from OEM network"), "{log}");
}

#[test]
fn root_mode_cmdline_wins_and_the_oem_partition_lands_in_the_root() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path();
    let m = build(&root_recipe(), out);
    let cmdline = m["boot"]["cmdline"].as_str().unwrap().to_string();
    assert!(cmdline.contains("root=PARTUUID="), "{cmdline}");
    // The builder told the agent where the OEM partition is.
    let image = out.join("oem-root.raw");
    let insp = inspect(&image);
    assert!(insp["oem"]["problem"].is_null(), "inspect reads the ext4 OEM partition: {}", insp["oem"]);
    let base = insp["oem"]["config"].clone();
    let log = boot(out, "oem-root", &format!("{cmdline} oem.hostname=cmdline-host oem.site.rack=9"), &[]);
    assert_eq!(tagged(&log, "OEM-HOSTNAME"), ["cmdline-host"], "{log}");
    let mut want = base;
    merge(&mut want, serde_json::from_str(SITE).unwrap());
    merge(&mut want, json!({"hostname": "cmdline-host", "site": {"rack": 9}}));
    assert_eq!(one_json(&log, "OEM-JSON"), want, "/run/agent/oem.json in the real root");
    let prov = one_json(&log, "OEM-PROV");
    assert_eq!(prov["hostname"], "40-cmdline");
    assert_eq!(prov["user"], "20-recipe");
    assert_eq!(prov["site.rack"], "40-cmdline");
    let mounts = tagged(&log, "OEM-MOUNT");
    assert!(mounts.len() == 1 && mounts[0].contains(" ext4 ro,"), "OEM partition at /usr/share/oem in the root: {mounts:?}\n{log}");
    assert_eq!(tagged(&log, "OEM-CONFIG"), ["{"]);
    assert!(log.contains("oem: moved the OEM partition"), "{log}");
    assert!(log.contains("oem: hostname cmdline-host (from 40-cmdline)"), "{log}");
    assert!(log.contains("no network interfaces, nothing to configure"), "no NIC, no 2 s wait for one: {log}");
}

/// `inspect` reads config.json, the layers and config.d from ext4 and btrfs
/// OEM partitions, as from FAT, with each key's layer.
#[test]
fn inspect_reads_ext4_and_btrfs_oem_partitions() {
    for fs_kind in ["ext4", "btrfs", "vfat"] {
        let t = tempfile::tempdir().unwrap();
        let mut r = root_recipe();
        r["name"] = json!(format!("oem-{fs_kind}"));
        r["disk"]["partitions"][1]["filesystem"] = json!(fs_kind);
        r["outputs"] = json!(["raw"]);
        r.as_object_mut().unwrap().remove("kernel");
        r["disk"]["partitions"].as_array_mut().unwrap().truncate(2);
        build(&r, t.path());
        let insp = inspect(&t.path().join(format!("oem-{fs_kind}.raw")));
        let oem = &insp["oem"];
        assert!(oem["problem"].is_null(), "{fs_kind}: {oem}");
        assert_eq!(oem["config"]["user"], "admin", "{fs_kind}: {oem}");
        assert_eq!(oem["config_d"], json!(["50-site.json"]), "{fs_kind}: {oem}");
        let by = |k: &str| {
            oem["keys"].as_array().unwrap().iter().find(|e| e["key"] == k).unwrap_or_else(|| panic!("{k} missing: {oem}")).clone()
        };
        assert_eq!(by("hostname")["layer"], "30-config.d-50-site", "{fs_kind}");
        assert_eq!(by("hostname")["value"], "site-host", "{fs_kind}");
        assert_eq!(by("user")["layer"], "20-recipe", "{fs_kind}");
        assert_eq!(by("network.networks")["layer"], "10-platform-qemu", "{fs_kind}");
        assert_eq!(oem["effective"]["hostname"], "site-host", "{fs_kind}");
    }
}

/// The kernel command line `inspect` is tested with: layer 40 over the
/// site file's hostname and rack, the site's row left alone.
const CMDLINE_OEM: &str = "oem.hostname=from-cmdline oem.site.rack=7";
const SITE_ROW: &str = "{\"hostname\": \"site-host\", \"site\": {\"rack\": 3, \"row\": \"b\"}}\n";

/// An appliance that boots by UEFI (UKI) and BIOS (GRUB) with `cmdline`,
/// OEM partition (vfat) with the site file.
fn cmdline_recipe(name: &str, cmdline: &str, firmware: &[&str]) -> Value {
    let mut parts = vec![json!({ "label": "ESP", "type": "esp", "size": "64MiB" })];
    if firmware.contains(&"bios") {
        parts.push(json!({ "label": "bios", "type": "bios-boot", "size": "1MiB" }));
    }
    parts.push(json!({ "label": "OEM", "type": "linux", "size": "34MiB", "filesystem": "vfat", "tree": "oemtree" }));
    json!({
        "name": name,
        "source_date_epoch": 1700000000,
        "trees": { "oemtree": [ { "file": "/config.d/50-site.json", "content": SITE_ROW } ] },
        "kernel": { "package": "linux-image-cloud-amd64", "cmdline": cmdline, "modules": ["virtio_blk"] },
        "oem": { "platform": "qemu", "user": "admin" },
        "boot": { "firmware": firmware },
        "disk": { "partitions": parts },
        "outputs": ["raw"]
    })
}

/// The `.cmdline` section of the image's UKI, read with the peer tools:
/// `mcopy` out of the ESP, `objcopy --dump-section`.
fn uki_section(image: &Path, esp_offset: u64, w: &Path) -> String {
    let efi = w.join("BOOTX64.EFI");
    let (ok, out) =
        tool("mcopy", &["-n", "-i", &format!("{}@@{esp_offset}", image.display()), "::/EFI/BOOT/BOOTX64.EFI", efi.to_str().unwrap()]);
    assert!(ok, "mcopy: {out}");
    let dump = w.join("cmdline.bin");
    let (ok, out) = tool(
        "objcopy",
        &["--dump-section", &format!(".cmdline={}", dump.display()), efi.to_str().unwrap(), w.join("scratch.efi").to_str().unwrap()],
    );
    assert!(ok, "objcopy: {out}");
    String::from_utf8(fs::read(dump).unwrap()).unwrap().trim_end_matches('\0').trim().to_string()
}

/// Each key of `inspect --json`'s `oem.keys` → (value, layer).
fn keys_of(insp: &Value) -> std::collections::BTreeMap<String, (Value, String)> {
    insp["oem"]["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no oem.keys: {insp}"))
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_string(), (k["value"].clone(), k["layer"].as_str().unwrap().to_string())))
        .collect()
}

/// `inspect` reads the command line the image boots with (the UKI's
/// `.cmdline`, GRUB's embedded config) and applies its `oem.*` keys as
/// layer 40 over the OEM partition's config.d; the same image without them
/// has no layer 40 and the same provenance for every other key.
#[test]
fn inspect_applies_the_images_kernel_cmdline_as_layer_40() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let with = cmdline_recipe("cmdline40", &format!("console=ttyS0,115200 {CMDLINE_OEM} quiet"), &["uefi", "bios"]);
    let (_, said) = build_said(&with, &w.join("a"));
    assert!(!said.contains("warning"), "GRUB carries these parameters unchanged: no warning: {said}");
    let image = w.join("a/cmdline40.raw");
    let a = inspect(&image);
    let c = &a["cmdline"];
    // The UKI's section as objcopy sees it is what inspect shows.
    let esp = a["partitions"].as_array().unwrap().iter().find(|p| p["type_name"] == "esp").unwrap();
    let section = uki_section(&image, esp["offset"].as_u64().unwrap(), w);
    assert!(section.contains(CMDLINE_OEM), "{section}");
    assert_eq!(c["uefi"]["cmdline"], section.as_str(), "{c}");
    assert!(c["bios"]["cmdline"].as_str().unwrap().contains(CMDLINE_OEM), "{c}");
    assert!(c["mismatch"].is_null(), "the same parameters both ways: {c}");
    assert_eq!(c["oem_from"], "uefi");
    // Layer 40 is what the agent's parser (the shared one) makes of that line.
    let agent40 = oem_rules::cmdline_layer(&section).0.expect("oem.* keys");
    assert_eq!(c["oem"], agent40);
    assert_eq!(a["oem"]["cmdline"], agent40);

    // The same image without oem.* on its command line.
    let without = cmdline_recipe("cmdline40", "console=ttyS0,115200 quiet", &["bios"]);
    build(&without, &w.join("b"));
    let b = inspect(&w.join("b/cmdline40.raw"));
    assert!(b["cmdline"]["bios"]["cmdline"].as_str().unwrap().ends_with("console=ttyS0,115200 quiet"), "{}", b["cmdline"]);
    assert!(b["cmdline"]["uefi"].is_null(), "{}", b["cmdline"]);
    assert_eq!(b["cmdline"]["oem_from"], "bios");
    assert!(b["cmdline"]["oem"].is_null() && b["oem"]["cmdline"].is_null(), "no layer 40: {b}");
    let (ka, kb) = (keys_of(&a), keys_of(&b));
    assert!(kb.values().all(|(_, layer)| layer != "40-cmdline"), "{kb:?}");
    assert_eq!(kb["hostname"], (json!("site-host"), "30-config.d-50-site".to_string()));
    assert_eq!(ka["hostname"], (json!("from-cmdline"), "40-cmdline".to_string()));
    assert_eq!(ka["site.rack"], (json!(7), "40-cmdline".to_string()));
    // Every other key: the same value from the same layer as without layer 40.
    let rest = |k: &std::collections::BTreeMap<String, (Value, String)>| {
        k.iter().filter(|(n, _)| !["hostname", "site.rack"].contains(&n.as_str())).map(|(n, v)| (n.clone(), v.clone())).collect::<Vec<_>>()
    };
    assert_eq!(rest(&ka), rest(&kb));
    assert_eq!(ka["site.row"].1, "30-config.d-50-site");
    let mut want = b["oem"]["effective"].clone();
    merge(&mut want, agent40);
    assert_eq!(a["oem"]["effective"], want);
    // The human output shows both lines and the layer.
    let o = run(&root(), &["inspect", image.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("UEFI (partition 1, /EFI/BOOT/BOOTX64.EFI): {section}")), "{text}");
    assert!(text.contains("BIOS (partition 2, GRUB core image): BOOT_IMAGE=/boot/vmlinuz"), "{text}");
    assert!(text.lines().any(|l| l.contains("hostname") && l.contains("40-cmdline") && l.contains("from-cmdline")), "{text}");
}

/// A JSON value with double quotes reaches the kernel only through the
/// UKI: GRUB's config cannot carry them. The build warns (naming the
/// field, the parameter and the fix), `inspect` says so and takes layer
/// 40 from the UEFI line.
#[test]
fn inspect_reports_uefi_and_bios_command_lines_that_differ() {
    let t = tempfile::tempdir().unwrap();
    let keys = r#"oem.ssh_authorized_keys=["ssh-ed25519 AAAA me"]"#;
    let r = cmdline_recipe("cmdline-differ", &format!("console=ttyS0,115200 {keys} oem.bare"), &["uefi", "bios"]);
    let (_, said) = build_said(&r, t.path());
    let warning = said
        .lines()
        .find(|l| l.starts_with("warning: kernel.cmdline: GRUB (boot.firmware \"bios\") hands the kernel"))
        .unwrap_or_else(|| panic!("no warning: {said}"));
    eprintln!("{warning}");
    assert!(warning.contains(keys) && warning.contains("`oem` section"), "{warning}");
    let insp = inspect(&t.path().join("cmdline-differ.raw"));
    let c = &insp["cmdline"];
    let (uefi, bios) = (c["uefi"]["cmdline"].as_str().unwrap(), c["bios"]["cmdline"].as_str().unwrap());
    let (u40, b40) = (oem_rules::cmdline_layer(uefi).0.unwrap(), oem_rules::cmdline_layer(bios).0.unwrap());
    assert_ne!(u40, b40, "the agent sees different keys: {uefi} / {bios}");
    assert!(u40["ssh_authorized_keys"].is_array(), "{u40}");
    let m = c["mismatch"].as_str().unwrap_or_else(|| panic!("no mismatch: {c}"));
    assert!(m.contains(keys) && m.contains("oem.* keys differ"), "{m}");
    assert_eq!(c["oem_from"], "uefi");
    assert_eq!(c["oem"], u40);
    assert_eq!(keys_of(&insp)["ssh_authorized_keys"], (json!(["ssh-ed25519 AAAA me"]), "40-cmdline".to_string()));
    let skipped = c["skipped"].as_array().unwrap();
    assert!(skipped.len() == 1 && skipped[0].as_str().unwrap().contains("oem.bare"), "{c}");
}
