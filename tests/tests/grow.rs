//! First-boot grow, booted under qemu TCG: an image built for a ~400 MiB
//! disk, copied onto a 1 GiB "disk" (`truncate`), grows its last partition
//! and root filesystem on the first boot, finds nothing to do on the
//! second, and leaves a table `sgdisk -v` and a filesystem `e2fsck -fn` /
//! `btrfs check` call clean. Needs the pinned packages (`./build.sh fetch`);
//! the agent is the one built into build-image.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DISK: u64 = 1 << 30;
const MARKER: &str = "GROW-TEST: DONE";

/// Shell lines that print `df -k PATH` and the mount, then the marker, and
/// power off.
fn report(path: &str) -> String {
    format!(
        "echo \"GROW-DF: $(busybox df -k {path} | busybox tail -n 1)\"\necho \"GROW-MNT: $(busybox awk '$2 == \"{path}\" {{print $1, $3}}' /proc/mounts)\"\necho '{MARKER}'\nbusybox sync\nbusybox poweroff -f\n"
    )
}

const KERNEL_AND_BOOT: &str = r#"{
    "kernel": { "package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200", "modules": ["virtio_pci", "virtio_blk"] },
    "boot": { "firmware": ["uefi"] },
    "outputs": ["raw"]
}"#;

fn with_kernel(mut r: serde_json::Value) -> serde_json::Value {
    let k: serde_json::Value = serde_json::from_str(KERNEL_AND_BOOT).unwrap();
    for (key, v) in k.as_object().unwrap() {
        r[key] = v.clone();
    }
    r
}

fn root_layers(init: &str) -> serde_json::Value {
    serde_json::json!([
        { "deb": "busybox-static" },
        { "symlink": "/bin/sh", "target": "busybox" },
        { "mkdir": "/proc" }, { "mkdir": "/sys" }, { "mkdir": "/dev" }, { "mkdir": "/run" }, { "mkdir": "/data" },
        { "mkdir": "/tmp", "mode": "1777" },
        { "file": "/sbin/init", "mode": "0755", "content": init }
    ])
}

/// ESP 64 MiB and a root of `fs` that fills a 400 MiB disk and grows. Its
/// init prints `df -k /` and the marker, then powers off.
fn root_recipe(fs: &str) -> serde_json::Value {
    let init = format!("#!/bin/busybox sh\nbusybox mount -t proc proc /proc 2>/dev/null\n{}", report("/"));
    with_kernel(serde_json::json!({
        "name": format!("grow-{fs}"),
        "source_date_epoch": 1700000000,
        "trees": { "root": root_layers(&init) },
        "disk": {
            "size": "400MiB",
            "partitions": [
                { "label": "ESP", "type": "esp", "size": "64MiB" },
                { "label": "root", "type": "root-x86-64", "size": "fill", "filesystem": fs, "tree": "root", "grow": true }
            ]
        }
    }))
}

/// A fixed-size ext4 root and an empty ext4 data partition (the last one)
/// that grows: the agent mounts it for the resize only; the root's init
/// mounts it on /data.
fn data_recipe() -> serde_json::Value {
    let init = format!(
        "#!/bin/busybox sh\nbusybox mount -t proc proc /proc 2>/dev/null\nbusybox mount -t ext4 /dev/vda3 /data\n{}",
        report("/data")
    );
    with_kernel(serde_json::json!({
        "name": "grow-data",
        "source_date_epoch": 1700000000,
        "trees": { "root": root_layers(&init) },
        "disk": {
            "size": "400MiB",
            "partitions": [
                { "label": "ESP", "type": "esp", "size": "64MiB" },
                { "label": "root", "type": "root-x86-64", "size": "32MiB", "filesystem": "ext4", "tree": "root" },
                { "label": "data", "type": "linux", "size": "fill", "filesystem": "ext4", "grow": true }
            ]
        }
    }))
}

/// No root: the appliance runs from the initramfs and its data partition
/// (btrfs) grows before the agent starts it.
fn appliance_recipe() -> serde_json::Value {
    // /etc/agent/init holds one argument per line: no newlines in `cmd`.
    let cmd =
        format!("busybox mkdir -p /data && busybox mount -t btrfs /dev/vda2 /data; {}", report("/data").trim_end().replace('\n', "; "));
    with_kernel(serde_json::json!({
        "name": "grow-appliance",
        "source_date_epoch": 1700000000,
        "trees": { "initrd": [ { "deb": "busybox-static" }, { "symlink": "/bin/sh", "target": "busybox" } ] },
        "initramfs": { "tree": "initrd" },
        "init": ["/bin/busybox", "sh", "-c", cmd],
        "disk": {
            "size": "400MiB",
            "partitions": [
                { "label": "ESP", "type": "esp", "size": "64MiB" },
                { "label": "data", "type": "linux", "size": "fill", "filesystem": "btrfs", "grow": true }
            ]
        }
    }))
}

