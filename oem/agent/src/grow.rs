//! First-boot grow: when the disk is larger than the image, move the backup
//! GPT to the disk's end, enlarge the partition named by `agent.grow=` (it
//! must be the last one) to the new end, tell the kernel (`BLKPG`), and grow
//! its filesystem online (ext4 `EXT4_IOC_RESIZE_FS`, btrfs
//! `BTRFS_IOC_RESIZE`).
//!
//! The builder puts `agent.grow=<PARTUUID>` on the command line for a
//! partition with `"grow": true` (see docs/agent.md). Every boot checks; once
//! the backup GPT header sits on the disk's last LBA there is nothing to do
//! and one line says so, unless the filesystem is still smaller than its
//! partition (an interrupted earlier boot): then only the filesystem grows.
//! Every failure is logged and the boot goes on.
//!
//! Order of writes, so that a power cut at any point leaves a valid table:
//! the new backup entries and header first (beyond the old backup, in
//! unused space), flush; then the primary entries and header, flush; then the
//! stale old backup header is zeroed and the protective MBR's size updated.
//! Until the primary is rewritten, the old table (primary + old backup) is
//! intact; afterwards the new one is. The primary header and entries go out
//! in one request; only a write torn inside it leaves just the new backup
//! valid.
//!
//! [`grow_gpt`] is pure positional I/O over anything [`Disk`]-like (a block
//! device in the guest, a file image in the tests).

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::gpt::{self, crc32};
use crate::{log, uevent};

/// How long to wait for the disk holding the partition to appear.
const LOCATE_WAIT_SECS: u64 = 10;

/// Partition ends are aligned down to this (bytes).
pub const ALIGN: u64 = 1 << 20;

