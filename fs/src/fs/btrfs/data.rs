//! The data pass: file content into data chunks, with checksums and
//! optional compression.

use std::ops::Range;

use super::crc::crc32c;
use super::disk::{align_down, align_up, COMPRESS_ZLIB, COMPRESS_ZSTD, SECTORSIZE};
use super::fstree::{FileData, FileExtent, FsRootPlan};
use super::{BtrfsError, Compression};
use crate::disk::region::Region;
use crate::tree::content::{Content, ContentReader};
use crate::tree::{InodeId, Kind, Tree};

/// Largest regular extent (BTRFS_MAX_EXTENT_SIZE).
pub const MAX_EXTENT: u64 = 128 << 20;
/// Largest uncompressed span of a compressed extent.
pub const MAX_COMPRESSED_SPAN: u64 = 128 << 10;

const SECTOR: u64 = SECTORSIZE as u64;

/// A piece of a file to store as one extent (or more, when it has to be
/// split at a chunk boundary).
#[derive(Debug, Clone)]
pub struct Piece {
    pub root: usize,
    pub inode: usize,
    pub off: u64,
    pub len: u64,
}

/// Sector-aligned, merged data ranges of a file of `len` bytes.
pub fn aligned_ranges(ranges: &[Range<u64>], len: u64) -> Vec<Range<u64>> {
    let end_max = align_up(len, SECTOR);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        let s = align_down(r.start, SECTOR);
        let e = align_up(r.end.min(len), SECTOR).min(end_max);
        if e <= s {
            continue;
        }
        match out.last_mut() {
            Some(p) if s <= p.end => p.end = p.end.max(e),
            _ => out.push(s..e),
        }
    }
    out
}

/// Decide inline/extents for every regular file and list the pieces to
/// store, in inode order.
pub fn plan_pieces(roots: &mut [FsRootPlan], tree: &Tree, max_inline: u64, compress: bool) -> Vec<Piece> {
    let max = if compress { MAX_COMPRESSED_SPAN } else { MAX_EXTENT };
    let mut pieces = Vec::new();
    for (ri, root) in roots.iter_mut().enumerate() {
        for (ii, ip) in root.inodes.iter_mut().enumerate() {
            let Some(src) = ip.src else { continue };
            let Kind::File(c) = &tree.inode(src).kind else { continue };
            let len = c.len();
            let ranges = c.data_ranges();
            if ranges.is_empty() {
                ip.data = FileData::None;
            } else if len <= max_inline && len < SECTOR {
                ip.data = FileData::Inline(len);
            } else {
                ip.data = FileData::Extents(Vec::new());
                for r in aligned_ranges(&ranges, len) {
                    let mut off = r.start;
                    while off < r.end {
                        let l = (r.end - off).min(max);
                        pieces.push(Piece { root: ri, inode: ii, off, len: l });
                        off += l;
                    }
                }
            }
        }
    }
    pieces
}

/// A data chunk as the data pass sees it.
#[derive(Debug, Clone)]
pub struct DataChunk {
    pub logical: u64,
    pub len: u64,
    pub phys: u64,
    /// Bytes handed out from the start.
    pub used: u64,
}

/// Sequential allocator over the data chunks.
#[derive(Debug)]
pub struct DataSpace {
    pub chunks: Vec<DataChunk>,
    cur: usize,
}

impl DataSpace {
    pub fn new(chunks: Vec<DataChunk>) -> DataSpace {
        DataSpace { chunks, cur: 0 }
    }

    fn exhausted() -> BtrfsError {
        BtrfsError::Internal("data chunks planned too small for the data".into())
    }

    /// `len` contiguous bytes: (logical, physical).
    fn alloc_contig(&mut self, len: u64) -> Result<(u64, u64), BtrfsError> {
        loop {
            let c = self.chunks.get_mut(self.cur).ok_or_else(Self::exhausted)?;
            if c.len - c.used >= len {
                let r = (c.logical + c.used, c.phys + c.used);
                c.used += len;
                return Ok(r);
            }
            self.cur += 1;
        }
    }

    /// `len` bytes, split at chunk ends: (logical, physical, len) segments.
    fn alloc_split(&mut self, mut len: u64) -> Result<Vec<(u64, u64, u64)>, BtrfsError> {
        let mut v = Vec::new();
        while len > 0 {
            let c = self.chunks.get_mut(self.cur).ok_or_else(Self::exhausted)?;
            let n = (c.len - c.used).min(len);
            if n == 0 {
                self.cur += 1;
                continue;
            }
            v.push((c.logical + c.used, c.phys + c.used, n));
            c.used += n;
            len -= n;
        }
        Ok(v)
    }
}

/// Checksum runs: (logical start, one crc32c per sector), merged when
/// contiguous.
#[derive(Debug, Default)]
pub struct Csums(pub Vec<(u64, Vec<u32>)>);

impl Csums {
    fn push(&mut self, logical: u64, data: &[u8]) {
        let sums = data.chunks(SECTOR as usize).map(crc32c);
        match self.0.last_mut() {
            Some((s, v)) if *s + v.len() as u64 * SECTOR == logical => v.extend(sums),
            _ => self.0.push((logical, sums.collect())),
        }
    }

