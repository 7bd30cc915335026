//! FAT filesystems (FAT32 whenever the partition holds enough clusters, as
//! the UEFI spec wants for an ESP), written with the `fatfs` crate into the
//! partition's [`Region`].
//!
//! Deterministic: the volume serial comes from the plan's filesystem UUID and
//! every timestamp is the entry's clamped mtime (FAT cannot go below
//! 1980-01-01, so earlier times, including epoch 0, become that date).
//! `fatfs` zeroes the FATs and the root directory explicitly, so the result
//! is valid even when `dd`'d over old data.
//!
//! `fatfs` 0.3.6 (the newest release) writes two things wrong in every new
//! subdirectory: long-name entries in front of `.` and `..`, and a `..` that
//! points at the FAT32 root's cluster instead of cluster 0. `fsck.fat`
//! rejects both, so [`fix_dot_entries`] rewrites those first slots after
//! `fatfs` is done; everything else is the crate's.

use std::io::Write;

use fatfs::{FatType, FormatVolumeOptions, FsOptions};

use super::{FsParams, FsReport};
use crate::disk::Region;
use crate::tree::{show, Kind, Tree};

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("{path}: FAT cannot hold a {kind}: remove it from the tree (a `remove` layer) or use another filesystem")]
    Unsupported { path: String, kind: &'static str },
    #[error("{path}: FAT cannot hold this name: {why}")]
    BadName { path: String, why: String },
    #[error("{what} (FAT, {path})")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the files need more space than the {size}-byte FAT partition has: make it larger")]
    Full { size: u64 },
}

