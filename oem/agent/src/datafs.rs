//! Empty filesystems on data disks: used by provisioning for Ignition's
//! `storage.filesystems` entries that name a data disk (not the running
//! root), at first boot. The writers are the builder's own (the `imagefs`
//! crate, without btrfs compression), so the agent needs no mkfs tools.
//!
//! Not called by the boot path yet: provisioning still refuses entries that
//! do not name the root (`provisioning.rs`).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

pub use imagefs::{FsKind, Uuid};

/// Put an empty filesystem of `format` (`ext4`, `btrfs`, `vfat`, as in
/// Ignition's `format`) over all of `device`, with `label`, `uuid` and every
/// time `epoch`, and sync it. A block device is opened exclusively
/// (`O_EXCL`), so one that is mounted or in use is refused (EBUSY), never
/// overwritten. Returns the writer's report (its kind, bytes used, notes
/// such as a truncated label) for the provisioning record.
pub fn format(device: &Path, format: &str, label: &str, uuid: Uuid, epoch: i64) -> Result<imagefs::fs::FsReport, String> {
    let kind =
        FsKind::from_name(format).ok_or_else(|| format!("format `{format}` is not one the agent writes: use ext4, btrfs or vfat"))?;
    let dev = device.display();
    let is_block = std::fs::metadata(device).map_err(|e| format!("{dev}: {e}"))?.file_type().is_block_device();
    let mut file = File::options()
        .read(true)
        .write(true)
        .custom_flags(if is_block { libc::O_EXCL } else { 0 })
        .open(device)
        .map_err(|e| format!("opening {dev} to format it: {e}"))?;
    let size = file.seek(SeekFrom::End(0)).map_err(|e| format!("{dev}: finding its size: {e}"))?;
    let report = imagefs::format_empty(kind, &file, 0, size, label, uuid, epoch).map_err(|e| {
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
        format!("{dev}: {e}{cause}")
    })?;
    file.sync_all().map_err(|e| format!("{dev}: syncing the new {kind} filesystem: {e}"))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_a_file_with_each_kind_and_refuses_others() {
        for kind in ["ext4", "btrfs", "vfat"] {
            let f = tempfile::NamedTempFile::new().unwrap();
            f.as_file().set_len(48 << 20).unwrap();
            let r = format(f.path(), kind, "data", Uuid::from_bytes([7; 16]), 1_700_000_000).unwrap();
            assert_eq!(r.kind, kind);
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = format(f.path(), "xfs", "data", Uuid::nil(), 0).unwrap_err();
        assert!(e.contains("`xfs`"), "{e}");
    }
}