/// Build the recipe (from a folder inside the project, so that package names
/// resolve through kernel/packages.lock) into `out`; returns the raw image
/// and the manifest.
fn build(recipe: &serde_json::Value, out: &Path) -> (PathBuf, serde_json::Value) {
    let name = recipe["name"].as_str().unwrap();
    build_in_project(recipe, out);
    let m = serde_json::from_slice(&fs::read(out.join(format!("{name}.manifest.json"))).unwrap()).unwrap();
    (out.join(format!("{name}.raw")), m)
}

/// Boot `image` (read-write, no snapshot) by UEFI until the guest powers
/// off; returns the serial log.
fn boot(image: &Path, work: &Path, n: u32) -> String {
    boot_by(image, work, n, "uefi")
}

/// [`boot`] by `uefi` (OVMF) or `bios` (SeaBIOS, GRUB from the image).
fn boot_by(image: &Path, work: &Path, n: u32, firmware: &str) -> String {
    let log = work.join(format!("serial-{n}.log"));
    let mut q = Command::new("qemu-system-x86_64");
    q.args(["-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()));
    if firmware == "uefi" {
        let vars = work.join("vars.fd");
        fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
        q.args(["-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    let mut q = q
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let start = Instant::now();
    let exited = loop {
        if let Some(st) = q.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(400) {
            let _ = q.kill();
            let _ = q.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(exited.is_some(), "boot {n} of {} did not power off in {:?}:\n{text}", image.display(), start.elapsed());
    // Whole lines: the agent's log of an appliance's argv contains the text too.
    assert!(text.lines().any(|l| l.trim_end() == MARKER), "boot {n}: no marker:\n{text}");
    eprintln!("boot {n} by {firmware}: {:?}", start.elapsed());
    text
}

/// Size of `/` in KiB from the init's `GROW-DF:` line.
fn root_kib(log: &str) -> u64 {
    let l = log.lines().find_map(|l| l.strip_prefix("GROW-DF: ")).unwrap_or_else(|| panic!("no GROW-DF line:\n{log}"));
    l.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad df line {l:?}"))
}

fn agent_lines(log: &str) -> String {
    log.lines().filter(|l| l.contains("grow:")).collect::<Vec<_>>().join("\n")
}

/// Build `recipe`, put it on a 1 GiB disk, boot twice, check. The growing
/// partition is the last one, `dev` in the guest, holding `fs`, reported on
/// by the init for `path`; `mounted_by_agent`: not the root, so the agent
/// mounts it for the resize.
fn grows(recipe: serde_json::Value, fs: &str, dev: &str, path: &str, mounted_by_agent: bool) {
    let t = tempfile::tempdir().unwrap();
    let (raw, m) = build(&recipe, t.path());
    assert!(m["boot"]["cmdline"].as_str().unwrap().contains("agent.grow="), "no agent.grow= on the cmdline: {}", m["boot"]["cmdline"]);
    let small = fs::metadata(&raw).unwrap().len();
    assert_eq!(small, 400 << 20);
    let disk = t.path().join("disk.raw");
    fs::copy(&raw, &disk).unwrap();
    let (ok, out) = tool("truncate", &["-s", "1G", disk.to_str().unwrap()]);
    assert!(ok, "{out}");

    // First boot: grows.
    let log1 = boot(&disk, t.path(), 1);
    let g = agent_lines(&log1);
    eprintln!("{g}");
    assert!(g.contains("moved the backup GPT"), "boot 1 did not grow the table:\n{log1}");
    assert!(g.contains("BLKPG_RESIZE_PARTITION"), "boot 1 did not tell the kernel:\n{log1}");
    assert!(g.contains("grew from"), "boot 1 did not grow the filesystem:\n{log1}");
    assert_eq!(g.contains("/run/agent-grow"), mounted_by_agent, "{g}");
    assert!(!g.contains("FAILED"), "boot 1:\n{log1}");
    assert!(log1.lines().any(|l| l.trim_end() == format!("GROW-MNT: {dev} {fs}")), "{path} is not {dev} ({fs}):\n{log1}");
    let kib1 = root_kib(&log1);

    // The table on the grown disk.
    let (ok, out) = tool("sgdisk", &["-v", disk.to_str().unwrap()]);
    assert!(ok && out.contains("No problems found"), "sgdisk -v after growing:\n{out}");
    let parts = sfdisk(&disk);
    let (_, _, start, size) = parts.last().unwrap().clone();
    assert_eq!((start + size) % (1 << 20), 0, "the grown partition ends on a MiB boundary");
    assert!(start + size > DISK - (2 << 20), "the partition ends at {} of {DISK}", start + size);
    assert!(
        kib1 * 1024 >= size / 100 * 90 && kib1 >= 850 * 1024,
        "{path} is only {kib1} KiB after growing its {size}-byte partition:\n{log1}"
    );

    // Second boot: nothing to do, nothing changes.
    let log2 = boot(&disk, t.path(), 2);
    let g2 = agent_lines(&log2);
    eprintln!("{g2}");
    assert!(g2.contains("nothing to grow"), "boot 2:\n{log2}");
    assert!(!g2.contains("moved the backup GPT") && !g2.contains("FAILED"), "boot 2:\n{log2}");
    assert_eq!(root_kib(&log2), kib1);
    assert_eq!(sfdisk(&disk), parts);

    // The filesystem, checked by its own tool.
    let part = t.path().join("part.img");
    extract(&disk, start, size, &part);
    let (ok, out) = match fs {
        "ext4" => tool("e2fsck", &["-fn", part.to_str().unwrap()]),
        _ => tool("btrfs", &["check", "--readonly", part.to_str().unwrap()]),
    };
    assert!(ok, "{fs} check of the grown partition:\n{out}");
}

#[test]
fn ext4_root_grows_on_first_boot() {
    grows(root_recipe("ext4"), "ext4", "/dev/vda2", "/", false);
}

#[test]
fn btrfs_root_grows_on_first_boot() {
    grows(root_recipe("btrfs"), "btrfs", "/dev/vda2", "/", false);
}

/// The last partition is not the root: the agent mounts it to grow it.
#[test]
fn ext4_data_partition_grows_on_first_boot() {
    grows(data_recipe(), "ext4", "/dev/vda3", "/data", true);
}

/// No root at all (the appliance runs from the initramfs).
#[test]
fn appliance_data_partition_grows_on_first_boot() {
    grows(appliance_recipe(), "btrfs", "/dev/vda2", "/data", true);
}

/// A boot that grew the table but failed to grow the filesystem (power cut,
/// missing module…) is finished by the next one: here the table is grown
/// on the host by sgdisk, and the agent grows only the filesystem.
#[test]
fn filesystem_grows_when_only_the_table_was_grown() {
    let t = tempfile::tempdir().unwrap();
    let (raw, m) = build(&root_recipe("ext4"), t.path());
    let disk = t.path().join("disk.raw");
    fs::copy(&raw, &disk).unwrap();
    let (ok, out) = tool("truncate", &["-s", "1G", disk.to_str().unwrap()]);
    assert!(ok, "{out}");
    let p = m["disk"]["partitions"].as_array().unwrap().iter().find(|p| p["label"] == "root").unwrap().clone();
    let (_, _, start, _) = sfdisk(&raw)[1].clone();
    let d = disk.to_str().unwrap();
    let (ok, out) = tool("sgdisk", &["-e", d]);
    assert!(ok, "{out}");
    let (ok, out) = tool(
        "sgdisk",
        &[
            "-d",
            "2",
            "-n",
            &format!("2:{}:0", start / 512),
            "-t",
            &format!("2:{}", p["type_guid"].as_str().unwrap()),
            "-u",
            &format!("2:{}", p["part_guid"].as_str().unwrap()),
            "-c",
            "2:root",
            d,
        ],
    );
    assert!(ok, "{out}");
    let log = boot(&disk, t.path(), 1);
    let g = agent_lines(&log);
    eprintln!("{g}");
    assert!(g.contains("the partition table is grown, but the filesystem"), "{log}");
    assert!(g.contains("grew from") && !g.contains("FAILED"), "{log}");
    assert!(root_kib(&log) >= 900 * 1024, "{log}");
    let (ok, out) = tool("sgdisk", &["-v", d]);
    assert!(ok && out.contains("No problems found"), "{out}");
}

/// A disk that boots by BIOS and UEFI: the first boot (BIOS: GRUB in the
/// bios-boot partition, boot.img in the protective MBR) grows it, the second
/// boots the grown disk by UEFI.
#[test]
fn bios_and_uefi_boot_before_and_after_growing() {
    let mut r = root_recipe("ext4");
    r["name"] = "grow-bios".into();
    r["boot"]["firmware"] = serde_json::json!(["uefi", "bios"]);
    let parts = r["disk"]["partitions"].as_array_mut().unwrap();
    parts.insert(1, serde_json::json!({ "label": "BIOS", "type": "bios-boot", "size": "1MiB" }));
    let t = tempfile::tempdir().unwrap();
    let (raw, _) = build(&r, t.path());
    let disk = t.path().join("disk.raw");
    fs::copy(&raw, &disk).unwrap();
    let (ok, out) = tool("truncate", &["-s", "1G", disk.to_str().unwrap()]);
    assert!(ok, "{out}");
    let log1 = boot_by(&disk, t.path(), 1, "bios");
    assert!(agent_lines(&log1).contains("grew from") && !agent_lines(&log1).contains("FAILED"), "{log1}");
    assert!(root_kib(&log1) >= 900 * 1024, "{log1}");
    let (ok, out) = tool("sgdisk", &["-v", disk.to_str().unwrap()]);
    assert!(ok && out.contains("No problems found"), "{out}");
    let log2 = boot_by(&disk, t.path(), 2, "uefi");
    assert!(agent_lines(&log2).contains("nothing to grow"), "{log2}");
    let log3 = boot_by(&disk, t.path(), 3, "bios");
    assert!(agent_lines(&log3).contains("nothing to grow"), "{log3}");
    assert_eq!(root_kib(&log3), root_kib(&log1));
}
