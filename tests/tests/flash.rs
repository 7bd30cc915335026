//! `build-image flash`: onto a file full of old data (checked with sgdisk,
//! fsck.fat and sha256, then booted under qemu TCG by UEFI), and onto loop
//! devices: unmounted (written, every byte, zero chunks by BLKZEROOUT), and
//! mounted (refused, naming the mount).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Build a recipe with an ESP (files in it) and an empty partition.
fn build(w: &Path, name: &str, size: &str, esp: &str) -> PathBuf {
    fs::create_dir_all(w.join("esp/EFI/BOOT")).unwrap();
    fs::write(w.join("esp/EFI/BOOT/BOOTX64.EFI"), bytes(7, 2 << 20)).unwrap();
    fs::write(w.join("esp/readme.txt"), "flashed by build-image\n").unwrap();
    let recipe = serde_json::json!({
        "name": name,
        "trees": {"esp": [{"dir": "esp"}]},
        "disk": {"size": size, "partitions": [
            {"label": "ESP", "type": "esp", "size": esp, "filesystem": "vfat", "tree": "esp"},
            {"label": "data", "type": "linux", "size": "fill"}
        ]},
    });
    fs::write(w.join(format!("{name}.json")), recipe.to_string()).unwrap();
    run_ok(w, &["-q", &format!("{name}.json"), "--out", "out"]);
    w.join("out").join(format!("{name}.raw"))
}

fn fill(path: &Path, len: u64, byte: u8) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let buf = vec![byte; 1 << 20];
    for _ in 0..len >> 20 {
        f.write_all(&buf).unwrap();
    }
}

#[test]
fn flash_onto_a_file_full_of_old_data() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let img = build(w, "fl", "1GiB", "64MiB");
    let target = w.join("disk.img");
    fill(&target, 1 << 30, 0xA5);
    let err = run_ok(w, &["flash", img.to_str().unwrap(), target.to_str().unwrap()]);
    assert!(err.contains("verified"), "{err}");
    let (ok, o) = tool("sgdisk", &["-v", target.to_str().unwrap()]);
    assert!(ok && o.contains("No problems found"), "sgdisk -v: {o}");
    let parts = sfdisk(&target);
    let esp = w.join("esp.fat");
    extract(&target, parts[0].2, parts[0].3, &esp);
    let (ok, o) = tool("fsck.fat", &["-n", esp.to_str().unwrap()]);
    assert!(ok, "fsck.fat -n: {o}");
    assert_eq!(sha256(&target), sha256(&img), "the target reads back as the image");
    // The holes became holes again (a regular file stays sparse).
    use std::os::unix::fs::MetadataExt;
    assert!(fs::metadata(&target).unwrap().blocks() * 512 < 256 << 20);
}