/// Why growing failed.
#[derive(Debug)]
pub enum GrowError {
    Io(&'static str, io::Error),
    Gpt(&'static str, gpt::GptError),
    /// Something about the table makes growing unsafe.
    Refused(String),
}

impl fmt::Display for GrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrowError::Io(what, e) => write!(f, "{what}: {e}"),
            GrowError::Gpt(what, e) => write!(f, "{what}: {e}"),
            GrowError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for GrowError {}

/// What [`grow_gpt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backup header already is on the last LBA.
    NothingToGrow { disk_lbas: u64 },
    /// The table was rewritten.
    Grown {
        /// 1-based partition number.
        number: u32,
        first_lba: u64,
        old_last_lba: u64,
        new_last_lba: u64,
        old_backup_lba: u64,
        new_backup_lba: u64,
    },
}

/// The raw primary header with the fields needed to rewrite it.
#[derive(Debug, Clone)]
struct RawHeader {
    bytes: Vec<u8>,
    size: usize,
    alternate_lba: u64,
    last_usable: u64,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Positional I/O on a whole disk: the block device in the guest, a file
/// image in the tests (which also cut writes short to simulate power loss).
pub trait Disk {
    fn pread(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    fn pwrite(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Make the writes so far durable.
    fn flush_disk(&self) -> io::Result<()>;
}

impl Disk for File {
    fn pread(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }
    fn pwrite(&self, buf: &[u8], off: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, off)
    }
    fn flush_disk(&self) -> io::Result<()> {
        self.sync_data()
    }
}

fn read_exact_at<D: Disk + ?Sized>(f: &D, buf: &mut [u8], off: u64, what: &'static str) -> Result<(), GrowError> {
    f.pread(buf, off).map_err(|e| GrowError::Io(what, e))
}

fn write_all_at<D: Disk + ?Sized>(f: &D, buf: &[u8], off: u64, what: &'static str) -> Result<(), GrowError> {
    f.pwrite(buf, off).map_err(|e| GrowError::Io(what, e))
}

fn header_with(h: &RawHeader, my_lba: u64, alternate: u64, last_usable: u64, entries_lba: u64, entries_crc: u32, lbs: usize) -> Vec<u8> {
    let mut b = h.bytes[..h.size].to_vec();
    put_u64(&mut b, 24, my_lba);
    put_u64(&mut b, 32, alternate);
    put_u64(&mut b, 48, last_usable);
    put_u64(&mut b, 72, entries_lba);
    put_u32(&mut b, 88, entries_crc);
    put_u32(&mut b, 16, 0);
    let c = crc32(&b);
    put_u32(&mut b, 16, c);
    b.resize(lbs, 0);
    b
}

/// Grow the GPT of `disk` (`disk_bytes` long, logical block `lbs`) so that
/// its backup sits at the end, and enlarge the partition whose unique GUID
/// is `part_guid` (lower case) to the new last usable LBA, aligned down to
/// [`ALIGN`]. That partition must end after every other one.
pub fn grow_gpt<D: Disk + ?Sized>(disk: &D, lbs: u64, disk_bytes: u64, part_guid: &str) -> Result<Outcome, GrowError> {
    let lbsz = lbs as usize;
    let disk_lbas = disk_bytes / lbs;
    let mut lba1 = vec![0u8; lbsz];
    read_exact_at(disk, &mut lba1, lbs, "reading the primary GPT header")?;
    let hdr = gpt::parse_header(&lba1).map_err(|e| GrowError::Gpt("primary GPT header", e))?;
    let raw = RawHeader {
        size: u32::from_le_bytes(lba1[12..16].try_into().expect("4 bytes")) as usize,
        alternate_lba: u64_at(&lba1, 32),
        last_usable: u64_at(&lba1, 48),
        bytes: lba1.clone(),
    };
    let last_lba = disk_lbas - 1;
    if raw.alternate_lba == last_lba {
        return Ok(Outcome::NothingToGrow { disk_lbas });
    }
    if raw.alternate_lba > last_lba {
        return Err(GrowError::Refused(format!(
            "the backup GPT header is at LBA {} but the disk ends at LBA {last_lba}: the disk is smaller than the image",
            raw.alternate_lba
        )));
    }
    let mut entries = vec![0u8; hdr.entries_len()];
    read_exact_at(disk, &mut entries, hdr.entries_lba * lbs, "reading the GPT entries")?;
    let parsed = gpt::parse_entries(&hdr, &entries).map_err(|e| GrowError::Gpt("GPT entries", e))?;
    let target = parsed
        .iter()
        .find(|e| e.part_guid == part_guid)
        .ok_or_else(|| GrowError::Refused(format!("no partition with PARTUUID {part_guid} in the GPT")))?;
    if let Some(after) = parsed.iter().find(|e| e.number != target.number && e.last_lba >= target.last_lba) {
        return Err(GrowError::Refused(format!(
            "partition {} ({part_guid}) is not the last one: partition {} ends at LBA {}",
            target.number, after.number, after.last_lba
        )));
    }
    // The entry array must lie before the partitions (LBA 2..first usable)
    // and the old backup after them: otherwise this is no table we made.
    let entries_sectors = (hdr.entries_len() as u64).div_ceil(lbs);
    let new_backup_entries = last_lba - entries_sectors;
    let new_last_usable = new_backup_entries - 1;
    if new_last_usable < raw.last_usable || raw.alternate_lba <= target.last_lba {
        return Err(GrowError::Refused(format!(
            "unexpected GPT layout: last usable LBA {}, backup header at {}, partition end {}",
            raw.last_usable, raw.alternate_lba, target.last_lba
        )));
    }
    let align = (ALIGN / lbs).max(1);
    let aligned_end = (new_last_usable + 1) / align * align;
    let new_end = aligned_end.checked_sub(1).filter(|e| *e > target.last_lba).unwrap_or(target.last_lba);
    // Update the entry (ending LBA at offset 40).
    let es = hdr.entry_size as usize;
    let off = (target.number as usize - 1) * es;
    put_u64(&mut entries[off..off + es], 40, new_end);
    let entries_crc = crc32(&entries);

    // 1. The new backup: entries, then header. Flush.
    write_all_at(disk, &entries, new_backup_entries * lbs, "writing the backup GPT entries")?;
    let backup = header_with(&raw, last_lba, 1, new_last_usable, new_backup_entries, entries_crc, lbsz);
    write_all_at(disk, &backup, last_lba * lbs, "writing the backup GPT header")?;
    disk.flush_disk().map_err(|e| GrowError::Io("flushing the backup GPT", e))?;
    // 2. The primary: header and entries in one request when they are
    //    contiguous (as usual: entries at LBA 2), else entries then header.
    //    Flush. A write torn between the two leaves the primary invalid but
    //    the new backup at the disk's end valid (firmware and sgdisk recover
    //    from it; Linux needs `gpt` on its command line to use it).
    let primary = header_with(&raw, 1, last_lba, new_last_usable, hdr.entries_lba, entries_crc, lbsz);
    if hdr.entries_lba == 2 {
        let mut both = primary;
        both.extend_from_slice(&entries);
        write_all_at(disk, &both, lbs, "writing the primary GPT header and entries")?;
    } else {
        write_all_at(disk, &entries, hdr.entries_lba * lbs, "writing the primary GPT entries")?;
        write_all_at(disk, &primary, lbs, "writing the primary GPT header")?;
    }
    disk.flush_disk().map_err(|e| GrowError::Io("flushing the primary GPT", e))?;
    // 3. Zero the stale backup header (now inside the grown partition, past
    //    its filesystem's end), and let the protective MBR cover the disk.
    write_all_at(disk, &vec![0u8; lbsz], raw.alternate_lba * lbs, "zeroing the old backup GPT header")?;
    let mut mbr = [0u8; 512];
    read_exact_at(disk, &mut mbr, 0, "reading the protective MBR")?;
    if mbr[510..512] == [0x55, 0xAA] {
        for i in 0..4 {
            let e = 446 + 16 * i;
            if mbr[e + 4] == 0xEE && u32::from_le_bytes(mbr[e + 8..e + 12].try_into().expect("4 bytes")) == 1 {
                let size = (disk_lbas - 1).min(u32::MAX as u64) as u32;
                put_u32(&mut mbr, e + 12, size);
                write_all_at(disk, &mbr[e + 12..e + 16], (e + 12) as u64, "updating the protective MBR")?;
            }
        }
    }
    disk.flush_disk().map_err(|e| GrowError::Io("flushing the disk", e))?;
    Ok(Outcome::Grown {
        number: target.number,
        first_lba: target.first_lba,
        old_last_lba: target.last_lba,
        new_last_lba: new_end,
        old_backup_lba: raw.alternate_lba,
        new_backup_lba: last_lba,
    })
}

/// The bytes an ext4 or btrfs filesystem spans, from the start of its
/// partition (at least [`crate::probe::PROBE_LEN`] bytes): ext4's block
/// count times block size, btrfs's device item `total_bytes`.
pub fn fs_bytes(b: &[u8]) -> Option<u64> {
    let u32_at = |o: usize| b.get(o..o + 4).map(|x| u32::from_le_bytes(x.try_into().expect("4 bytes")) as u64);
    if b.get(1024 + 56..1024 + 58) == Some(&[0x53, 0xEF]) {
        let log = u32_at(1024 + 24)?;
        let incompat = u32_at(1024 + 0x60)?;
        let hi = if incompat & 0x80 != 0 { u32_at(1024 + 0x150)? } else { 0 };
        return Some(((hi << 32) | u32_at(1024 + 4)?) << (10 + log));
    }
    if b.get(0x10040..0x10048) == Some(b"_BHRfS_M") {
        // dev_item at 0xc9 in the superblock; total_bytes 8 bytes into it.
        return b.get(0x100d1..0x100d9).map(u64_at_slice);
    }
    None
}

fn u64_at_slice(b: &[u8]) -> u64 {
    u64_at(b, 0)
}

// ------------------------------------------------------------ in the guest

/// The value of `agent.grow=` in a command line (last one wins), lower case.
pub fn requested(cmdline: &str) -> Option<String> {
    let (params, _) = crate::cmdline::tokenize(cmdline);
    let mut v = None;
    for (k, val) in params {
        if k == "agent.grow" {
            v = val.filter(|s| !s.is_empty()).map(|s| {
                let s = s.trim();
                let s = match s.get(..9) {
                    Some(p) if s.len() > 9 && p.eq_ignore_ascii_case("PARTUUID=") => &s[9..],
                    _ => s,
                };
                s.to_ascii_lowercase()
            });
        }
    }
    v
}

fn human(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

fn sys_u64(p: impl AsRef<Path>) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `/dev/NAME` for a sysfs block device, made with mknod if missing.
fn node(ue: &uevent::BlockUevent) -> Option<PathBuf> {
    let p = PathBuf::from("/dev").join(&ue.devname);
    if !p.exists() {
        let dev = rustix::fs::makedev(ue.major, ue.minor);
        rustix::fs::mknodat(rustix::fs::CWD, &p, rustix::fs::FileType::BlockDevice, rustix::fs::Mode::from_raw_mode(0o600), dev).ok()?;
    }
    Some(p)
}

fn uevent_of(sys: &Path) -> Option<uevent::BlockUevent> {
    uevent::parse(&fs::read_to_string(sys.join("uevent")).ok()?)
}

/// The whole disk holding the partition with this PARTUUID: (disk sysfs
/// dir, partition sysfs dir, partition number), from each disk's own GPT.
fn locate(part_guid: &str) -> Option<(PathBuf, PathBuf, u32)> {
    let mut disks: Vec<PathBuf> = fs::read_dir("/sys/class/block").ok()?.flatten().map(|e| e.path()).collect();
    disks.sort();
    for d in disks {
        let Some(ue) = uevent_of(&d) else { continue };
        if ue.is_partition() {
            continue;
        }
        let Some(dev) = node(&ue) else { continue };
        let lbs = sys_u64(d.join("queue/logical_block_size")).unwrap_or(512);
        let Ok(f) = File::open(&dev) else { continue };
        let mut lba1 = vec![0u8; lbs as usize];
        if f.read_exact_at(&mut lba1, lbs).is_err() {
            continue;
        }
        let Ok(hdr) = gpt::parse_header(&lba1) else { continue };
        let mut ents = vec![0u8; hdr.entries_len()];
        if f.read_exact_at(&mut ents, hdr.entries_lba * lbs).is_err() {
            continue;
        }
        let Ok(entries) = gpt::parse_entries(&hdr, &ents) else { continue };
        let Some(e) = entries.iter().find(|e| e.part_guid == part_guid) else { continue };
        // The partition's sysfs dir: a child of the disk with that number.
        let part = fs::read_dir(&d).ok()?.flatten().map(|c| c.path()).find(|c| sys_u64(c.join("partition")) == Some(e.number as u64))?;
        return Some((d, part, e.number));
    }
    None
}

/// `struct blkpg_partition` (linux/blkpg.h).
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

const BLKPG: libc::c_ulong = 0x1269; // _IO(0x12, 105)
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
/// `_IOW('f', 16, __u64)`
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
/// `_IOW(0x94, 3, struct btrfs_ioctl_vol_args)` (4096 bytes)
const BTRFS_IOC_RESIZE: libc::c_ulong = 0x5000_9403;

#[repr(C)]
struct BtrfsVolArgs {
    fd: i64,
    name: [u8; 4088],
}

fn last_os_error(what: &'static str, rc: libc::c_int) -> Result<(), GrowError> {
    if rc < 0 {
        Err(GrowError::Io(what, io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// Tell the kernel partition `pno` of `disk` now spans `start..start+len` bytes.
fn blkpg_resize(disk: &File, pno: u32, start: u64, len: u64) -> Result<(), GrowError> {
    let mut p = BlkpgPartition { start: start as i64, length: len as i64, pno: pno as libc::c_int, devname: [0; 64], volname: [0; 64] };
    let mut a = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut p as *mut BlkpgPartition).cast(),
    };
    // SAFETY: BLKPG reads a blkpg_ioctl_arg whose data points at a
    // blkpg_partition of datalen bytes; both live until the call returns.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut a as *mut BlkpgIoctlArg) };
    last_os_error("BLKPG_RESIZE_PARTITION", rc)
}

fn fs_size(mnt: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statfs(mnt).ok()?;
    #[allow(clippy::unnecessary_cast)]
    Some((s.f_blocks as u64 * s.f_bsize as u64, s.f_bsize as u64))
}

/// Grow the filesystem mounted on `mnt` to fill its (already enlarged) device
/// of `dev_bytes`.
fn grow_fs(mnt: &Path, fstype: &str, dev_bytes: u64) -> Result<(), GrowError> {
    let dir = File::open(mnt).map_err(|e| GrowError::Io("opening the mount point", e))?;
    let (before, bsize) = fs_size(mnt).unwrap_or((0, 4096));
    match fstype {
        "ext4" => {
            let blocks: u64 = dev_bytes / bsize;
            log!("grow: ext4 on {}: resizing to {blocks} blocks of {bsize} bytes (EXT4_IOC_RESIZE_FS)", mnt.display());
            // SAFETY: the ioctl reads one u64 through the pointer.
            let rc = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &blocks as *const u64) };
            last_os_error("EXT4_IOC_RESIZE_FS", rc)?;
        }
        "btrfs" => {
            log!("grow: btrfs on {}: resizing device 1 to max (BTRFS_IOC_RESIZE)", mnt.display());
            let mut a = BtrfsVolArgs { fd: 0, name: [0; 4088] };
            a.name[..5].copy_from_slice(b"1:max");
            // SAFETY: the ioctl reads and writes one btrfs_ioctl_vol_args.
            let rc = unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_RESIZE as _, &mut a as *mut BtrfsVolArgs) };
            last_os_error("BTRFS_IOC_RESIZE", rc)?;
        }
        other => return Err(GrowError::Refused(format!("cannot grow a {other} filesystem online (ext4 and btrfs only)"))),
    }
    let after = fs_size(mnt).map(|s| s.0).unwrap_or(0);
    log!("grow: filesystem on {} grew from {} to {} (statfs)", mnt.display(), human(before), human(after));
    Ok(())
}

/// Where the partition (`rdev`, `/dev/<devname>`) is mounted, and its
/// fstype, from /proc/self/mountinfo. btrfs reports an anonymous device
/// number there, so the mount source is compared too.
fn mounted_at(rdev: u64, devname: &str) -> Option<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let source = format!("/dev/{devname}");
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        let (fstype, src) = (f.get(sep + 1)?, f.get(sep + 2)?);
        (f.get(2) == Some(&want.as_str()) || *src == source).then(|| (PathBuf::from(f[4]), fstype.to_string()))
    })
}

