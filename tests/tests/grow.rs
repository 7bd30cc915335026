//! First-boot grow, booted under qemu TCG: an image built for a ~400 MiB
//! disk, copied onto a 1 GiB "disk" (`truncate`), grows its last partition
//! and root filesystem on the first boot, finds nothing to do on the
//! second, and leaves a table `sgdisk -v` and a filesystem `e2fsck -fn` /
//! `btrfs check` call clean. Needs the static agent (`./build.sh agent`) and
//! the pinned packages (`./build.sh fetch`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DISK: u64 = 1 << 30;
const MARKER: &str = "GROW-TEST: DONE";

/// The recipe: ESP 64 MiB and a root of `fs` that fills a 400 MiB disk and
/// grows. Its init prints `df -k /` and the marker, then powers off.
fn recipe(fs: &str) -> serde_json::Value {
    let init = format!(
        "#!/bin/busybox sh\nbusybox mount -t proc proc /proc 2>/dev/null\necho \"GROW-DF: $(busybox df -k / | busybox tail -n 1)\"\necho \"GROW-ROOT: $(busybox awk '$2 == \"/\" {{print $1, $3}}' /proc/mounts)\"\necho '{MARKER}'\nbusybox sync\nbusybox poweroff -f\n"
    );
    serde_json::json!({
        "name": format!("grow-{fs}"),
        "source_date_epoch": 1700000000,
        "trees": {
            "root": [
                { "deb": "busybox-static" },
                { "symlink": "/bin/sh", "target": "busybox" },
                { "mkdir": "/proc" }, { "mkdir": "/sys" }, { "mkdir": "/dev" }, { "mkdir": "/run" },
                { "mkdir": "/tmp", "mode": "1777" },
                { "file": "/sbin/init", "mode": "0755", "content": init }
            ]
        },
        "kernel": {
            "package": "linux-image-cloud-amd64",
            "cmdline": "console=ttyS0,115200",
            "modules": ["virtio_pci", "virtio_blk"]
        },
        "boot": { "firmware": ["uefi"] },
        "disk": {
            "size": "400MiB",
            "partitions": [
                { "label": "ESP", "type": "esp", "size": "64MiB" },
                { "label": "root", "type": "root-x86-64", "size": "fill", "filesystem": fs, "tree": "root", "grow": true }
            ]
        },
        "outputs": ["raw"]
    })
}

/// Build the recipe (from a folder inside the project, so that package names
/// resolve through kernel/packages.lock) into `out`; returns the raw image
/// and the manifest.
fn build(fs: &str, out: &Path) -> (PathBuf, serde_json::Value) {
    let dir = root().join("out/test-recipes");
    fs::create_dir_all(&dir).unwrap();
    let rdir = tempfile::tempdir_in(&dir).unwrap();
    let r = rdir.path().join(format!("grow-{fs}.json"));
    fs::write(&r, serde_json::to_string_pretty(&recipe(fs)).unwrap()).unwrap();
    run_ok(&root(), &["-q", "build", r.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let m = serde_json::from_slice(&fs::read(out.join(format!("grow-{fs}.manifest.json"))).unwrap()).unwrap();
    (out.join(format!("grow-{fs}.raw")), m)
}

/// Boot `image` (read-write, no snapshot) by UEFI until the guest powers
/// off; returns the serial log.
fn boot(image: &Path, work: &Path, n: u32) -> String {
    let vars = work.join("vars.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let log = work.join(format!("serial-{n}.log"));
    let mut q = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
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
    assert!(text.contains(MARKER), "boot {n}: no marker:\n{text}");
    eprintln!("boot {n}: {:?}", start.elapsed());
    text
}

/// Size of `/` in KiB from the init's `GROW-DF:` line.
fn root_kib(log: &str) -> u64 {
    let l = log.lines().find_map(|l| l.split_once("GROW-DF: ").map(|x| x.1)).unwrap_or_else(|| panic!("no GROW-DF line:\n{log}"));
    l.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad df line {l:?}"))
}

fn agent_lines(log: &str) -> String {
    log.lines().filter(|l| l.contains("grow:")).collect::<Vec<_>>().join("\n")
}

fn grows(fs: &str) {
    let t = tempfile::tempdir().unwrap();
    let (raw, m) = build(fs, t.path());
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
    assert!(!g.contains("FAILED"), "boot 1:\n{log1}");
    let kib1 = root_kib(&log1);
    assert!(kib1 >= 900 * 1024, "/ is only {kib1} KiB after growing:\n{log1}");
    assert!(log1.contains(&format!("GROW-ROOT: /dev/vda2 {fs}")), "{log1}");

    // The table on the grown disk.
    let (ok, out) = tool("sgdisk", &["-v", disk.to_str().unwrap()]);
    assert!(ok && out.contains("No problems found"), "sgdisk -v after growing:\n{out}");
    let parts = sfdisk(&disk);
    let (_, _, start, size) = parts[1].clone();
    assert_eq!((start + size) % (1 << 20), 0, "the grown partition ends on a MiB boundary");
    assert!(start + size > DISK - (2 << 20), "the partition ends at {} of {DISK}", start + size);

    // Second boot: nothing to do, nothing changes.
    let log2 = boot(&disk, t.path(), 2);
    let g2 = agent_lines(&log2);
    eprintln!("{g2}");
    assert!(g2.contains("nothing to grow"), "boot 2:\n{log2}");
    assert!(!g2.contains("moved the backup GPT") && !g2.contains("FAILED"), "boot 2:\n{log2}");
    assert_eq!(root_kib(&log2), kib1);
    assert_eq!(sfdisk(&disk), parts);

    // The filesystem, checked by its own tool.
    let part = t.path().join("root.img");
    extract(&disk, start, size, &part);
    let (ok, out) = match fs {
        "ext4" => tool("e2fsck", &["-fn", part.to_str().unwrap()]),
        _ => tool("btrfs", &["check", "--readonly", part.to_str().unwrap()]),
    };
    assert!(ok, "{fs} check of the grown root:\n{out}");
}

#[test]
fn ext4_root_grows_on_first_boot() {
    grows("ext4");
}

#[test]
fn btrfs_root_grows_on_first_boot() {
    grows("btrfs");
}