    /// Add the runs of `other` (the plain extents; compressed ones were
    /// pushed here directly), keeping the runs in logical order and merged
    /// where contiguous.
    fn merge(&mut self, other: Csums) {
        let mut all = std::mem::take(&mut self.0);
        all.extend(other.0);
        all.sort_by_key(|r| r.0);
        for (logical, v) in all {
            match self.0.last_mut() {
                Some((s, w)) if *s + w.len() as u64 * SECTOR == logical => w.extend(v),
                _ => self.0.push((logical, v)),
            }
        }
    }

    fn push_dummy(&mut self, logical: u64, len: u64) {
        let n = (len / SECTOR) as usize;
        match self.0.last_mut() {
            Some((s, v)) if *s + v.len() as u64 * SECTOR == logical => v.resize(v.len() + n, 0),
            _ => self.0.push((logical, vec![0; n])),
        }
    }
}

#[cfg(feature = "compress")]
fn compress(kind: Compression, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match kind {
        Compression::Zstd => zstd::bulk::compress(data, 3),
        Compression::Zlib => {
            use std::io::Write;
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(3));
            e.write_all(data)?;
            e.finish()
        }
    }
}

/// Without the `compress` feature `build` refuses compression before any
/// data is written, so this is never called.
#[cfg(not(feature = "compress"))]
fn compress(kind: Compression, _data: &[u8]) -> std::io::Result<Vec<u8>> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, format!("{} compression: imagefs built without `compress`", kind.name())))
}

/// Pieces (each at most [`MAX_COMPRESSED_SPAN`]) read and compressed per
/// batch: bounds memory to a few MiB of input and output.
const COMPRESS_BATCH: usize = 64;

/// One piece read and compressed (or why not).
type Compressed = Result<Vec<u8>, BtrfsError>;

/// Read and compress `pieces` on `threads` workers; the results come back
/// in the pieces' order, so what is allocated where does not depend on the
/// thread count.
fn compress_batch(roots: &[FsRootPlan], tree: &Tree, pieces: &[Piece], kind: Compression, threads: usize) -> Vec<Compressed> {
    crate::parallel::map_ordered(pieces.len(), threads, |i| {
        let p = &pieces[i];
        let src = roots[p.root].inodes[p.inode].src.expect("a file has a source");
        let Kind::File(content) = &tree.inode(src).kind else { unreachable!("pieces are planned for files") };
        let read_err = |e: std::io::Error| BtrfsError::Read { origin: content.origin(), source: e };
        let mut buf = vec![0u8; p.len as usize];
        content.open().map_err(read_err)?.read_exact_at(&mut buf, p.off).map_err(read_err)?;
        compress(kind, &buf).map_err(|e| BtrfsError::Compress { origin: content.origin(), source: e })
    })
}

/// Store every piece. Without a region (sizing only) nothing is read or
/// written and every piece is assumed incompressible. With compression,
/// pieces are read and compressed in batches on a few threads
/// ([`compress_batch`]), then stored in order on this one.
pub fn write_data(
    roots: &mut [FsRootPlan],
    tree: &Tree,
    pieces: &[Piece],
    space: &mut DataSpace,
    region: Option<&Region<'_>>,
    compression: Option<Compression>,
) -> Result<Csums, BtrfsError> {
    let mut csums = Csums::default();
    let mut copies: Vec<Copy> = Vec::new();
    let threads = crate::parallel::threads();
    // The compressed pieces of the current batch, from `batch_start`.
    let mut batch: Vec<Compressed> = Vec::new();
    let mut batch_start = 0usize;
    for (i, p) in pieces.iter().enumerate() {
        let src = roots[p.root].inodes[p.inode].src.expect("a file has a source");
        let mut extents = Vec::new();
        let Some(region) = region else {
            for (logical, _, n) in space.alloc_split(p.len)? {
                csums.push_dummy(logical, n);
                extents.push(FileExtent {
                    file_off: p.off + (extents.iter().map(|e: &FileExtent| e.num_bytes).sum::<u64>()),
                    num_bytes: n,
                    disk_bytenr: logical,
                    disk_num_bytes: n,
                    compression: 0,
                });
            }
            push_extents(&mut roots[p.root].inodes[p.inode].data, extents);
            continue;
        };
        if let Some(kind) = compression {
            if i >= batch_start + batch.len() {
                batch_start = i;
                let end = pieces.len().min(i + COMPRESS_BATCH);
                batch = compress_batch(roots, tree, &pieces[i..end], kind, threads);
            }
            let c = std::mem::replace(&mut batch[i - batch_start], Ok(Vec::new()))?;
            let clen = align_up(c.len() as u64, SECTOR);
            if clen + SECTOR <= p.len {
                let (logical, phys) = space.alloc_contig(clen)?;
                let mut out = c;
                out.resize(clen as usize, 0);
                region.write_at(&out, phys)?;
                csums.push(logical, &out);
                extents.push(FileExtent {
                    file_off: p.off,
                    num_bytes: p.len,
                    disk_bytenr: logical,
                    disk_num_bytes: clen,
                    compression: match kind {
                        Compression::Zstd => COMPRESS_ZSTD,
                        Compression::Zlib => COMPRESS_ZLIB,
                    },
                });
                push_extents(&mut roots[p.root].inodes[p.inode].data, extents);
                continue;
            }
        }
        let mut done = 0u64;
        for (logical, phys, n) in space.alloc_split(p.len)? {
            copies.push(Copy { src, off: p.off + done, len: n, logical, phys });
            extents.push(FileExtent { file_off: p.off + done, num_bytes: n, disk_bytenr: logical, disk_num_bytes: n, compression: 0 });
            done += n;
        }
        push_extents(&mut roots[p.root].inodes[p.inode].data, extents);
    }
    if let Some(region) = region {
        csums.merge(store_plain(tree, &copies, region)?);
    }
    Ok(csums)
}