/// FAT's time representation from a unix time (UTC), clamped to FAT's range.
pub fn fat_time(secs: i64) -> fatfs::DateTime {
    let secs = secs.clamp(315_532_800, 4_354_819_199); // 1980-01-01 .. 2107-12-31
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    fatfs::DateTime {
        date: fatfs::Date { year: y as u16, month: m as u16, day: d as u16 },
        time: fatfs::Time { hour: (rem / 3600) as u16, min: (rem / 60 % 60) as u16, sec: (rem % 60) as u16, millis: 0 },
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (also the builder's RFC 3339 times, e.g. a container image's `created`).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The time `fatfs` stamps on what it creates or writes: set to each
/// entry's clamped mtime just before the entry is made.
#[derive(Debug)]
struct EntryTime(std::sync::atomic::AtomicI64);

impl EntryTime {
    fn set(&self, secs: i64) {
        self.0.store(secs, std::sync::atomic::Ordering::Relaxed);
    }
}

impl fatfs::TimeProvider for EntryTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.get_current_date_time().date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fat_time(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Check that FAT can hold `name` as a long file name.
pub fn check_name(name: &[u8]) -> Result<(), String> {
    let s = std::str::from_utf8(name).map_err(|_| "the name is not UTF-8".to_string())?;
    if s.encode_utf16().count() > 255 {
        return Err("longer than 255 UTF-16 characters".into());
    }
    if let Some(c) = s.chars().find(|c| (*c as u32) < 0x20 || "\"*/:<>?\\|".contains(*c)) {
        return Err(format!("the character {c:?} is not allowed"));
    }
    if s.ends_with('.') || s.ends_with(' ') {
        return Err("a name cannot end with a dot or a space".into());
    }
    Ok(())
}

/// Volume label: upper-case, at most 11 bytes of printable ASCII.
fn volume_label(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    let mut i = 0;
    for c in label.chars() {
        if i == 11 {
            break;
        }
        if c.is_ascii_graphic() && !"\"*+,./:;<=>?[\\]|".contains(c) {
            out[i] = c.to_ascii_uppercase() as u8;
            i += 1;
        }
    }
    if i == 0 {
        out[..7].copy_from_slice(b"NO NAME");
    }
    out
}

/// A generous estimate of the FAT32 partition size `tree` needs: its files
/// in 4 KiB clusters, a directory cluster each, both FATs, and 1 MiB of
/// reserved space, rounded up to 1 MiB (never below FAT32's minimum).
pub fn size_needed(tree: &Tree) -> u64 {
    let mut clusters = 0u64;
    tree.walk(|v| match &tree.inode(v.ino).kind {
        Kind::File(c) => clusters += c.len().div_ceil(4096).max(1),
        Kind::Dir(_) => clusters += 1,
        _ => {}
    });
    let fats = (clusters * 4 * 2).div_ceil(4096) * 4096;
    let total = clusters * 4096 + fats + (1 << 20);
    (total.div_ceil(1 << 20) << 20).max(36 << 20)
}

/// Check the whole tree fits FAT's model before writing anything.
pub fn check_tree(tree: &Tree) -> Result<(), FatError> {
    let mut err = None;
    let mut seen: std::collections::BTreeSet<(usize, String)> = Default::default();
    tree.walk(|v| {
        if err.is_some() || v.depth == 0 {
            return;
        }
        let inode = tree.inode(v.ino);
        if !matches!(inode.kind, Kind::Dir(_) | Kind::File(_)) {
            err = Some(FatError::Unsupported { path: show(v.path), kind: inode.kind.word() });
        } else if let Err(why) = check_name(v.name) {
            err = Some(FatError::BadName { path: show(v.path), why });
        } else if !seen.insert((v.parent, String::from_utf8_lossy(v.name).to_lowercase())) {
            err = Some(FatError::BadName {
                path: show(v.path),
                why: "another name in the same directory differs only in case, and FAT ignores case".into(),
            });
        }
    });
    err.map_or(Ok(()), Err)
}

/// Format `region` as FAT and copy `tree` into it.
fn io_err(what: &'static str, path: &[u8]) -> impl FnOnce(std::io::Error) -> FatError {
    let path = show(path);
    move |source| FatError::Io { what, path, source }
}

pub fn write(tree: &Tree, region: Region<'_>, params: &FsParams) -> Result<FsReport, FatError> {
    check_tree(tree)?;
    let size = region.len();
    let serial = u32::from_le_bytes(params.uuid.as_bytes()[..4].try_into().expect("4 bytes"));
    let base = FormatVolumeOptions::new().volume_id(serial).volume_label(volume_label(&params.label)).bytes_per_sector(512);
    // FAT32 needs at least 65525 clusters; pick the cluster size mkfs.fat
    // would, and fall back to FAT16/12 for small partitions.
    let cluster = match size {
        s if s < 260 << 20 => 512,
        s if s < 8 << 30 => 4096,
        s if s < 16 << 30 => 8192,
        s if s < 32 << 30 => 16384,
        _ => 32768,
    };
    let fat32 = size / cluster >= 65_525 + 1024;
    let opts = if fat32 { base.fat_type(FatType::Fat32).bytes_per_cluster(cluster as u32) } else { base };
    fatfs::format_volume(region.io_cursor(), opts).map_err(io_err("formatting", b""))?;
    let time: &'static EntryTime = Box::leak(Box::new(EntryTime(params.epoch.into())));
    let fs = fatfs::FileSystem::new(region.io_cursor(), FsOptions::new().time_provider(time).update_accessed_date(false))
        .map_err(io_err("opening the new filesystem", b""))?;
    {
        let mut dirs: Vec<(usize, fatfs::Dir<'_, _>)> = vec![(Tree::ROOT, fs.root_dir())];
        let mut buf = vec![0u8; 1 << 20];
        let mut order = Vec::new();
        tree.walk(|v| {
            if v.depth > 0 {
                order.push((v.path.to_vec(), v.name.len(), v.ino, v.parent));
            }
        });
        for (path, name_len, ino, parent_ino) in order {
            while dirs.len() > 1 && dirs.last().map(|d| d.0) != Some(parent_ino) {
                dirs.pop();
            }
            let name = std::str::from_utf8(&path[path.len() - name_len..]).expect("checked");
            let inode = tree.inode(ino);
            time.set(inode.meta.mtime);
            match &inode.kind {
                Kind::Dir(_) => {
                    let d = dirs.last().expect("root stays").1.create_dir(name).map_err(io_err("creating directory", &path))?;
                    dirs.push((ino, d));
                }
                Kind::File(c) => {
                    let mut f = dirs.last().expect("root stays").1.create_file(name).map_err(io_err("creating file", &path))?;
                    let rd = c.open().map_err(io_err("opening source", &path))?;
                    let mut off = 0u64;
                    while off < c.len() {
                        let n = buf.len().min((c.len() - off) as usize);
                        rd.read_exact_at(&mut buf[..n], off).map_err(io_err("reading source", &path))?;
                        f.write_all(&buf[..n]).map_err(|e| {
                            if fs.stats().map(|s| s.free_clusters() == 0).unwrap_or(false) {
                                FatError::Full { size }
                            } else {
                                FatError::Io { what: "writing", path: show(&path), source: e }
                            }
                        })?;
                        off += n as u64;
                    }
                    f.flush().map_err(io_err("writing", &path))?;
                }
                _ => unreachable!("check_tree refused other kinds"),
            }
        }
    }
    time.set(params.epoch);
    let stats = fs.stats().map_err(io_err("reading statistics", b""))?;
    let used = u64::from(stats.total_clusters() - stats.free_clusters()) * u64::from(stats.cluster_size());
    let kind = format!("{:?}", fs.fat_type());
    fs.unmount().map_err(io_err("closing", b""))?;
    fix_dot_entries(region).map_err(io_err("fixing the `.` and `..` entries", b""))?;
    Ok(FsReport { kind: "vfat".into(), used_bytes: used, notes: vec![kind] })
}

/// Geometry of a FAT volume, read from its boot sector.
struct Geometry {
    cluster_bytes: u64,
    fat_start: u64,
    data_start: u64,
    root_cluster: u32,
    /// 12, 16 or 32.
    bits: u32,
    /// FAT12/16 fixed root directory: (offset, bytes).
    fixed_root: Option<(u64, u64)>,
}

impl Geometry {
    fn read(region: Region<'_>) -> std::io::Result<Geometry> {
        let mut b = [0u8; 512];
        region.read_at(&mut b, 0).map_err(std::io::Error::other)?;
        let u16at = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let u32at = |o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
        let bps = u16at(0x0b);
        let spc = u64::from(b[0x0d]);
        let reserved = u16at(0x0e);
        let fats = u64::from(b[0x10]);
        let root_entries = u16at(0x11);
        let total = if u16at(0x13) != 0 { u16at(0x13) } else { u32at(0x20) };
        let fat_size = if u16at(0x16) != 0 { u16at(0x16) } else { u32at(0x24) };
        let root_dir_sectors = (root_entries * 32).div_ceil(bps);
        let data_sector = reserved + fats * fat_size + root_dir_sectors;
        let clusters = (total - data_sector) / spc;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        Ok(Geometry {
            cluster_bytes: bps * spc,
            fat_start: reserved * bps,
            data_start: data_sector * bps,
            root_cluster: if bits == 32 { u32at(0x2c) as u32 } else { 0 },
            bits,
            fixed_root: (bits != 32).then(|| ((reserved + fats * fat_size) * bps, root_entries * 32)),
        })
    }

    fn next(&self, region: Region<'_>, c: u32) -> std::io::Result<Option<u32>> {
        let mut b = [0u8; 4];
        let (v, end) = match self.bits {
            32 => {
                region.read_at(&mut b, self.fat_start + u64::from(c) * 4).map_err(std::io::Error::other)?;
                (u32::from_le_bytes(b) & 0x0fff_ffff, 0x0fff_fff8)
            }
            16 => {
                region.read_at(&mut b[..2], self.fat_start + u64::from(c) * 2).map_err(std::io::Error::other)?;
                (u32::from(u16::from_le_bytes([b[0], b[1]])), 0xfff8)
            }
            _ => {
                let off = self.fat_start + u64::from(c) * 3 / 2;
                region.read_at(&mut b[..2], off).map_err(std::io::Error::other)?;
                let v = u32::from(u16::from_le_bytes([b[0], b[1]]));
                (if c % 2 == 1 { v >> 4 } else { v & 0xfff }, 0xff8)
            }
        };
        Ok((v >= 2 && v < end).then_some(v))
    }

    /// Byte ranges of a directory: its cluster chain, or the fixed root.
    fn dir_extents(&self, region: Region<'_>, cluster: u32) -> std::io::Result<Vec<(u64, u64)>> {
        if cluster == 0 {
            return Ok(self.fixed_root.into_iter().collect());
        }
        let mut out = Vec::new();
        let mut c = Some(cluster);
        while let Some(cur) = c {
            out.push((self.data_start + u64::from(cur - 2) * self.cluster_bytes, self.cluster_bytes));
            if out.len() > 1 << 20 {
                return Err(std::io::Error::other("cluster chain loops"));
            }
            c = self.next(region, cur)?;
        }
        Ok(out)
    }
}

/// Rewrite the first slots of every subdirectory as `fsck.fat` expects:
/// `.` then `..` (cluster 0 when the parent is the root), with no long-name
/// entries in front of them. See the module doc for why.
fn fix_dot_entries(region: Region<'_>) -> std::io::Result<()> {
    let g = Geometry::read(region)?;
    let mut stack = vec![(g.root_cluster, true)];
    while let Some((cluster, is_root)) = stack.pop() {
        let extents = g.dir_extents(region, cluster)?;
        let mut buf = Vec::new();
        for (off, len) in &extents {
            let mut b = vec![0u8; *len as usize];
            region.read_at(&mut b, *off).map_err(std::io::Error::other)?;
            buf.extend_from_slice(&b);
        }
        let entries: Vec<&[u8]> = buf.chunks(32).collect();
        if !is_root {
            let dot = entries.iter().position(|e| &e[..11] == b".          " && e[11] != 0x0f);
            let dotdot = entries.iter().position(|e| &e[..11] == b"..         " && e[11] != 0x0f);
            if let (Some(d), Some(dd)) = (dot, dotdot) {
                let mut fixed: Vec<u8> = Vec::with_capacity(buf.len());
                fixed.extend_from_slice(entries[d]);
                let mut dd_entry = entries[dd].to_vec();
                let parent = parent_of(&g, cluster, &dd_entry);
                dd_entry[0x14..0x16].copy_from_slice(&((parent >> 16) as u16).to_le_bytes());
                dd_entry[0x1a..0x1c].copy_from_slice(&(parent as u16).to_le_bytes());
                fixed.extend_from_slice(&dd_entry);
                for e in &entries[dd + 1..] {
                    fixed.extend_from_slice(e);
                }
                fixed.resize(buf.len(), 0);
                let mut pos = 0usize;
                for (off, len) in &extents {
                    region.write_at(&fixed[pos..pos + *len as usize], *off).map_err(std::io::Error::other)?;
                    pos += *len as usize;
                }
                buf = fixed;
            }
        }
        for e in buf.chunks(32) {
            if e[0] == 0 {
                break;
            }
            let attr = e[11];
            if e[0] == 0xe5 || attr == 0x0f || attr & 0x10 == 0 || e[0] == b'.' {
                continue;
            }
            let c = (u32::from(u16::from_le_bytes([e[0x14], e[0x15]])) << 16) | u32::from(u16::from_le_bytes([e[0x1a], e[0x1b]]));
            if c >= 2 {
                stack.push((c, false));
            }
        }
    }
    Ok(())
}

/// The cluster `..` must name: 0 for a parent that is the root directory.
fn parent_of(g: &Geometry, _cluster: u32, dotdot: &[u8]) -> u32 {
    let c =
        (u32::from(u16::from_le_bytes([dotdot[0x14], dotdot[0x15]])) << 16) | u32::from(u16::from_le_bytes([dotdot[0x1a], dotdot[0x1b]]));
    if c == g.root_cluster {
        0
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
        let t = fat_time(1_700_000_000);
        assert_eq!((t.date.year, t.date.month, t.date.day, t.time.hour), (2023, 11, 14, 22));
        assert_eq!(fat_time(0).date.year, 1980);
    }

    #[test]
    fn names() {
        assert!(check_name(b"BOOTX64.EFI").is_ok());
        assert!(check_name(b"a:b").is_err());
        assert!(check_name(b"dot.").is_err());
    }
}
