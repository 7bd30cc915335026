//! Derived outputs and the manifest.

pub mod convert;
pub mod coreos;
pub mod grains;
pub mod manifest;
pub mod oci;
pub mod qcow2;
pub mod vhd;
pub mod vmdk;

use std::fs::File;
use std::os::unix::fs::FileExt;

/// A `Write` that writes positionally into a file, moving forward from a
/// start offset (wrap it in a `BufWriter`).
pub(crate) struct WriteAt<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> WriteAt<'a> {
    pub(crate) fn new(file: &'a File, pos: u64) -> Self {
        WriteAt { file, pos }
    }
}

impl std::io::Write for WriteAt<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Make `out` empty, without a truncate when it already is (a fresh temp
/// file). ext4 marks a file truncated to size 0 for "replace" semantics
/// (auto_da_alloc) and then starts writing all of its data back when it is
/// closed: a hidden flush that cost `convert --no-sync` tens of ms.
pub(crate) fn empty(out: &std::fs::File) -> std::io::Result<()> {
    if out.metadata()?.len() != 0 {
        out.set_len(0)?;
    }
    Ok(())
}
