//! `build-image convert`: one raw image to qcow2, VMDK or VHD, with the same
//! writers a build uses (handy on its own, and to time the conversion alone).

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Error;

/// The formats `convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    Vmdk,
    Vhd,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
        }
    }
}

/// Convert `raw` into `dest` (default: `raw` with the format's extension),
/// atomically: a temp file beside `dest`, synced (if `sync`), then renamed.
/// `compress` applies to qcow2 (VMDK streamOptimized is always compressed).
///
/// Without `sync` the output is left in the page cache, as `qemu-img
/// convert` leaves it by default (its `-t unsafe`): the rename still means
/// no reader ever sees a half-written file, but after a crash of the
/// machine (not of this process) the file may be incomplete. With it the
/// data is written with O_DIRECT and the file fsynced before the rename.
pub fn convert(raw: &Path, to: Format, compress: bool, dest: Option<&Path>, sync: bool) -> Result<PathBuf, Error> {
    let dest: PathBuf = dest.map(Path::to_path_buf).unwrap_or_else(|| raw.with_extension(to.extension()));
    let src = File::open(raw).map_err(|e| Error::io(format!("opening {}", raw.display()), e))?;
    let len = src.metadata().map_err(|e| Error::io(format!("reading {}", raw.display()), e))?.len();
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = crate::files::temp_in(&dir, "convert")?;
    let what = format!("writing {}", dest.display());
    let threads = crate::parallel::threads();
    match to {
        Format::Qcow2 if compress => super::qcow2::write_compressed(&src, len, tmp.as_file(), 6, threads),
        Format::Qcow2 => super::qcow2::write(&src, len, tmp.as_file(), sync, threads),
        Format::Vmdk => {
            let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let opts = super::vmdk::VmdkOptions { threads, ..Default::default() };
            super::vmdk::write(&src, len, tmp.as_file(), &name, &opts)
        }
        Format::Vhd => {
            // No recipe here: the unique id comes from the image's size and
            // first MiB, the timestamp from SOURCE_DATE_EPOCH (default 0).
            let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            let mut head = vec![0u8; len.min(1 << 20) as usize];
            std::os::unix::fs::FileExt::read_exact_at(&src, &mut head, 0)
                .map_err(|e| Error::io(format!("reading {}", raw.display()), e))?;
            let mut h = Sha256::new();
            h.update(len.to_le_bytes());
            h.update(&head);
            let d = h.finalize();
            let mut id = [0u8; 16];
            id.copy_from_slice(&d[..16]);
            super::vhd::write(&src, len, tmp.as_file(), epoch, id, sync)
        }
    }
    .map_err(|e| Error::io(what.clone(), e))?;
    if sync {
        tmp.as_file().sync_all().map_err(|e| Error::io(what.clone(), e))?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(&dest).map_err(|e| Error::io(format!("renaming into {}", dest.display()), e))?;
    Ok(dest)
}
