//! Small helpers on host files that several stages need: the temp files
//! every output is written to before its rename (atomic outputs), and the
//! sha256 of a (sparse) file for the manifest and the package cache. They
//! sit below the stages that use them (`boot`, `output`, `pipeline`), so
//! none of those reaches into another for them.

use std::fs::File;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::tree::content::data_ranges_or_whole;
use crate::Error;

/// A new temp file `.NAME.XXXX.tmp` in `dir` (the output folder), removed
/// when dropped unless persisted under its final name.
pub fn temp_in(dir: &Path, name: &str) -> Result<tempfile::NamedTempFile, Error> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a temp file in {}", dir.display()), e))
}

/// sha256 of a whole file, streamed.
pub fn sha256_file(f: &File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    // Holes hash as zeros without reading them (a sparse image is mostly
    // holes); without hole information, read it all.
    let ranges = data_ranges_or_whole(f, len)?;
    let zeros = vec![0u8; 1 << 20];
    let hash_zeros = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    let mut off = 0u64;
    for r in &ranges {
        let (start, end) = (r.start.max(off).min(len), r.end.min(len));
        if start >= end {
            continue;
        }
        hash_zeros(&mut h, start - off);
        off = start;
        while off < end {
            let n = buf.len().min((end - off) as usize);
            f.read_exact_at(&mut buf[..n], off)?;
            h.update(&buf[..n]);
            off += n as u64;
        }
    }
    hash_zeros(&mut h, len - off);
    Ok(hex::encode(h.finalize()))
}
