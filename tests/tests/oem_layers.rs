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
//! * no boot: the agent's and the builder's merges give the same result and
//!   provenance for random layers (proptest), and `inspect` reads the OEM
//!   files from ext4 and btrfs partitions.
//!
//! Needs the static agent (`./build.sh agent`) and the pinned packages
//! (`./build.sh fetch`).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
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
    let name = recipe["name"].as_str().unwrap();
    let dir = root().join("out/test-recipes");
    fs::create_dir_all(&dir).unwrap();
    let rdir = tempfile::tempdir_in(&dir).unwrap();
    let r = rdir.path().join(format!("{name}.json"));
    fs::write(&r, serde_json::to_string_pretty(recipe).unwrap()).unwrap();
    run_ok(&root(), &["-q", "build", r.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    serde_json::from_slice(&fs::read(out.join(format!("{name}.manifest.json"))).unwrap()).unwrap()
}

/// Direct kernel boot of NAME's kernel+initramfs in `out` with NAME.raw as
/// a virtio disk (a copy: the boot must not change the built image),
/// `extra` qemu arguments; waits for power-off. Returns the serial log.
fn boot(out: &Path, name: &str, cmdline: &str, extra: &[&str]) -> String {
    let disk = out.join("disk.raw");
    fs::copy(out.join(format!("{name}.raw")), &disk).unwrap();
    let log = out.join("serial.log");
    let mut q = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(out.join(format!("{name}.vmlinuz")))
        .arg("-initrd")
        .arg(out.join(format!("{name}.initramfs")))
        .arg("-append")
        .arg(cmdline)
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let start = Instant::now();
    let exited = loop {
        if q.try_wait().unwrap().is_some() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(400) {
            let _ = q.kill();
            let _ = q.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    assert!(exited, "{name} did not power off in {:?}:\n{text}", start.elapsed());
    assert!(text.lines().any(|l| l.trim_end() == DONE), "{name}: no marker:\n{text}");
    eprintln!("{name}: booted and powered off in {:?}", start.elapsed());
    for l in text.lines().filter(|l| l.contains("oem:") || l.contains("net:") || l.contains("network configured") || l.starts_with("OEM-")) {
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
    build_image::recipe::merge(into, over);
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
    let broken = log.lines().find(|l| l.contains("60-broken.json is malformed, skipped")).unwrap_or_else(|| panic!("no log line for the broken file:\n{log}"));
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
        let by = |k: &str| oem["keys"].as_array().unwrap().iter().find(|e| e["key"] == k).unwrap_or_else(|| panic!("{k} missing: {oem}")).clone();
        assert_eq!(by("hostname")["layer"], "30-config.d-50-site", "{fs_kind}");
        assert_eq!(by("hostname")["value"], "site-host", "{fs_kind}");
        assert_eq!(by("user")["layer"], "20-recipe", "{fs_kind}");
        assert_eq!(by("network.networks")["layer"], "10-platform-qemu", "{fs_kind}");
        assert_eq!(oem["effective"]["hostname"], "site-host", "{fs_kind}");
    }
}

// --------------------------------------------- agent merge == builder merge

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), (0i64..5).prop_map(Value::from), "[ab]{0,2}".prop_map(Value::from)]
}

/// JSON values over a 3-key alphabet, so layers collide on the same paths.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[xyz]", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn layer() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[xyz]", json_value(), 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn agent_and_builder_merge_layers_the_same_way(layers in prop::collection::vec(layer(), 1..5)) {
        let named: Vec<(String, Value)> = layers.into_iter().enumerate().map(|(i, v)| (format!("{i:02}-l.json"), v)).collect();
        let (bm, bp) = build_image::oem::merge_layers(&named);
        let (am, ap) = guest_agent::oem::merge_layers(&named);
        prop_assert_eq!(&am, &bm);
        prop_assert_eq!(&ap, &bp);
        // And the plain merge is the builder's recipe merge.
        let mut m = Value::Object(Default::default());
        for (_, v) in &named {
            guest_agent::oem::merge(&mut m, v.clone());
        }
        prop_assert_eq!(m, bm);
    }
}