/// One plain extent to store: `len` bytes of inode `src`'s content from
/// `off`, at `logical` (checksums) and `phys` (the image).
struct Copy {
    src: InodeId,
    off: u64,
    len: u64,
    logical: u64,
    phys: u64,
}

/// Opens each file once for a run of copies from it.
struct Readers<'t> {
    tree: &'t Tree,
    cur: Option<(InodeId, ContentReader)>,
}

impl<'t> Readers<'t> {
    fn get(&mut self, id: InodeId) -> Result<(&'t Content, &ContentReader), BtrfsError> {
        let Kind::File(content) = &self.tree.inode(id).kind else { unreachable!("pieces are planned for files") };
        if self.cur.as_ref().map(|c| c.0) != Some(id) {
            let r = content.open().map_err(|e| BtrfsError::Read { origin: content.origin(), source: e })?;
            self.cur = Some((id, r));
        }
        Ok((content, &self.cur.as_ref().expect("opened above").1))
    }
}

/// Bytes per buffer handed to the writer thread.
const STREAM_CHUNK: usize = 4 << 20;

/// Store the plain extents and checksum them, reading each source byte
/// once: this thread reads the extents into large buffers, in physical
/// order (the data space is handed out sequentially, so consecutive
/// extents are mostly contiguous), zero-pads each to its sector end and
/// checksums the buffer; a second thread writes each full buffer with
/// O_DIRECT ([`crate::disk::direct`]), so the image's data never goes
/// through the page cache and the final fsync has little left to do.
fn store_plain(tree: &Tree, copies: &[Copy], region: &Region<'_>) -> Result<Csums, BtrfsError> {
    let mut csums = Csums::default();
    if copies.is_empty() {
        return Ok(csums);
    }
    let mut failed: Option<BtrfsError> = None;
    let base = region.start();
    let written = crate::disk::direct::with_writer(region.file(), STREAM_CHUNK, true, |pipe| {
        let mut readers = Readers { tree, cur: None };
        let Some(mut buf) = pipe.buffer() else { return Ok(()) };
        // Region offset of buf[0], and how much of buf is filled.
        let (mut at, mut fill) = (copies[0].phys, 0usize);
        for c in copies {
            if c.phys + c.len > region.len() {
                failed = Some(BtrfsError::Internal(format!("data extent at {} of {} bytes is outside the region", c.phys, c.len)));
                return Ok(());
            }
            let (content, rd) = match readers.get(c.src) {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(e);
                    return Ok(());
                }
            };
            let mut done = 0u64;
            while done < c.len {
                if fill == STREAM_CHUNK || at + fill as u64 != c.phys + done {
                    if !pipe.write(buf, fill, base + at) {
                        return Ok(());
                    }
                    let Some(b) = pipe.buffer() else { return Ok(()) };
                    buf = b;
                    (at, fill) = (c.phys + done, 0);
                }
                let n = ((c.len - done) as usize).min(STREAM_CHUNK - fill);
                let dst = &mut buf.get_mut()[fill..fill + n];
                // Past the end of the file this reads zeros: the padding
                // of the last sector, which is checksummed as stored.
                if let Err(e) = rd.read_exact_at(dst, c.off + done) {
                    failed = Some(BtrfsError::Read { origin: content.origin(), source: e });
                    return Ok(());
                }
                csums.push(c.logical + done, dst);
                fill += n;
                done += n as u64;
            }
        }
        pipe.write(buf, fill, base + at);
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    written.map_err(|source| {
        BtrfsError::Region(crate::disk::RegionError::Io { what: format!("writing data to {}", region.name()), offset: 0, source })
    })?;
    Ok(csums)
}

fn push_extents(d: &mut FileData, mut v: Vec<FileExtent>) {
    if let FileData::Extents(e) = d {
        e.append(&mut v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_aligned_and_merged() {
        let one = |r: Range<u64>| vec![r];
        assert_eq!(aligned_ranges(&one(0..10), 10), one(0..4096));
        assert_eq!(aligned_ranges(&[0..4096, 5000..9000, 1 << 20..(1 << 20) + 1], 2 << 20), vec![0..12288, 1 << 20..(1 << 20) + 4096]);
        assert_eq!(aligned_ranges(&one(8192..20000), 10000), one(8192..12288));
    }
}
