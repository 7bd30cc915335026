//! File content by reference: a host file, a slice of an archive (or of a
//! spool file holding a decompressed archive), or a small byte buffer.
//!
//! Holes are part of the content: [`Content::data_ranges`] lists the byte
//! ranges that hold data, found with `SEEK_DATA`/`SEEK_HOLE` on host files,
//! so writers can keep sparse files sparse.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file that many [`Content::Slice`]s point into (an uncompressed
/// archive, or a spool file holding a decompressed one).
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub file: File,
}

/// Where the bytes of a regular file come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// Small content held in memory (inline recipe files, generated config).
    Bytes(Arc<[u8]>),
    /// A file on the host, opened when its data is copied.
    Host {
        path: Arc<Path>,
        len: u64,
        /// Data ranges when the file is sparse; `None` means all data.
        sparse: Option<Arc<[Range<u64>]>>,
    },
    /// `len` bytes at `offset` of an open source file.
    Slice { source: Arc<SourceFile>, offset: u64, len: u64, sparse: Option<Arc<[Range<u64>]>> },
}

impl Content {
    pub fn bytes(b: impl Into<Vec<u8>>) -> Content {
        Content::Bytes(Arc::from(b.into().into_boxed_slice()))
    }

    /// Reference a host file, recording its holes.
    pub fn host(path: &Path) -> io::Result<Content> {
        let f = File::open(path)?;
        let len = f.metadata()?.len();
        let sparse = find_data_ranges(&f, len)?;
        Ok(Content::Host { path: Arc::from(path), len, sparse })
    }

    /// Apparent size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Host { len, .. } | Content::Slice { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The byte ranges holding data, sorted and disjoint. Everything else is a
    /// hole (reads as zeros).
    pub fn data_ranges(&self) -> Vec<Range<u64>> {
        let (len, sparse) = match self {
            Content::Bytes(b) => (b.len() as u64, None),
            Content::Host { len, sparse, .. } | Content::Slice { len, sparse, .. } => (*len, sparse.as_ref()),
        };
        sparse.map_or_else(|| whole(len), |r| r.to_vec())
    }

    /// Whether the content has holes.
    pub fn is_sparse(&self) -> bool {
        matches!(self, Content::Host { sparse: Some(_), .. } | Content::Slice { sparse: Some(_), .. })
    }

    /// Open the content for positional reads.
    pub fn open(&self) -> io::Result<ContentReader> {
        Ok(match self {
            Content::Bytes(b) => ContentReader::Bytes(b.clone()),
            Content::Host { path, len, .. } => {
                let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
                ContentReader::File { file: Arc::new(file), base: 0, len: *len }
            }
            Content::Slice { source, offset, len, .. } => ContentReader::Shared { source: source.clone(), base: *offset, len: *len },
        })
    }

    /// Where the content comes from, for messages.
    pub fn origin(&self) -> String {
        match self {
            Content::Bytes(_) => "inline bytes".into(),
            Content::Host { path, .. } => path.display().to_string(),
            Content::Slice { source, offset, .. } => format!("{} at offset {offset}", source.path.display()),
        }
    }
}

/// An opened [`Content`].
#[derive(Debug)]
pub enum ContentReader {
    Bytes(Arc<[u8]>),
    File { file: Arc<File>, base: u64, len: u64 },
    Shared { source: Arc<SourceFile>, base: u64, len: u64 },
}

impl ContentReader {
    fn file(&self) -> Option<(&File, u64, u64)> {
        match self {
            ContentReader::Bytes(_) => None,
            ContentReader::File { file, base, len } => Some((file, *base, *len)),
            ContentReader::Shared { source, base, len } => Some((&source.file, *base, *len)),
        }
    }

    /// Read at `off` within the content; short only at the end.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match self {
            ContentReader::Bytes(b) => {
                if off >= b.len() as u64 {
                    return Ok(0);
                }
                let s = &b[off as usize..];
                let n = s.len().min(buf.len());
                buf[..n].copy_from_slice(&s[..n]);
                Ok(n)
            }
            _ => {
                let (f, base, len) = self.file().expect("file-backed");
                if off >= len {
                    return Ok(0);
                }
                let want = buf.len().min((len - off) as usize);
                let mut done = 0;
                while done < want {
                    let n = f.read_at(&mut buf[done..want], base + off + done as u64)?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source file shrank while building"));
                    }
                    done += n;
                }
                Ok(want)
            }
        }
    }

    /// Fill `buf` completely from `off` (zeros past the end).
    pub fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let n = self.read_at(buf, off)?;
        buf[n..].fill(0);
        Ok(())
    }

    /// Copy `len` bytes from `src_off` of the content to `dst` at `dst_off`,
    /// with `copy_file_range` when the content is a file (falling back to
    /// read/write where the kernel refuses a cross-filesystem copy).
    pub fn copy_to(&self, src_off: u64, len: u64, dst: &File, dst_off: u64) -> io::Result<()> {
        if let Some((f, base, flen)) = self.file() {
            if src_off + len <= flen && copy_range(f, base + src_off, dst, dst_off, len)? {
                return Ok(());
            }
        }
        let mut buf = vec![0u8; (len.min(1 << 20)) as usize];
        let mut done = 0u64;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            self.read_exact_at(&mut buf[..n], src_off + done)?;
            dst.write_all_at(&buf[..n], dst_off + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// `copy_file_range` the whole range; Ok(false) when the kernel refuses it
/// for these files (so the caller falls back to plain reads and writes).
fn copy_range(src: &File, mut src_off: u64, dst: &File, mut dst_off: u64, mut len: u64) -> io::Result<bool> {
    let mut first = true;
    while len > 0 {
        let mut so = src_off as libc::loff_t;
        let mut d = dst_off as libc::loff_t;
        let chunk = len.min(1 << 30) as usize;
        // SAFETY: both fds are open for the duration of the call; offsets
        // are passed by pointer to locals.
        let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, chunk, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if first && matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF)) {
                return Ok(false);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source file shrank while building"));
        }
        first = false;
        src_off += n as u64;
        dst_off += n as u64;
        len -= n as u64;
    }
    Ok(true)
}

/// Data ranges of a file by `SEEK_DATA`/`SEEK_HOLE`; `None` when the whole
/// file is data (the common case, kept small).
pub fn find_data_ranges(f: &File, len: u64) -> io::Result<Option<Arc<[Range<u64>]>>> {
    if len == 0 {
        return Ok(None);
    }
    let fd = f.as_raw_fd();
    let mut ranges = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on an open fd.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break,                                     // only a hole remains
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => return Ok(None), // no hole support
                _ => return Err(e),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (hole as u64).min(len);
        if end > data as u64 {
            ranges.push(data as u64..end);
        }
        pos = hole;
    }
    if ranges.len() == 1 && ranges[0] == (0..len) {
        return Ok(None);
    }
    Ok(Some(Arc::from(ranges.into_boxed_slice())))
}

/// The byte ranges of `f` (`len` bytes) that hold data, sorted and
/// disjoint: [`find_data_ranges`], or the whole file when it has no holes
/// or the filesystem cannot tell.
pub fn data_ranges_or_whole(f: &File, len: u64) -> io::Result<Vec<Range<u64>>> {
    Ok(find_data_ranges(f, len)?.map_or_else(|| whole(len), |r| r.to_vec()))
}

/// `0..len` as a list of data ranges: that one range, or none when `len`
/// is 0.
pub fn whole(len: u64) -> Vec<Range<u64>> {
    (len > 0).then_some(0..len).into_iter().collect()
}
