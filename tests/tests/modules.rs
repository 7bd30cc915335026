//! The modules the builder adds for the boot path, booted for real under
//! qemu TCG with the guest agent (`./build.sh agent`) and the pinned
//! packages (`./build.sh fetch`):
//!
//! * a root recipe whose `kernel.modules` is only `["virtio_blk"]` finds its
//!   root on the virtio disk (the builder adds `virtio_pci`, the transport
//!   `.modinfo` does not name, and the root's filesystem): ext4 and btrfs,
//!   each by UEFI and by BIOS;
//! * a vpc-platform appliance that lists no NLS module reads its vfat
//!   config drive (the builder adds `vfat`, `nls_cp437`, `nls_utf8`, `isofs`);
//! * `"drivers": "generic"` with no module listed reads an ISO 9660 config
//!   drive on an IDE CD-ROM (`ata_piix`, `sr_mod` from the generic set), and
//!   the agent skips the Hyper-V and Xen drivers, which find no device
//!   under qemu, without a failure.

mod common;

use std::fs;
use std::path::Path;
use std::time::Instant;

use common::*;

/// Build `recipe` (from a folder inside the project, so package names
/// resolve through kernel/packages.lock) into `out` without `-q`; returns
/// the build's progress output and the manifest.
fn build(recipe: &serde_json::Value, out: &Path) -> (String, serde_json::Value) {
    let name = recipe["name"].as_str().unwrap();
    let dir = root().join("out/test-recipes");
    fs::create_dir_all(&dir).unwrap();
    let rdir = tempfile::tempdir_in(&dir).unwrap();
    let r = rdir.path().join(format!("{name}.json"));
    fs::write(&r, serde_json::to_string_pretty(recipe).unwrap()).unwrap();
    let log = run_ok(&root(), &["build", r.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let m = serde_json::from_slice(&fs::read(out.join(format!("{name}.manifest.json"))).unwrap()).unwrap();
    (log, m)
}

/// The manifest's `boot.modules` (load order).
fn modules(m: &serde_json::Value) -> Vec<String> {
    m["boot"]["modules"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// The manifest's `boot.modules_added` as (name, reason).
fn added(m: &serde_json::Value) -> Vec<(String, String)> {
    let a = m["boot"]["modules_added"].as_array().cloned().unwrap_or_default();
    a.iter().map(|e| (e["name"].as_str().unwrap().to_string(), e["reason"].as_str().unwrap().to_string())).collect()
}

/// A bootable root of `fs` whose `kernel.modules` is only `virtio_blk`; its
/// init prints how `/` is mounted and the marker.
fn root_recipe(fs: &str) -> serde_json::Value {
    let name = format!("modules-{fs}");
    let init = format!(
        "#!/bin/busybox sh\nbusybox mount -t proc proc /proc 2>/dev/null\necho \"root: $(busybox awk '$2 == \"/\" {{print $1, $3}}' /proc/mounts)\"\necho '{name}: READY'\nwhile :; do busybox sleep 3600; done\n"
    );
    serde_json::json!({
        "name": name,
        "source_date_epoch": 1700000000,
        "trees": { "root": [
            { "deb": "busybox-static" },
            { "symlink": "/bin/sh", "target": "busybox" },
            { "mkdir": "/proc" }, { "mkdir": "/sys" }, { "mkdir": "/dev" }, { "mkdir": "/run" },
            { "file": "/sbin/init", "mode": "0755", "content": init }
        ]},
        "kernel": { "package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200", "modules": ["virtio_blk"] },
        "boot": { "firmware": ["uefi", "bios"] },
        "smoke": { "expect": format!("{name}: READY") },
        "disk": { "partitions": [
            { "label": "ESP", "type": "esp", "size": "64MiB" },
            { "label": "BIOS", "type": "bios-boot", "size": "1MiB" },
            { "label": "root", "type": "root-x86-64", "size": "auto", "filesystem": fs, "tree": "root" }
        ]},
        "outputs": ["raw"]
    })
}

/// `build-image boot` by `firmware` to the recipe's marker (the disk is
/// virtio, as in the clouds); returns the serial log.
fn boot_to_marker(image: &Path, firmware: &str) -> String {
    let t0 = Instant::now();
    let o = run(&root(), &["boot", "-q", image.to_str().unwrap(), "--firmware", firmware, "--accel", "tcg", "--timeout", "150"]);
    let mut log = image.to_path_buf().into_os_string();
    log.push(".serial.log");
    let serial = String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    assert!(
        o.status.success(),
        "{} did not reach its marker by {firmware}:\n{}\n{serial}",
        image.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{} by {firmware}: marker after {:.1} s", image.display(), t0.elapsed().as_secs_f64());
    serial
}

/// Build the root recipe of `fs`, check what the builder says it added,
/// and boot it by both firmwares to its marker with `/` on the virtio disk.
fn only_virtio_blk_boots(fs: &str, root_line: &str) {
    let t = tempfile::tempdir().unwrap();
    let (log, m) = build(&root_recipe(fs), t.path());
    for line in ["modules: + virtio_pci (transport for virtio_blk)", root_line] {
        assert!(log.lines().any(|l| l == line), "the build does not say `{line}`:\n{log}");
    }
    assert!(added(&m).contains(&("virtio_pci".into(), "transport for virtio_blk".into())), "{m}");
    let mods = modules(&m);
    let at = |n: &str| mods.iter().position(|m| m == n).unwrap_or_else(|| panic!("{n} not in {mods:?}"));
    assert!(at("virtio_pci") < at("virtio_blk"), "the transport loads first: {mods:?}");
    let image = t.path().join(format!("modules-{fs}.raw"));
    for firmware in ["uefi", "bios"] {
        let serial = boot_to_marker(&image, firmware);
        assert!(serial.contains(&format!("root: /dev/vda3 {fs}")), "{fs} by {firmware}: / is not the virtio disk's root:\n{serial}");
        assert!(!serial.contains("FAILED"), "{fs} by {firmware}:\n{serial}");
    }
}

#[test]
fn ext4_root_with_only_virtio_blk_boots_by_uefi_and_bios() {
    only_virtio_blk_boots("ext4", "modules: ext4 (root filesystem, disk.partitions[2]) is built into the kernel: nothing to add");
}

#[test]
fn btrfs_root_with_only_virtio_blk_boots_by_bios_and_uefi() {
    only_virtio_blk_boots("btrfs", "modules: + btrfs (root filesystem, disk.partitions[2])");
}

/// An initramfs-only appliance on the vpc platform (config drive, then the
/// metadata service) that prints its host name; `kernel` is merged over
/// the kernel section.
fn vpc_appliance(name: &str, kernel: serde_json::Value) -> serde_json::Value {
    let mut k = serde_json::json!({ "package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200 panic=-1" });
    for (key, v) in kernel.as_object().unwrap() {
        k[key] = v.clone();
    }
    serde_json::json!({
        "name": name,
        "source_date_epoch": 1700000000,
        "trees": { "initrd": [{ "deb": "busybox-static" }, { "symlink": "/bin/sh", "target": "busybox" }] },
        "initramfs": { "tree": "initrd" },
        "kernel": k,
        "oem": { "platform": "vpc" },
        "init": ["/bin/busybox", "sh", "-c", format!("echo \"{name}: hostname $(busybox hostname)\"")],
        "outputs": ["kernel+initramfs"]
    })
}

/// Direct kernel boot of the appliance with `extra` qemu arguments until
/// it powers off; returns the serial log.
fn boot_appliance(dir: &Path, name: &str, m: &serde_json::Value, extra: &[&str]) -> String {
    let cmdline = m["boot"]["cmdline"].as_str().unwrap();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let log = dir.join(format!("{name}.serial.log"));
    let (exited, took, serial) =
        boot_to_poweroff(&dir.join(format!("{name}.vmlinuz")), &dir.join(format!("{name}.initramfs")), cmdline, &extra, &log);
    assert!(exited, "{name} did not power off:\n{serial}");
    eprintln!("{name}: powered off after {:.1} s", took.as_secs_f64());
    serial
}

fn meta_data(host: &str) -> String {
    serde_json::json!({ "uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "name": host, "hostname": host }).to_string()
}

/// The user's report: a VPC recipe without `nls_cp437`/`nls_utf8` could
/// not mount its vfat config drive (`EINVAL`) and fell back to DHCP.
#[test]
fn vpc_appliance_without_nls_modules_reads_its_vfat_config_drive() {
    let t = tempfile::tempdir().unwrap();
    let name = "modules-vpc";
    let (log, m) = build(&vpc_appliance(name, serde_json::json!({ "modules": ["virtio_blk"] })), t.path());
    for module in ["vfat", "nls_cp437", "nls_utf8", "isofs"] {
        let line = format!("modules: + {module} (config drive, platform vpc)");
        assert!(log.lines().any(|l| l == line), "the build does not say `{line}`:\n{log}");
    }
    let drive = config_drive(t.path(), &[("meta_data.json", &meta_data("vpc-from-drive"))]);
    let disk = format!("file={},format=raw,if=virtio,readonly=on", drive.display());
    let serial = boot_appliance(t.path(), name, &m, &["-drive", &disk]);
    assert!(serial.contains("cloud: config drive /dev/vda (vfat)"), "{serial}");
    assert!(!serial.contains("config drive unusable"), "{serial}");
    assert!(serial.contains(&format!("{name}: hostname vpc-from-drive")), "the drive's host name was not applied:\n{serial}");
}

/// `"drivers": "generic"` and no module listed: the IDE controller, the
/// CD-ROM driver and isofs come from the generic set and the platform, and
/// what the cloud kernel has built in (nvme) or lacks (ahci) is reported.
#[test]
fn generic_drivers_read_an_iso_config_drive_on_an_ide_cdrom() {
    let t = tempfile::tempdir().unwrap();
    let name = "modules-generic";
    let (log, m) = build(&vpc_appliance(name, serde_json::json!({ "drivers": "generic" })), t.path());
    for line in [
        "modules: + ata_piix (drivers: generic)",
        "modules: + sr_mod (drivers: generic)",
        "modules: + isofs (config drive, platform vpc)",
        "modules: nvme (drivers: generic) is built into the kernel: nothing to add",
        "modules: ahci (drivers: generic) is not in linux-image-cloud-amd64: skipped",
    ] {
        assert!(log.lines().any(|l| l == line), "the build does not say `{line}`:\n{log}");
    }
    let mods = modules(&m);
    for needed in ["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "hv_vmbus", "hv_storvsc", "vmw_pvscsi", "xen_blkfront"] {
        assert!(mods.iter().any(|m| m == needed), "{needed} not in {mods:?}");
    }
    let iso = iso_config_drive(t.path(), &[("meta_data.json", &meta_data("iso-from-cdrom"))]);
    // As Nova attaches it on a `pc` machine: a read-only CD-ROM on the IDE bus.
    let cdrom = format!("file={},format=raw,if=ide,media=cdrom,readonly=on", iso.display());
    let serial = boot_appliance(t.path(), name, &m, &["-drive", &cdrom]);
    assert!(serial.contains("cloud: config drive /dev/sr0 (iso9660)"), "{serial}");
    assert!(serial.contains(&format!("{name}: hostname iso-from-cdrom")), "the drive's host name was not applied:\n{serial}");
    // The Hyper-V and Xen drivers find no device under qemu: the agent
    // says so and skips what needs them, without a failure.
    for line in [
        "hv_vmbus: no device for it here (ENODEV): not loaded",
        "hv_storvsc: not loaded: it needs hv_vmbus, which has no device here",
        "hv_netvsc: not loaded: it needs hv_vmbus, which has no device here",
        "xen_blkfront: no device for it here (ENODEV): not loaded",
    ] {
        assert!(serial.contains(line), "no `{line}` in:\n{serial}");
    }
    assert!(!serial.contains("FAILED"), "{serial}");
}
