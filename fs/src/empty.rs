//! [`format_empty`]: an empty filesystem on a data disk (the guest agent,
//! for Ignition's `storage.filesystems` at first boot).

use std::fs::File;

use uuid::Uuid;

use crate::derive::derive_bytes;
use crate::disk::{Region, RegionError};
use crate::fs::{btrfs, ext4, fat, FsParams, FsReport};
use crate::tree::Tree;

/// The filesystems [`format_empty`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext4,
    Btrfs,
    Vfat,
}

impl FsKind {
    /// The name `mount -t` and Ignition's `format` use: `ext4`, `btrfs`,
    /// `vfat`.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
        }
    }

    /// The kind for such a name, if this crate writes it.
    pub fn from_name(name: &str) -> Option<FsKind> {
        match name {
            "ext4" => Some(FsKind::Ext4),
            "btrfs" => Some(FsKind::Btrfs),
            "vfat" => Some(FsKind::Vfat),
            _ => None,
        }
    }
}

impl std::fmt::Display for FsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of [`format_empty`]. The source is the writer's error, which says
/// what was wrong (e.g. a region too small for the filesystem).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("formatting {len} bytes at offset {offset} as ext4")]
    Ext4 {
        offset: u64,
        len: u64,
        #[source]
        source: ext4::Ext4Error,
    },
    #[error("formatting {len} bytes at offset {offset} as btrfs")]
    Btrfs {
        offset: u64,
        len: u64,
        #[source]
        source: btrfs::BtrfsError,
    },
    #[error("formatting {len} bytes at offset {offset} as vfat")]
    Vfat {
        offset: u64,
        len: u64,
        #[source]
        source: fat::FatError,
    },
    #[error("zeroing the old signatures in {len} bytes at offset {offset}")]
    Wipe {
        offset: u64,
        len: u64,
        #[source]
        source: RegionError,
    },
}

const MIB: u64 = 1 << 20;

/// Zero where other formats keep the signatures that blkid probes and the
/// new filesystem might not overwrite: the first MiB (partition tables,
/// ext2/3/4, FAT, XFS, LUKS, LVM, swap, ISO 9660, btrfs's primary
/// superblock), the last MiB (md RAID 0.90/1.0, ZFS's last labels, a GPT
/// backup) and btrfs's superblock mirrors (64 MiB, 256 GiB). Otherwise a
/// disk that held another filesystem probes as both ("ambivalent"), and
/// udev gives it no by-label or by-uuid link.
fn wipe_signatures(region: &Region<'_>) -> Result<(), RegionError> {
    let len = region.len();
    let head = len.min(MIB);
    region.zero(0, head)?;
    let tail = len.saturating_sub(MIB).max(head);
    region.zero(tail, len - tail)?;
    for mirror in [64 * MIB, 256 << 30] {
        if mirror + 4096 <= len {
            region.zero(mirror, 4096)?;
        }
    }
    Ok(())
}

