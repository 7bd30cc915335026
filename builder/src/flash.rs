//! `build-image flash IMAGE TARGET`: write a raw image onto a disk (or into
//! a file), safely.
//!
//! What keeps it safe, in the order it happens:
//! - the target and every partition of it (major:minor from
//!   `/sys/class/block/*/dev`) are looked up in `/proc/self/mountinfo`, in
//!   `/proc/swaps` and in sysfs `holders/` (device-mapper, LVM, RAID); any use
//!   refuses the target, naming the mount point. The disk holding `/` is named
//!   as the running system's;
//! - a block device is opened `O_EXCL`, so the kernel refuses it too while
//!   something has it mounted;
//! - a block device needs confirmation: `--yes`, or typing `yes` at the
//!   prompt (without a terminal and without `--yes`, it is refused);
//! - the first MiB (protective MBR and primary GPT) is written last, after
//!   everything else is on the disk and synced, so an interrupted flash never
//!   leaves a disk that looks bootable but is half written;
//! - every byte of the image range is written (holes as zeros) so that old
//!   data on the disk cannot show through, except into a regular file, where
//!   holes are punched instead (the file reads zeros there and stays sparse).
//!   On a block device, zero chunks are zeroed with `BLKZEROOUT`, which the
//!   kernel guarantees reads back as zeros: the device does it without data
//!   transfer where it can (write-zeroes offload), else the kernel writes
//!   zeros itself; when the ioctl is refused, we write zeros;
//! - after `fsync`, the target's cached pages are dropped and the image range
//!   is read back and its sha256 compared with the image's.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

const CHUNK: u64 = 4 << 20;
const FIRST: u64 = 1 << 20;

/// Errors of `flash`.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {} at byte {offset}", path.display())]
    Write {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is in use: {why}; unmount it (and its partitions) first", target.display())]
    InUse { target: PathBuf, why: String },
    #[error("{} holds the running system ({why}): refusing to overwrite it", target.display())]
    RunningSystem { target: PathBuf, why: String },
    #[error("{} ({target_size} bytes) is smaller than the image {} ({image_size} bytes)", target.display(), image.display())]
    TooSmall { target: PathBuf, target_size: u64, image: PathBuf, image_size: u64 },
    #[error("{} has {sector}-byte logical sectors; the image's GPT is laid out for 512-byte sectors", target.display())]
    SectorSize { target: PathBuf, sector: u64 },
    #[error("{} is neither a block device nor a regular file", target.display())]
    NotADisk { target: PathBuf },
    #[error("{} is the image itself", target.display())]
    SameFile { target: PathBuf },
    #[error("not writing {}: {why}", target.display())]
    NotConfirmed { target: PathBuf, why: String },
    #[error("verification failed: the first {len} bytes of {} read back with sha256 {got}, the image has {want}", target.display())]
    Verify { target: PathBuf, len: u64, got: String, want: String },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FlashError + 'a {
    move |source| FlashError::Io { what, path: path.to_path_buf(), source }
}

/// How to flash.
#[derive(Debug, Clone, Default)]
pub struct FlashOptions {
    /// Do not ask before writing to a block device.
    pub yes: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
}

/// What the target is, as shown in the confirmation prompt.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub path: PathBuf,
    pub block_device: bool,
    pub size: u64,
    /// e.g. `sdb, Samsung SSD 870` from sysfs.
    pub description: String,
}

/// What a flash did.
#[derive(Debug, Clone)]
pub struct FlashReport {
    pub bytes: u64,
    /// Bytes of a block device zeroed with `BLKZEROOUT` rather than written.
    pub zeroed: u64,
    pub sha256: String,
    pub verified: bool,
    pub seconds: f64,
}

/// A block device: its number and the numbers of its partitions.
struct Dev {
    name: String,
    numbers: Vec<(u32, u32)>,
    /// Partition names by number, for messages.
    names: Vec<String>,
}