/// The whole first-boot grow, for the partition named by `agent.grow=` in
/// `/proc/cmdline`; does nothing without it. A mounted target (the root on
/// /sysroot) is grown where it is, remounted read-write for the resize if
/// need be; an unmounted one is mounted on [`GROW_MOUNT`] for it. Never
/// fails the boot: every problem is logged.
pub fn run() {
    let Some(guid) = fs::read_to_string("/proc/cmdline").ok().as_deref().and_then(requested) else { return };
    if let Err(e) = run_for(&guid) {
        log!("grow: FAILED: {e}; booting on without growing");
    }
}

fn run_for(guid: &str) -> Result<(), GrowError> {
    // With a root, its disk is there already; an appliance without one may
    // still be probing its disks.
    let t = std::time::Instant::now();
    let found = loop {
        match locate(guid) {
            Some(f) => break Some(f),
            None if t.elapsed() < std::time::Duration::from_secs(LOCATE_WAIT_SECS) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            None => break None,
        }
    };
    let (disk_sys, part_sys, number) = found.ok_or_else(|| {
        GrowError::Refused(format!("agent.grow={guid}: no disk has a partition with this PARTUUID (waited {LOCATE_WAIT_SECS} s)"))
    })?;
    let disk_ue = uevent_of(&disk_sys).ok_or_else(|| GrowError::Refused("disk vanished".into()))?;
    let part_ue = uevent_of(&part_sys).ok_or_else(|| GrowError::Refused("partition vanished".into()))?;
    let dev = node(&disk_ue).ok_or_else(|| GrowError::Refused(format!("no device node for {}", disk_ue.devname)))?;
    let lbs = sys_u64(disk_sys.join("queue/logical_block_size")).unwrap_or(512);
    let disk_bytes = sys_u64(disk_sys.join("size")).unwrap_or(0) * 512;
    let disk = fs::OpenOptions::new().read(true).write(true).open(&dev).map_err(|e| GrowError::Io("opening the disk", e))?;
    let out = grow_gpt(&disk, lbs, disk_bytes, guid)?;
    match out {
        Outcome::NothingToGrow { .. } => {
            // The table was grown by an earlier boot; its filesystem should
            // have been too, unless that step failed: then retry it.
            let part_bytes = sys_u64(part_sys.join("size")).unwrap_or(0) * 512;
            let fs = node(&part_ue).and_then(|p| {
                let f = File::open(p).ok()?;
                let mut sb = vec![0u8; crate::probe::PROBE_LEN];
                let n = f.read_at(&mut sb, 0).ok()?;
                fs_bytes(&sb[..n])
            });
            match fs {
                Some(fs) if fs + ALIGN <= part_bytes => log!(
                    "grow: the partition table is grown, but the filesystem on {} is {} of its {}: growing the filesystem",
                    part_ue.devname,
                    human(fs),
                    human(part_bytes)
                ),
                _ => {
                    log!("grow: nothing to grow: {} is {} and its backup GPT header is on the last LBA", dev.display(), human(disk_bytes));
                    return Ok(());
                }
            }
        }
        Outcome::Grown { number: n, first_lba, old_last_lba, new_last_lba, old_backup_lba, new_backup_lba } => {
            log!(
                "grow: {} is {}: moved the backup GPT from LBA {old_backup_lba} to {new_backup_lba}; partition {n} ({}) {} -> {}",
                dev.display(),
                human(disk_bytes),
                part_ue.devname,
                human((old_last_lba + 1 - first_lba) * lbs),
                human((new_last_lba + 1 - first_lba) * lbs)
            );
            let start = first_lba * lbs;
            let len = (new_last_lba + 1 - first_lba) * lbs;
            blkpg_resize(&disk, number, start, len)?;
            let now = sys_u64(part_sys.join("size")).unwrap_or(0) * 512;
            log!("grow: kernel told (BLKPG_RESIZE_PARTITION): {} is now {}", part_ue.devname, human(now));
        }
    }
    let len = sys_u64(part_sys.join("size")).unwrap_or(0) * 512;
    let rdev = rustix::fs::makedev(part_ue.major, part_ue.minor);
    match mounted_at(rdev, &part_ue.devname) {
        Some((mnt, fstype)) => grow_mounted(&mnt, &fstype, len),
        None => grow_unmounted(&part_ue, len),
    }
}

