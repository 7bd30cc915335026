//! Bounds-checked positional I/O on a window of a file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::tree::content::ContentReader;

/// Errors from region I/O. An out-of-bounds access is a bug in a writer and
/// is reported as such instead of touching the neighbouring partition.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("{what}: write of {len} bytes at offset {offset} is outside the region of {size} bytes (a writer bug)")]
    OutOfBounds { what: String, offset: u64, len: u64, size: u64 },
    #[error("{what}: I/O at offset {offset}")]
    Io {
        what: String,
        offset: u64,
        #[source]
        source: io::Error,
    },
}

/// A window `[start, start+len)` of an output file. Cheap to copy and
/// `Sync`: positional writes from several threads are fine.
#[derive(Debug, Clone, Copy)]
pub struct Region<'f> {
    file: &'f File,
    start: u64,
    len: u64,
    name: &'f str,
}

impl<'f> Region<'f> {
    /// A region over `file` for `[start, start+len)`; `name` labels errors.
    pub fn new(file: &'f File, start: u64, len: u64, name: &'f str) -> Region<'f> {
        Region { file, start, len, name }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Absolute offset of the region in the file.
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn name(&self) -> &str {
        self.name
    }

    /// The underlying file (for callers that hand it to `copy_file_range`).
    pub fn file(&self) -> &'f File {
        self.file
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(RegionError::OutOfBounds { what: self.name.to_string(), offset, len, size: self.len }),
        }
    }

    fn io(&self, offset: u64, source: io::Error) -> RegionError {
        RegionError::Io { what: self.name.to_string(), offset, source }
    }

    /// A sub-window of this region.
    pub fn sub(&self, offset: u64, len: u64) -> Result<Region<'f>, RegionError> {
        self.check(offset, len)?;
        Ok(Region { file: self.file, start: self.start + offset, len, name: self.name })
    }

    /// Write all of `buf` at `offset` within the region.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), RegionError> {
        self.check(offset, buf.len() as u64)?;
        self.file.write_all_at(buf, self.start + offset).map_err(|e| self.io(offset, e))
    }

    /// Read exactly `buf.len()` bytes at `offset` within the region.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), RegionError> {
        self.check(offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, self.start + offset).map_err(|e| self.io(offset, e))
    }

    /// Write `len` zero bytes at `offset` explicitly (not a hole): for
    /// metadata that must read as zeros even on a disk full of old data.
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), RegionError> {
        self.check(offset, len)?;
        let buf = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            self.write_at(&buf[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Copy `len` bytes of opened content, from `src_off`, to `offset` in the
    /// region (`copy_file_range` where possible).
    pub fn copy_content(&self, src: &ContentReader, src_off: u64, len: u64, offset: u64) -> Result<(), RegionError> {
        self.check(offset, len)?;
        src.copy_to(src_off, len, self.file, self.start + offset).map_err(|e| self.io(offset, e))
    }

    /// A `Read + Write + Seek` cursor over the region, for crates that want
    /// a stream (the `gpt` and `fatfs` crates).
    pub fn io_cursor(&self) -> RegionIo<'f> {
        RegionIo { region: *self, pos: 0 }
    }
}

/// A seekable stream over a [`Region`]. Reads and writes past the end fail.
#[derive(Debug)]
pub struct RegionIo<'f> {
    region: Region<'f>,
    pos: u64,
}

fn to_io(e: RegionError) -> io::Error {
    io::Error::other(e)
}

impl Read for RegionIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.region.len.saturating_sub(self.pos)) as usize;
        self.region.read_at(&mut buf[..n], self.pos).map_err(to_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for RegionIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.region.write_at(buf, self.pos).map_err(to_io)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for RegionIo<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.region.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the region")),
        }
    }
}

/// Collects small pieces of file content that follow each other in the
/// region and writes each run with one `pwrite`: fewer calls into the host
/// filesystem (each takes the image's inode lock and updates its times)
/// than one `copy_file_range` per file. Large pieces still go by
/// `copy_file_range`. Call [`Staged::flush`] at the end.
pub struct Staged<'r> {
    region: Region<'r>,
    /// Region offset of `buf[0]`.
    at: u64,
    buf: Vec<u8>,
}

impl<'r> Staged<'r> {
    /// Pieces up to this size are staged.
    pub const SMALL: u64 = 64 << 10;
    /// A run is written out when it reaches this size.
    pub const RUN: usize = 1 << 20;

    pub fn new(region: Region<'r>) -> Staged<'r> {
        Staged { region, at: 0, buf: Vec::with_capacity(Self::RUN + Self::SMALL as usize) }
    }

    pub fn flush(&mut self) -> Result<(), RegionError> {
        if !self.buf.is_empty() {
            self.region.write_at(&self.buf, self.at)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Room for `len` more bytes at `offset`, contiguous with the run.
    pub fn extend(&mut self, offset: u64, len: u64) -> Result<&mut [u8], RegionError> {
        if self.buf.is_empty() || self.at + self.buf.len() as u64 != offset || self.buf.len() >= Self::RUN {
            self.flush()?;
            self.at = offset;
        }
        let n = self.buf.len();
        self.buf.resize(n + len as usize, 0);
        Ok(&mut self.buf[n..])
    }

    pub fn zero(&mut self, offset: u64, len: u64) -> Result<(), RegionError> {
        if len > Self::SMALL {
            self.flush()?;
            return self.region.zero(offset, len);
        }
        self.extend(offset, len).map(|_| ())
    }

    /// Content bytes `src_off..src_off + len` to `offset`. A failed read
    /// comes back as [`RegionError::Io`], as from `copy_content`.
    pub fn copy(&mut self, src: &ContentReader, src_off: u64, len: u64, offset: u64) -> Result<(), RegionError> {
        if len > Self::SMALL {
            self.flush()?;
            return self.region.copy_content(src, src_off, len, offset);
        }
        let dst = self.extend(offset, len)?;
        src.read_exact_at(dst, src_off).map_err(|source| RegionError::Io { what: "reading content".into(), offset, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_outside_the_region_are_refused() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(4096).unwrap();
        let r = Region::new(&f, 1024, 1024, "test");
        r.write_at(b"abc", 1021).unwrap();
        assert!(matches!(r.write_at(b"abcd", 1021), Err(RegionError::OutOfBounds { .. })));
        assert!(r.sub(1000, 25).is_err());
        let mut back = [0u8; 3];
        f.read_exact_at(&mut back, 2045).unwrap();
        assert_eq!(&back, b"abc");
    }
}