fn major_minor(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

fn parse_mm(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Find the sysfs entry of block device `mm` and its partitions.
fn block_dev(mm: (u32, u32)) -> Dev {
    let sys = Path::new("/sys/class/block");
    let mut me: Option<(String, PathBuf)> = None;
    let entries: Vec<_> = std::fs::read_dir(sys).map(|d| d.flatten().collect()).unwrap_or_default();
    for e in &entries {
        if let Ok(s) = std::fs::read_to_string(e.path().join("dev")) {
            if parse_mm(&s) == Some(mm) {
                let canon = std::fs::canonicalize(e.path()).unwrap_or(e.path());
                me = Some((e.file_name().to_string_lossy().into_owned(), canon));
            }
        }
    }
    let Some((name, canon)) = me else {
        return Dev { name: format!("{}:{}", mm.0, mm.1), numbers: vec![mm], names: vec![format!("{}:{}", mm.0, mm.1)] };
    };
    let mut numbers = vec![mm];
    let mut names = vec![name.clone()];
    for e in &entries {
        let p = e.path();
        if !p.join("partition").exists() {
            continue;
        }
        let c = std::fs::canonicalize(&p).unwrap_or(p.clone());
        if c.parent() == Some(canon.as_path()) {
            if let Some(n) = std::fs::read_to_string(p.join("dev")).ok().as_deref().and_then(parse_mm) {
                numbers.push(n);
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    Dev { name, numbers, names }
}

/// One line of /proc/self/mountinfo: (major:minor, mount point, source).
fn mounts() -> Vec<((u32, u32), String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let mm = parse_mm(f.get(2)?)?;
            let point = unescape(f.get(4)?);
            let dash = f.iter().position(|x| *x == "-")?;
            let source = unescape(f.get(dash + 2)?);
            Some((mm, point, source))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Refuse a device that is mounted, swapped on, held by device-mapper, or
/// holds the running system.
fn check_unused(target: &Path, dev: &Dev) -> Result<(), FlashError> {
    let name_of = |mm: (u32, u32)| dev.numbers.iter().position(|n| *n == mm).map(|i| format!("/dev/{}", dev.names[i])).unwrap_or_default();
    let rdev_of = |p: &str| std::fs::metadata(p).ok().filter(|m| m.file_type().is_block_device()).map(|m| major_minor(m.rdev()));
    let mut uses = Vec::new();
    for (mm, point, source) in mounts() {
        // btrfs and others show an anonymous 0:N: match the source too.
        let hit = if dev.numbers.contains(&mm) { Some(mm) } else { rdev_of(&source).filter(|s| dev.numbers.contains(s)) };
        if let Some(mm) = hit {
            if point == "/" {
                return Err(FlashError::RunningSystem { target: target.into(), why: format!("{} is mounted at /", name_of(mm)) });
            }
            uses.push(format!("{} is mounted at {point}", name_of(mm)));
        }
    }
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    for l in swaps.lines().skip(1) {
        if let Some(mm) = l.split_whitespace().next().and_then(rdev_of) {
            if dev.numbers.contains(&mm) {
                uses.push(format!("{} is used as swap", name_of(mm)));
            }
        }
    }
    for n in &dev.names {
        let holders = Path::new("/sys/class/block").join(n).join("holders");
        if let Ok(rd) = std::fs::read_dir(&holders) {
            for h in rd.flatten() {
                uses.push(format!("/dev/{n} is held by {}", h.file_name().to_string_lossy()));
            }
        }
    }
    if uses.is_empty() {
        Ok(())
    } else {
        Err(FlashError::InUse { target: target.into(), why: uses.join(", ") })
    }
}

fn describe(dev: &Dev) -> String {
    let base = Path::new("/sys/class/block").join(&dev.name);
    let read = |p: &str| std::fs::read_to_string(base.join(p)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let mut parts = vec![dev.name.clone()];
    if let Some(m) = read("device/vendor") {
        parts.push(m);
    }
    if let Some(m) = read("device/model") {
        parts.push(m);
    }
    if dev.names.len() > 1 {
        parts.push(format!("partitions: {}", dev.names[1..].join(" ")));
    }
    parts.join(", ")
}

/// Ask on the terminal. Without one, refuse: the caller must say `--yes`.
pub fn ask_on_terminal(info: &TargetInfo) -> Result<(), String> {
    if !std::io::stdin().is_terminal() {
        return Err("it is a block device and there is no terminal to confirm on: pass --yes".into());
    }
    eprint!(
        "This overwrites {} ({}, {:.1} GiB). Everything on it is lost.\nType yes to go on: ",
        info.path.display(),
        info.description,
        info.size as f64 / (1u64 << 30) as f64
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the answer: {e}"))?;
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err("not confirmed".into())
    }
}

fn bar(enabled: bool, len: u64, msg: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

/// Flash `image` onto `target`. `confirm` is asked (for block devices,
/// unless `opts.yes`) and may refuse with a reason.
pub fn flash(
    image: &Path,
    target: &Path,
    opts: &FlashOptions,
    confirm: impl FnOnce(&TargetInfo) -> Result<(), String>,
) -> Result<FlashReport, FlashError> {
    let start = std::time::Instant::now();
    let src = File::open(image).map_err(io("opening", image))?;
    let smeta = src.metadata().map_err(io("reading", image))?;
    let len = smeta.len();
    let tmeta = match std::fs::metadata(target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading", target)(e)),
    };
    let block = tmeta.as_ref().is_some_and(|m| m.file_type().is_block_device());
    if let Some(m) = &tmeta {
        if !block && !m.file_type().is_file() {
            return Err(FlashError::NotADisk { target: target.into() });
        }
        if m.dev() == smeta.dev() && m.ino() == smeta.ino() {
            return Err(FlashError::SameFile { target: target.into() });
        }
    }

    let out = if block {
        let dev = block_dev(major_minor(tmeta.as_ref().expect("exists").rdev()));
        check_unused(target, &dev)?;
        // O_EXCL on a block device: the kernel refuses it while mounted.
        let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_EXCL | libc::O_CLOEXEC).open(target).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                FlashError::InUse { target: target.into(), why: "the kernel reports it busy (mounted or held)".into() }
            } else {
                io("opening", target)(e)
            }
        })?;
        let size = device_size(&f).map_err(io("reading the size of", target))?;
        if size < len {
            return Err(FlashError::TooSmall { target: target.into(), target_size: size, image: image.into(), image_size: len });
        }
        let sector = logical_sector_size(&f).unwrap_or(512);
        if sector != 512 {
            return Err(FlashError::SectorSize { target: target.into(), sector });
        }
        if !opts.yes {
            let info = TargetInfo { path: target.into(), block_device: true, size, description: describe(&dev) };
            confirm(&info).map_err(|why| FlashError::NotConfirmed { target: target.into(), why })?;
        }
        f
    } else {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(target).map_err(io("opening", target))?;
        if f.metadata().map_err(io("reading", target))?.len() < len {
            f.set_len(len).map_err(io("sizing", target))?;
        }
        f
    };

    // Data ranges of the image; the rest reads as zeros.
    let ranges = crate::tree::content::data_ranges_or_whole(&src, len).map_err(io("reading", image))?;
    let is_data = |off: u64, n: u64| ranges.iter().any(|r| r.start < off + n && off < r.end);

    let pb = bar(opts.progress, len, "writing  ");
    let mut buf = vec![0u8; CHUNK as usize];
    let zeros = vec![0u8; CHUNK as usize];
    let mut chunks: Vec<(u64, u64)> = Vec::new();
    let mut off = FIRST.min(len);
    while off < len {
        let n = CHUNK.min(len - off);
        chunks.push((off, n));
        off += n;
    }
    if len > 0 {
        chunks.push((0, FIRST.min(len))); // the first MiB last
    }
    let last = chunks.len().saturating_sub(1);
    // BLKZEROOUT until the device refuses it once.
    let mut zeroout = true;
    let mut zeroed = 0u64;
    for (i, (off, n)) in chunks.into_iter().enumerate() {
        if i == last {
            // Everything else is on the disk before the partition table.
            out.sync_all().map_err(io("syncing", target))?;
        }
        let b = &mut buf[..n as usize];
        let data = is_data(off, n);
        if data {
            src.read_exact_at(b, off).map_err(io("reading", image))?;
        }
        let zero = !data || b.iter().all(|x| *x == 0);
        if zero && !block && punch_hole(&out, off, n).is_ok() {
            // A regular file keeps its holes.
        } else if zero && block && zeroout && zero_out(&out, off, n).is_ok() {
            zeroed += n;
        } else {
            // A device that refused BLKZEROOUT once is not asked again.
            zeroout &= !(zero && block);
            let w = if zero { &zeros[..n as usize] } else { &b[..] };
            // ≤ 1 MiB writes: see disk::direct::write_cached.
            crate::disk::direct::write_cached(&out, w, off).map_err(|source| FlashError::Write {
                path: target.into(),
                offset: off,
                source,
            })?;
        }
        pb.inc(n);
    }
    out.sync_all().map_err(io("syncing", target))?;
    pb.finish_and_clear();

    // Verify: drop the cached pages, read the image range back, and hash
    // both sides in the same pass.
    // SAFETY: posix_fadvise on an open fd; advisory only.
    unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&out), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let pb = bar(opts.progress, len, "verifying");
    let (mut hs, mut ht) = (Sha256::new(), Sha256::new());
    let mut tbuf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < len {
        let n = CHUNK.min(len - off) as usize;
        if is_data(off, n as u64) {
            src.read_exact_at(&mut buf[..n], off).map_err(io("reading", image))?;
            hs.update(&buf[..n]);
        } else {
            hs.update(&zeros[..n]);
        }
        out.read_exact_at(&mut tbuf[..n], off).map_err(io("reading back", target))?;
        ht.update(&tbuf[..n]);
        off += n as u64;
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    let (want, got) = (hex::encode(hs.finalize()), hex::encode(ht.finalize()));
    if want != got {
        return Err(FlashError::Verify { target: target.into(), len, got, want });
    }
    Ok(FlashReport { bytes: len, zeroed, sha256: want, verified: true, seconds: start.elapsed().as_secs_f64() })
}

fn punch_hole(f: &File, off: u64, n: u64) -> std::io::Result<()> {
    // SAFETY: fallocate on an open fd with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            n as libc::off_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Zero `n` bytes of a block device from `off` (BLKZEROOUT; both multiples
/// of 512). The kernel drops its cached pages of the range.
fn zero_out(f: &File, off: u64, n: u64) -> std::io::Result<()> {
    const BLKZEROOUT: libc::c_ulong = 0x127f; // _IO(0x12, 127)
    let range: [u64; 2] = [off, n];
    // SAFETY: BLKZEROOUT reads two u64 (start, length) through the pointer.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(f), BLKZEROOUT as _, range.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Size of a block device in bytes (BLKGETSIZE64).
fn device_size(f: &File) -> std::io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(f), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if r == 0 {
        Ok(size)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Logical sector size of a block device (BLKSSZGET).
fn logical_sector_size(f: &File) -> Option<u64> {
    const BLKSSZGET: libc::c_ulong = 0x1268;
    let mut s: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(f), BLKSSZGET as _, &mut s as *mut libc::c_int) };
    (r == 0 && s > 0).then_some(s as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("x\\"), "x\\");
    }

    #[test]
    fn writes_into_a_file_first_mib_last_and_verifies() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("i.raw");
        let f = File::create(&img).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"GPT", 512).unwrap();
        f.write_all_at(&[7u8; 5000], 3 << 20).unwrap();
        let t = d.path().join("t.img");
        std::fs::write(&t, vec![0xA5u8; 10 << 20]).unwrap();
        let r = flash(&img, &t, &FlashOptions::default(), |_| Err("no".into())).unwrap();
        assert!(r.verified);
        let back = std::fs::read(&t).unwrap();
        assert_eq!(back.len(), 10 << 20);
        assert_eq!(&back[512..515], b"GPT");
        assert!(back[515..3 << 20].iter().all(|b| *b == 0), "holes read as zeros");
        assert!(back[8 << 20..].iter().all(|b| *b == 0xA5), "beyond the image untouched");
        // The image itself is refused as a target.
        assert!(matches!(flash(&img, &img, &FlashOptions::default(), |_| Ok(())), Err(FlashError::SameFile { .. })));
    }
}