/// The example appliance (recipes/hello.json: kernel, initramfs with the
/// real guest agent, ESP) flashed onto a 1 GiB file full of 0xA5 boots from
/// that file by UEFI and reaches its marker. Needs the pinned packages
/// (`./build.sh fetch`); the agent is the one built into build-image.
#[test]
fn flashed_file_full_of_old_data_boots() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let r = root().join("recipes/hello.json");
    run_ok(&root(), &["-q", "build", r.to_str().unwrap(), "--out", w.to_str().unwrap()]);
    let img = w.join("hello.raw");
    let m: serde_json::Value = serde_json::from_slice(&fs::read(w.join("hello.manifest.json")).unwrap()).unwrap();
    let marker = m["smoke"]["expect"].as_str().expect("hello.json has a smoke marker").to_string();
    let target = w.join("disk.img");
    fill(&target, 1 << 30, 0xA5);
    let err = run_ok(w, &["flash", img.to_str().unwrap(), target.to_str().unwrap()]);
    assert!(err.contains("verified"), "{err}");
    // The disk is bigger than the image, as a real one would be: the
    // image's range of it is the image (its backup GPT at the image's end,
    // where the first-boot grow or a partitioning tool moves it from), and
    // the old data past it is untouched.
    let len = fs::metadata(&img).unwrap().len();
    assert!(len < 1 << 30);
    let head = w.join("head.img");
    extract(&target, 0, len, &head);
    assert_eq!(sha256(&head), sha256(&img), "the image range reads back as the image");
    let (ok, o) = tool("sgdisk", &["-v", head.to_str().unwrap()]);
    assert!(ok && o.contains("No problems found"), "sgdisk -v: {o}");
    let parts = sfdisk(&head);
    let esp = w.join("esp.fat");
    extract(&target, parts[0].2, parts[0].3, &esp);
    let (ok, o) = tool("fsck.fat", &["-n", esp.to_str().unwrap()]);
    assert!(ok, "fsck.fat -n: {o}");
    let mut tail = [0u8; 4096];
    {
        use std::os::unix::fs::FileExt;
        fs::File::open(&target).unwrap().read_exact_at(&mut tail, (1 << 30) - 4096).unwrap();
    }
    assert!(tail.iter().all(|b| *b == 0xA5), "flash wrote past the image");

    let log = w.join("boot.log");
    let o = run(
        w,
        &[
            "boot",
            "-q",
            target.to_str().unwrap(),
            "--firmware",
            "uefi",
            "--accel",
            "tcg",
            "--timeout",
            "240",
            "--expect",
            &marker,
            "--log",
            log.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the flashed file did not boot to {marker:?}:\n{err}");
    let serial = fs::read_to_string(&log).unwrap();
    assert!(serial.contains(&marker), "{serial}");
}

/// A loop device on a file, detached (and unmounted) on drop.
struct Loop {
    dev: String,
    mnt: Option<PathBuf>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = &self.mnt {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn flash_onto_loop_devices_unmounted_and_mounted() {
    if !is_root() {
        eprintln!("skipped: needs root for loop devices");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let img = build(w, "lp", "48MiB", "40MiB");
    let backing = w.join("loop.img");
    fill(&backing, 64 << 20, 0xA5);
    let (ok, dev) = tool("losetup", &["-f", "--show", backing.to_str().unwrap()]);
    if !ok {
        eprintln!("skipped: no loop device here: {dev}");
        return;
    }
    let mut lp = Loop { dev: dev.trim().to_string(), mnt: None };

    // Without --yes and without a terminal: refused, nothing written.
    let o = Command::new(bin()).args(["flash", img.to_str().unwrap(), &lp.dev]).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--yes"), "{err}");

    // With --yes: every byte of the image range is written, zeros included;
    // the zero chunks by BLKZEROOUT (which a loop device takes).
    let err = run_ok(w, &["-q", "flash", "--yes", img.to_str().unwrap(), &lp.dev]);
    assert!(err.contains("verified"), "{err}");
    assert!(err.contains("zeroed by the device, BLKZEROOUT"), "{err}");
    let head = w.join("head.img");
    extract(Path::new(&lp.dev), 0, fs::metadata(&img).unwrap().len(), &head);
    assert_eq!(sha256(&head), sha256(&img), "holes were written as zeros over the 0xA5");

    // Mounted (read-only): refused, naming the mount point. vfat when the
    // kernel has it, else ext4 (some containers' kernels lack vfat).
    let vfat = fs::read_to_string("/proc/filesystems").unwrap_or_default().contains("vfat");
    let (mkfs, fsck) = if vfat { ("mkfs.vfat", "fsck.fat") } else { ("mkfs.ext4", "e2fsck") };
    let mkfs_args: Vec<&str> = if vfat { vec![&lp.dev] } else { vec!["-q", "-F", &lp.dev] };
    let (ok, o) = tool(mkfs, &mkfs_args);
    assert!(ok, "{mkfs}: {o}");
    let mnt = w.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let (ok, o) = tool("mount", &["-o", "ro", &lp.dev, mnt.to_str().unwrap()]);
    assert!(ok, "mount: {o}");
    lp.mnt = Some(mnt.clone());
    let o = run(w, &["flash", "--yes", img.to_str().unwrap(), &lp.dev]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "flashing a mounted device must fail");
    assert!(err.contains("mounted at") && err.contains(mnt.to_str().unwrap()), "{err}");
    // And the filesystem is still there.
    let (ok, o) = tool(fsck, &["-n", &lp.dev]);
    assert!(ok, "{fsck}: {o}");
}

/// Bytes `pid` has written so far (`wchar` of /proc/PID/io), or None once
/// it is gone.
fn written(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|v| v.trim().parse().ok())
}

/// `flash` SIGKILLed half way through the image onto a file full of old
/// data: the first MiB (protective MBR and GPT) still holds the old data
/// while later data is already the image's, so nothing sees a partition
/// table over a half-written disk (`sgdisk -v` finds none) and nothing
/// reported it good; a rerun completes, verifies, and the target reads
/// back as the image.
#[test]
fn flash_killed_half_way_leaves_no_partition_table_and_a_rerun_completes() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    // 128 MiB of data in the ESP, so that the write takes long enough to
    // be caught in the middle.
    fs::create_dir_all(w.join("esp/data")).unwrap();
    for i in 0..4 {
        fs::write(w.join(format!("esp/data/{i}.bin")), bytes(100 + i, 32 << 20)).unwrap();
    }
    let img = build(w, "half", "192MiB", "160MiB");
    let len = fs::metadata(&img).unwrap().len();
    let target = w.join("disk.img");
    let mut caught = None;
    for attempt in 0..10 {
        fill(&target, len, 0xA5);
        let child = Command::new(bin())
            .args(["-q", "flash", img.to_str().unwrap(), target.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut at = None;
        while let Some(n) = written(pid) {
            if n >= len / 3 {
                // SAFETY: kill(2) on the child this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                at = Some(n);
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let o = child.wait_with_output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        if let (Some(n), Some(libc::SIGKILL)) = (at, o.status.signal()) {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("verified"), "a killed flash reported the target good: {err}");
            caught = at;
            eprintln!("flash killed after {n} of {len} bytes written (attempt {attempt})");
            break;
        }
    }
    let at = caught.expect("flash was never caught in the middle of writing in 10 attempts");
    assert!(at < len, "killed after writing it all");

    // The first MiB is the old data; some of the image is already there.
    let data = fs::read(&target).unwrap();
    let image = fs::read(&img).unwrap();
    assert!(data[..1 << 20].iter().all(|b| *b == 0xA5), "the first MiB was written before the rest");
    let same = data.chunks(1 << 20).zip(image.chunks(1 << 20)).skip(1).filter(|(a, b)| a == b).count();
    assert!(same > 0, "no MiB of the image reached the target before the kill");
    // sgdisk finds no GPT there (it makes an empty one in memory).
    let (_, o) = tool("sgdisk", &["-v", target.to_str().unwrap()]);
    assert!(o.contains("Creating new GPT entries in memory"), "sgdisk -v finds a partition table on a half-written target:\n{o}");

    // A rerun completes and verifies.
    let err = run_ok(w, &["flash", img.to_str().unwrap(), target.to_str().unwrap()]);
    assert!(err.contains("verified"), "{err}");
    assert_eq!(sha256(&target), sha256(&img), "the target reads back as the image");
    let (ok, o) = tool("sgdisk", &["-v", target.to_str().unwrap()]);
    assert!(ok && o.contains("No problems found"), "sgdisk -v after the rerun: {o}");
}