/// Write an empty filesystem of `kind` (a root directory only, mode 0755,
/// owned by root, every time `epoch`) over `len` bytes of `file` from
/// `offset`: an image file or a block device, whose size the caller knows
/// (the file is never resized; a block device is written with positional
/// writes only).
///
/// The writers' defaults apply: ext4 as Debian's mke2fs writes it (4 KiB
/// blocks, journal, `metadata_csum`; a tail under 4 KiB is left alone),
/// btrfs as mkfs.btrfs ≥ 5.15 (DUP metadata, free-space tree), FAT32 when
/// the region holds enough clusters, else FAT16/12. `label` is truncated to
/// what the filesystem holds (ext4 16 bytes, vfat 11 upper-case
/// characters; the report's notes say so). `uuid` is the filesystem UUID;
/// vfat takes its first 4 bytes, little-endian, as the volume serial.
/// Internal identities (btrfs chunk-tree and device UUIDs, the ext4
/// directory hash seed) are derived from `uuid`, so the same arguments give
/// the same bytes.
///
/// Every metadata block is written explicitly, so old data on the device
/// does not matter, and the places where other formats keep their
/// signatures (the first and last MiB, btrfs's superblock mirrors) are
/// zeroed first, so that blkid and udev see only the new filesystem.
/// Open `file` without O_DIRECT: not every metadata write is aligned as
/// O_DIRECT wants. (Only the btrfs writer's bulk file data goes by
/// O_DIRECT, which it turns on and off itself and does without where the
/// file refuses it; an empty filesystem has none.) Nothing is synced: call
/// `file.sync_all()` when the filesystem must survive a crash before it is
/// mounted. On an error the region may be partly written.
pub fn format_empty(
    kind: FsKind,
    file: &File,
    offset: u64,
    len: u64,
    label: &str,
    uuid: Uuid,
    epoch: i64,
) -> Result<FsReport, FormatError> {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid.as_bytes());
    key[16..].copy_from_slice(uuid.as_bytes());
    let seed = derive_bytes(&key, "imagefs-format-empty-seed");
    let params = FsParams { label: label.to_string(), uuid, seed, epoch };
    let name = format!("the new {kind} filesystem");
    let region = Region::new(file, offset, len, &name);
    let tree = Tree::new(epoch);
    wipe_signatures(&region).map_err(|source| FormatError::Wipe { offset, len, source })?;
    match kind {
        FsKind::Ext4 => {
            let opts = ext4::Ext4Options::default();
            ext4::write(&tree, region, &params, &opts).map_err(|source| FormatError::Ext4 { offset, len, source })
        }
        FsKind::Btrfs => {
            let opts = btrfs::BtrfsOptions::default();
            btrfs::write(&tree, region, &params, &opts).map_err(|source| FormatError::Btrfs { offset, len, source })
        }
        FsKind::Vfat => fat::write(&tree, region, &params).map_err(|source| FormatError::Vfat { offset, len, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::process::Command;

    use super::*;

    const EPOCH: i64 = 1_700_000_000;
    const KINDS: [FsKind; 3] = [FsKind::Ext4, FsKind::Btrfs, FsKind::Vfat];

    fn uuid() -> Uuid {
        Uuid::from_bytes([0x44, 0x33, 0x22, 0x11, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16])
    }

    /// A file of `len` bytes full of old data (no zeros anywhere), as a
    /// used disk would be.
    fn dirty_file(len: u64) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let chunk: Vec<u8> = (0..MIB as usize).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(9) as u8 | 1).collect();
        for at in (0..len).step_by(MIB as usize) {
            let n = chunk.len().min((len - at) as usize);
            f.as_file().write_all_at(&chunk[..n], at).unwrap();
        }
        f
    }

    /// The real checker for `kind`, or None (with a message) when it is not
    /// installed (Debian: e2fsprogs, btrfs-progs, dosfstools).
    fn checker(kind: FsKind, image: &Path) -> Option<Command> {
        let (tool, args): (&str, &[&str]) = match kind {
            FsKind::Ext4 => ("e2fsck", &["-fn"]),
            FsKind::Btrfs => ("btrfs", &["check", "--readonly"]),
            FsKind::Vfat => ("fsck.fat", &["-n"]),
        };
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} is not installed: skipping the check of the {kind} filesystem");
            return None;
        }
        let mut c = Command::new(tool);
        c.args(args).arg(image);
        Some(c)
    }

    fn check(kind: FsKind, image: &Path) {
        let Some(mut c) = checker(kind, image) else { return };
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn each_kind_formats_a_used_64_mib_disk_cleanly() {
        for kind in KINDS {
            let f = dirty_file(64 * MIB);
            let report = format_empty(kind, f.as_file(), 0, 64 * MIB, "data", uuid(), EPOCH).unwrap();
            assert_eq!(report.kind, kind.name());
            assert!(report.used_bytes > 0 && report.used_bytes < 64 * MIB, "{kind}: {report:?}");
            assert_eq!(f.as_file().metadata().unwrap().len(), 64 * MIB, "{kind}: the file was resized");
            check(kind, f.path());
        }
    }

    #[test]
    fn identity_lands_in_the_superblock() {
        let read = |f: &tempfile::NamedTempFile, at: u64, n: usize| {
            let mut b = vec![0u8; n];
            f.as_file().read_exact_at(&mut b, at).unwrap();
            b
        };
        let f = dirty_file(64 * MIB);
        format_empty(FsKind::Ext4, f.as_file(), 0, 64 * MIB, "data", uuid(), EPOCH).unwrap();
        assert_eq!(read(&f, 1024 + 0x68, 16), uuid().as_bytes());
        assert_eq!(read(&f, 1024 + 0x78, 16), b"data\0\0\0\0\0\0\0\0\0\0\0\0");
        format_empty(FsKind::Btrfs, f.as_file(), 0, 64 * MIB, "data", uuid(), EPOCH).unwrap();
        assert_eq!(read(&f, 0x10000 + 0x20, 16), uuid().as_bytes());
        assert_eq!(read(&f, 0x10000 + 0x12b, 5), b"data\0");
        format_empty(FsKind::Vfat, f.as_file(), 0, 64 * MIB, "data", uuid(), EPOCH).unwrap();
        // 64 MiB is FAT32 (512-byte clusters): serial at 0x43, label at 0x47.
        assert_eq!(read(&f, 0x43, 4), [0x44, 0x33, 0x22, 0x11]);
        assert_eq!(read(&f, 0x47, 11), b"DATA       ");
    }

    #[test]
    fn only_the_region_is_written_and_the_same_arguments_give_the_same_bytes() {
        // An offset that is not 4 KiB-aligned, as a partition on a disk
        // with 512-byte sectors may be: every write is then unaligned for
        // O_DIRECT, which must not matter.
        let (offset, len) = (MIB + 512, 40 * MIB);
        for kind in KINDS {
            let mut images = Vec::new();
            for _ in 0..2 {
                let f = dirty_file(offset + len + MIB);
                let before = std::fs::read(f.path()).unwrap();
                format_empty(kind, f.as_file(), offset, len, "data", uuid(), EPOCH).unwrap();
                let after = std::fs::read(f.path()).unwrap();
                let (o, e) = (offset as usize, (offset + len) as usize);
                assert!(before[..o] == after[..o] && before[e..] == after[e..], "{kind}: wrote outside the region");
                let region = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(region.path(), &after[o..e]).unwrap();
                check(kind, region.path());
                images.push(after);
            }
            assert!(images[0] == images[1], "{kind}: two runs differ");
        }
    }

    #[test]
    fn a_region_too_small_is_an_error_that_says_where() {
        let f = dirty_file(2 * MIB);
        for kind in [FsKind::Ext4, FsKind::Btrfs] {
            let e = format_empty(kind, f.as_file(), 4096, 64 << 10, "data", uuid(), EPOCH).unwrap_err();
            assert!(e.to_string().contains(&format!("65536 bytes at offset 4096 as {kind}")), "{e}");
            let cause = std::error::Error::source(&e).map(|c| c.to_string()).unwrap_or_default();
            assert!(cause.contains("too small") || cause.contains("at least"), "{kind}: {cause}");
        }
    }

    #[test]
    fn a_disk_that_held_another_filesystem_probes_as_the_new_one_only() {
        if Command::new("blkid").arg("--version").output().is_err() {
            eprintln!("blkid is not installed: skipping the probe check");
            return;
        }
        for old in KINDS {
            for new in KINDS.into_iter().filter(|k| *k != old) {
                let f = dirty_file(300 * MIB);
                format_empty(old, f.as_file(), 0, 300 * MIB, "old", uuid(), EPOCH).unwrap();
                format_empty(new, f.as_file(), 0, 300 * MIB, "new", uuid(), EPOCH).unwrap();
                let out = Command::new("blkid").args(["-p", "-o", "export"]).arg(f.path()).output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && text.contains(&format!("TYPE={}\n", new.name())),
                    "{old} then {new}: blkid -p says ({}):\n{text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    #[test]
    fn kinds_have_their_mount_names() {
        for kind in KINDS {
            assert_eq!(FsKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(FsKind::from_name("xfs"), None);
    }
}