/// Grow the filesystem where it is mounted; a read-only mount is remounted
/// read-write for the resize and read-only again afterwards.
fn grow_mounted(mnt: &Path, fstype: &str, len: u64) -> Result<(), GrowError> {
    use rustix::fs::StatVfsMountFlags;
    use rustix::mount::MountFlags;
    let ro = rustix::fs::statvfs(mnt).map(|s| s.f_flag.contains(StatVfsMountFlags::RDONLY)).unwrap_or(false);
    if ro {
        log!("grow: {} is mounted read-only: remounting it read-write for the resize", mnt.display());
        rustix::mount::mount_remount(mnt, MountFlags::empty(), "").map_err(|e| GrowError::Io("remounting read-write", e.into()))?;
    }
    let r = grow_fs(mnt, fstype, len);
    if ro {
        if let Err(e) = rustix::mount::mount_remount(mnt, MountFlags::RDONLY, "") {
            log!("grow: FAILED to remount {} read-only again: {}", mnt.display(), io::Error::from(e));
        }
    }
    r
}

/// Where a partition that is not mounted is mounted for the resize.
pub const GROW_MOUNT: &str = "/run/agent-grow";

/// Mount the partition on [`GROW_MOUNT`], grow its filesystem, unmount it.
fn grow_unmounted(part: &uevent::BlockUevent, len: u64) -> Result<(), GrowError> {
    let dev = node(part).ok_or_else(|| GrowError::Refused(format!("no device node for {}", part.devname)))?;
    let f = File::open(&dev).map_err(|e| GrowError::Io("opening the partition", e))?;
    let mut sb = vec![0u8; crate::probe::PROBE_LEN];
    let n = f.read_at(&mut sb, 0).map_err(|e| GrowError::Io("reading the superblock", e))?;
    let Some(info) = crate::probe::probe(&sb[..n]) else {
        log!("grow: {} has no filesystem the agent knows: only the partition was grown", part.devname);
        return Ok(());
    };
    fs::create_dir_all(GROW_MOUNT).map_err(|e| GrowError::Io("creating the grow mount point", e))?;
    rustix::mount::mount(&dev, GROW_MOUNT, info.fstype, rustix::mount::MountFlags::empty(), None)
        .map_err(|e| GrowError::Io("mounting the partition to grow it", e.into()))?;
    log!("grow: mounted {} ({}) on {GROW_MOUNT} to grow it", dev.display(), info.fstype);
    let r = grow_fs(Path::new(GROW_MOUNT), info.fstype, len);
    if let Err(e) = rustix::mount::unmount(GROW_MOUNT, rustix::mount::UnmountFlags::empty()) {
        log!("grow: FAILED to unmount {GROW_MOUNT}: {}", io::Error::from(e));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::guid_to_string;

    use std::process::Command;

    fn sgdisk(args: &[&str]) -> Option<String> {
        let o = Command::new("sgdisk").args(args).output().ok()?;
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "sgdisk {args:?} failed: {s}");
        Some(s)
    }

    /// A GPT made by sgdisk on a `mib`-MiB file: ESP 8 MiB, BIOS 1 MiB, and
    /// a Linux partition filling the rest. `None` without sgdisk.
    fn image(dir: &Path, mib: u64) -> Option<PathBuf> {
        let p = dir.join("disk.raw");
        File::create(&p).unwrap().set_len(mib << 20).unwrap();
        let s = p.to_str().unwrap();
        match sgdisk(&[
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:+1M",
            "-t",
            "2:ef02",
            "-n",
            "3:0:0",
            "-t",
            "3:8304",
            "-u",
            "3:6a9b1f2e-0000-4000-8000-00000000abcd",
            s,
        ]) {
            Some(_) => Some(p),
            None => {
                eprintln!("sgdisk not installed: skipping");
                None
            }
        }
    }

    fn verify(p: &Path) -> String {
        let out = sgdisk(&["-v", p.to_str().unwrap()]).unwrap();
        assert!(out.contains("No problems found"), "sgdisk -v after the rewrite:\n{out}");
        out
    }

    fn part_end(p: &Path, n: u32) -> (u64, u64) {
        let out = sgdisk(&["-i", &n.to_string(), p.to_str().unwrap()]).unwrap();
        let num = |key: &str| -> u64 {
            let l = out.lines().find(|l| l.starts_with(key)).unwrap();
            l[key.len()..].split_whitespace().next().unwrap().parse().unwrap()
        };
        (num("First sector:"), num("Last sector:"))
    }

    const GUID: &str = "6a9b1f2e-0000-4000-8000-00000000abcd";

    #[test]
    fn grows_an_sgdisk_table_to_the_disk_end() {
        let t = tempfile::tempdir().unwrap();
        let Some(p) = image(t.path(), 100) else { return };
        verify(&p);
        let (first, old_end) = part_end(&p, 3);
        // The "disk" gets larger, as `truncate -s` or a bigger cloud volume.
        let f = fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
        f.set_len(300 << 20).unwrap();
        let out = grow_gpt(&f, 512, 300 << 20, GUID).unwrap();
        let lbas = (300u64 << 20) / 512;
        let new_end = (lbas - 33) / 2048 * 2048 - 1;
        assert_eq!(
            out,
            Outcome::Grown {
                number: 3,
                first_lba: first,
                old_last_lba: old_end,
                new_last_lba: new_end,
                old_backup_lba: (100 << 11) - 1,
                new_backup_lba: lbas - 1
            }
        );
        verify(&p);
        assert_eq!(part_end(&p, 3), (first, new_end));
        assert_eq!(part_end(&p, 1), (2048, 2048 + 8 * 2048 - 1), "other partitions untouched");
        // The protective MBR covers the new disk.
        let mut mbr = [0u8; 512];
        f.read_exact_at(&mut mbr, 0).unwrap();
        assert_eq!(u32::from_le_bytes(mbr[446 + 12..446 + 16].try_into().unwrap()) as u64, lbas - 1);
        // A second run finds nothing to do and writes nothing.
        assert_eq!(grow_gpt(&f, 512, 300 << 20, GUID).unwrap(), Outcome::NothingToGrow { disk_lbas: lbas });
        verify(&p);
    }

    /// A disk that loses power after `left` writes: later writes fail and
    /// change nothing.
    struct PowerCut<'a> {
        f: &'a File,
        left: std::cell::Cell<usize>,
    }

    impl Disk for PowerCut<'_> {
        fn pread(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
            FileExt::read_exact_at(self.f, buf, off)
        }
        fn pwrite(&self, buf: &[u8], off: u64) -> io::Result<()> {
            if self.left.get() == 0 {
                return Err(io::Error::other("power cut"));
            }
            self.left.set(self.left.get() - 1);
            FileExt::write_all_at(self.f, buf, off)
        }
        fn flush_disk(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Cut the power after each write in turn: a valid table is always
    /// there (the old one until the primary is rewritten, the new one
    /// after), and the next boot's run finishes the job, `sgdisk -v` clean.
    #[test]
    fn a_power_cut_at_any_write_leaves_a_table_the_next_boot_finishes() {
        let t = tempfile::tempdir().unwrap();
        let Some(p) = image(t.path(), 64) else { return };
        let pristine = fs::read(&p).unwrap();
        let (first, old_end) = part_end(&p, 3);
        let lbas = (256u64 << 20) / 512;
        let new_end = (lbas - 33) / 2048 * 2048 - 1;
        for cut in 0..6 {
            fs::write(&p, &pristine).unwrap();
            let f = fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
            f.set_len(256 << 20).unwrap();
            let r = grow_gpt(&PowerCut { f: &f, left: std::cell::Cell::new(cut) }, 512, 256 << 20, GUID);
            // Whatever happened, the primary is valid and describes the old
            // or the new layout.
            let (_, end) = part_end(&p, 3);
            assert!(end == old_end || end == new_end, "cut after {cut} writes: partition ends at {end}");
            let mut lba1 = [0u8; 512];
            FileExt::read_exact_at(&f, &mut lba1, 512).unwrap();
            gpt::parse_header(&lba1).unwrap_or_else(|e| panic!("cut after {cut} writes: primary {e}"));
            if cut >= 5 {
                assert!(r.is_ok(), "{r:?}");
            } else {
                assert!(r.is_err(), "cut after {cut} writes: {r:?}");
            }
            // The next boot.
            let again = grow_gpt(&f, 512, 256 << 20, GUID).unwrap();
            eprintln!("cut after {cut} writes: then {again:?}");
            verify(&p);
            assert_eq!(part_end(&p, 3), (first, new_end), "cut after {cut} writes");
        }
    }

    #[test]
    fn refuses_what_it_must_not_touch() {
        let t = tempfile::tempdir().unwrap();
        let Some(p) = image(t.path(), 64) else { return };
        let f = fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let before = fs::read(&p).unwrap();
        // Same size: nothing to do.
        assert!(matches!(grow_gpt(&f, 512, 64 << 20, GUID), Ok(Outcome::NothingToGrow { .. })));
        // Smaller than the image.
        assert!(matches!(grow_gpt(&f, 512, 32 << 20, GUID), Err(GrowError::Refused(_))));
        f.set_len(128 << 20).unwrap();
        // Not the last partition (the ESP), and an unknown PARTUUID.
        let esp = guid_to_string(
            &{
                let mut e = [0u8; 128];
                f.read_exact_at(&mut e, 1024).unwrap();
                e
            }[16..32],
        );
        let e = grow_gpt(&f, 512, 128 << 20, &esp).unwrap_err().to_string();
        assert!(e.contains("not the last one"), "{e}");
        let e = grow_gpt(&f, 512, 128 << 20, "00000000-0000-0000-0000-000000000001").unwrap_err().to_string();
        assert!(e.contains("no partition with PARTUUID"), "{e}");
        // Nothing was written by the refusals.
        let mut now = vec![0u8; before.len()];
        f.read_exact_at(&mut now, 0).unwrap();
        assert!(now == before);
    }

    /// `fs_bytes` agrees with mkfs on the filesystem's size.
    #[test]
    fn filesystem_size_from_the_superblock() {
        let t = tempfile::tempdir().unwrap();
        for (mkfs, args, size) in [("mkfs.ext4", &["-q", "-F"][..], 64u64 << 20), ("mkfs.btrfs", &["-q", "-f"][..], 200 << 20)] {
            let p = t.path().join(mkfs);
            File::create(&p).unwrap().set_len(size + (5 << 20)).unwrap();
            // The filesystem is made smaller than its "partition".
            let mut c = Command::new(mkfs);
            c.args(args).arg(&p);
            if mkfs == "mkfs.ext4" {
                c.arg("16384"); // blocks of the size mkfs picks
            } else {
                c.args(["-b", &size.to_string()]);
            }
            let Ok(o) = c.output() else {
                eprintln!("{mkfs} not installed: skipping");
                continue;
            };
            assert!(o.status.success(), "{mkfs}: {}", String::from_utf8_lossy(&o.stderr));
            let mut sb = vec![0u8; crate::probe::PROBE_LEN];
            File::open(&p).unwrap().read_exact_at(&mut sb, 0).unwrap();
            let got = fs_bytes(&sb).unwrap();
            if mkfs == "mkfs.ext4" {
                let bs = 1024u64 << u32::from_le_bytes(sb[1024 + 24..1024 + 28].try_into().unwrap());
                assert_eq!(got, 16384 * bs);
            } else {
                assert_eq!(got, size);
            }
        }
        assert_eq!(fs_bytes(&[0u8; 100]), None);
    }

    #[test]
    fn grow_key() {
        assert_eq!(requested("console=ttyS0 agent.grow=ABCD-EF root=x"), Some("abcd-ef".into()));
        assert_eq!(requested("agent.grow=PARTUUID=AB"), Some("ab".into()));
        assert_eq!(requested("agent.grow= root=x"), None);
        assert_eq!(requested("root=x -- agent.grow=a"), None);
        // Found by fuzz/ (target `cmdline`): a multi-byte character across
        // byte 9 panicked.
        assert_eq!(requested("agent.grow=PARTUUI\u{e9}x"), Some("partuui\u{e9}x".into()));
        assert_eq!(requested("agent.grow=\u{fffd}\u{fffd}\u{fffd}\u{fffd}"), Some("\u{fffd}\u{fffd}\u{fffd}\u{fffd}".into()));
    }
}
