//! Small helpers on host files that several stages need: the unnamed temp
//! files every output is written to before it gets its name (atomic
//! outputs that leave nothing behind, even when killed), and the
//! sha256 of a (sparse) file for the manifest and the package cache. They
//! sit below the stages that use them (`boot`, `output`, `pipeline`), so
//! none of those reaches into another for them.

use std::fs::File;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::tree::content::data_ranges_or_whole;
use crate::Error;

/// An output being written: an unnamed file in the output folder
/// (`O_TMPFILE`), which gets a name only in [`TempOut::persist`]. A build
/// that fails, is interrupted or is killed (SIGKILL included) leaves
/// nothing behind: the kernel frees an unnamed file with its last
/// descriptor. Where the folder's filesystem cannot make unnamed files
/// (`EOPNOTSUPP`: some network and FUSE filesystems), it falls back to a
/// named temp file `.NAME.XXXX.tmp`, removed when dropped (so on errors),
/// but not when a signal ends the process.
pub struct TempOut {
    inner: Inner,
    /// For messages: what the file will become.
    label: std::path::PathBuf,
}

enum Inner {
    Unnamed { file: File, dir: std::path::PathBuf, name: String },
    Named(tempfile::NamedTempFile),
}

/// A new [`TempOut`] in `dir` for an output of the recipe `name`.
pub fn temp_in(dir: &Path, name: &str) -> Result<TempOut, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let label = dir.join(format!("(unnamed temporary file for {name})"));
    match std::fs::OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(dir) {
        Ok(file) => Ok(TempOut { inner: Inner::Unnamed { file, dir: dir.to_path_buf(), name: name.to_string() }, label }),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)) => {
            let named = tempfile::Builder::new()
                .prefix(&format!(".{name}."))
                .suffix(".tmp")
                .tempfile_in(dir)
                .map_err(|e| Error::io(format!("creating a temp file in {}", dir.display()), e))?;
            let label = named.path().to_path_buf();
            Ok(TempOut { inner: Inner::Named(named), label })
        }
        Err(e) => Err(Error::io(format!("creating a temp file in {}", dir.display()), e)),
    }
}

impl TempOut {
    pub fn as_file(&self) -> &File {
        match &self.inner {
            Inner::Unnamed { file, .. } => file,
            Inner::Named(n) => n.as_file(),
        }
    }

    pub fn as_file_mut(&mut self) -> &mut File {
        match &mut self.inner {
            Inner::Unnamed { file, .. } => file,
            Inner::Named(n) => n.as_file_mut(),
        }
    }

    /// A path for messages (the named fallback's real path).
    pub fn path(&self) -> &Path {
        &self.label
    }

    /// Give the file its final name `dest`, atomically replacing what is
    /// there: link it under a hidden unique name in its folder, then rename
    /// that over `dest` (`linkat` cannot replace). Between the two steps,
    /// microseconds long, a SIGKILL would leave the hidden name.
    pub fn persist(self, dest: &Path) -> std::io::Result<()> {
        match self.inner {
            Inner::Named(n) => n.persist(dest).map(|_| ()).map_err(|e| e.error),
            Inner::Unnamed { file, dir, name } => {
                let hidden = link_unnamed(&file, &dir, &name)?;
                std::fs::rename(&hidden, dest).inspect_err(|_| {
                    let _ = std::fs::remove_file(&hidden);
                })
            }
        }
    }
}

impl std::io::Write for TempOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.as_file_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.as_file_mut().flush()
    }
}

/// `linkat` an `O_TMPFILE` file to a new hidden name `.NAME.N.tmp` in
/// `dir`: through `/proc/self/fd` (any user), else `AT_EMPTY_PATH` (needs
/// CAP_DAC_READ_SEARCH, for a system without /proc).
fn link_unnamed(file: &File, dir: &Path, name: &str) -> std::io::Result<std::path::PathBuf> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let fd = file.as_raw_fd();
    let proc_path = CString::new(format!("/proc/self/fd/{fd}")).unwrap();
    for _ in 0..100 {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let hidden = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let c = CString::new(hidden.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: both paths are NUL-terminated C strings that outlive the calls.
        let mut r = unsafe { libc::linkat(libc::AT_FDCWD, proc_path.as_ptr(), libc::AT_FDCWD, c.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
            // SAFETY: as above; the empty path with AT_EMPTY_PATH names `fd`.
            r = unsafe { libc::linkat(fd, c"".as_ptr(), libc::AT_FDCWD, c.as_ptr(), libc::AT_EMPTY_PATH) };
        }
        if r == 0 {
            return Ok(hidden);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("no free temporary name in {}", dir.display())))
}

/// Where streaming a file's content failed.
pub enum CopyError {
    /// Reading its source (a source shorter than the size given is
    /// `UnexpectedEof`: it changed while building).
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Stream `size` bytes of `content` (holes read as zeros) into `w` through
/// `buf`: the cpio and tar writers' common loop.
pub fn copy_content(
    content: &crate::tree::content::Content,
    size: u64,
    w: &mut dyn std::io::Write,
    buf: &mut [u8],
) -> Result<(), CopyError> {
    if size == 0 {
        return Ok(());
    }
    let reader = content.open().map_err(CopyError::Read)?;
    let mut off = 0u64;
    while off < size {
        let want = buf.len().min((size - off) as usize);
        let n = reader.read_at(&mut buf[..want], off).map_err(CopyError::Read)?;
        if n == 0 {
            return Err(CopyError::Read(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the source ended at {off} of {size} bytes (did it change while building?)"),
            )));
        }
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        off += n as u64;
    }
    Ok(())
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
