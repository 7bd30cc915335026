//! A small read-only btrfs reader: list a directory and read a file of the
//! top-level subvolume, for `build-image inspect` to read an OEM partition
//! back. No maintained Rust crate reads btrfs; this reads what a
//! single-device filesystem holds (ours or `mkfs.btrfs`'s), from the
//! on-disk format documentation:
//!
//! superblock (64 KiB) → chunk map (the superblock's `sys_chunk_array`,
//! then every CHUNK_ITEM of the chunk tree) → root tree → ROOT_ITEM 5 →
//! the fs tree: DIR_INDEX items to walk paths, INODE_ITEM for sizes,
//! EXTENT_DATA for content (inline or regular; holes read as zeros).
//!
//! Not read: compressed extents (refused with a message), other
//! subvolumes, RAID profiles beyond the first stripe (SINGLE and DUP are
//! all one device has). Checksums are not verified; every read is bounds
//! checked against the partition.

use std::fs::File;
use std::os::unix::fs::FileExt;

const SUPER_OFFSET: u64 = 0x10000;
const MAGIC: &[u8; 8] = b"_BHRfS_M";
const HEADER: usize = 101;
const CHUNK_ITEM: u8 = 228;
const ROOT_ITEM: u8 = 132;
const INODE_ITEM: u8 = 1;
const DIR_INDEX: u8 = 96;
const EXTENT_DATA: u8 = 108;
const FS_TREE: u64 = 5;
const FT_REG_FILE: u8 = 1;
const FT_DIR: u8 = 2;
/// Tree blocks visited per lookup, at most (a small OEM tree has a few).
const MAX_NODES: usize = 100_000;

type Key = (u64, u8, u64);

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn key_at(b: &[u8], o: usize) -> Key {
    (u64_at(b, o), b[o + 8], u64_at(b, o + 9))
}

/// A btrfs filesystem in `[offset, offset + len)` of a file.
pub struct Reader<'a> {
    f: &'a File,
    offset: u64,
    len: u64,
    nodesize: usize,
    /// (logical start, length, physical start).
    chunks: Vec<(u64, u64, u64)>,
    /// The fs tree's root block and its root directory's inode.
    fs_root: u64,
    root_dir: u64,
}

impl<'a> Reader<'a> {
    /// Read the superblock and the chunk and root trees.
    pub fn open(f: &'a File, offset: u64, len: u64) -> Result<Reader<'a>, String> {
        let mut r = Reader { f, offset, len, nodesize: 0, chunks: Vec::new(), fs_root: 0, root_dir: 256 };
        let sb = r.phys(SUPER_OFFSET, 4096)?;
        if &sb[0x40..0x48] != MAGIC {
            return Err("no btrfs superblock at 64 KiB".into());
        }
        r.nodesize = u32_at(&sb, 0x94) as usize;
        if !(4096..=65536).contains(&r.nodesize) || !r.nodesize.is_power_of_two() {
            return Err(format!("superblock nodesize {} is not a btrfs node size", r.nodesize));
        }
        // Bootstrap chunks: (key, chunk item) pairs.
        let n = (u32_at(&sb, 0xa0) as usize).min(2048);
        let arr = &sb[0x32b..0x32b + n];
        let mut o = 0;
        while o + 17 + 48 <= arr.len() {
            let k = key_at(arr, o);
            let (chunk, size) = chunk_item(&arr[o + 17..]).ok_or("bad sys_chunk_array")?;
            if k.1 != CHUNK_ITEM {
                return Err(format!("sys_chunk_array holds item type {}, not a chunk", k.1));
            }
            r.chunks.push((k.2, chunk.0, chunk.1));
            o += 17 + size;
        }
        // Every chunk, from the chunk tree.
        for (k, data) in r.items(u64_at(&sb, 0x58), (256, CHUNK_ITEM, 0), (256, CHUNK_ITEM, u64::MAX))? {
            let (c, _) = chunk_item(&data).ok_or("bad chunk item")?;
            if !r.chunks.iter().any(|x| x.0 == k.2) {
                r.chunks.push((k.2, c.0, c.1));
            }
        }
        // The top-level subvolume's tree.
        let roots = r.items(u64_at(&sb, 0x50), (FS_TREE, ROOT_ITEM, 0), (FS_TREE, ROOT_ITEM, u64::MAX))?;
        let (_, item) = roots.last().ok_or("the root tree has no ROOT_ITEM for the fs tree (5)")?;
        if item.len() < 184 {
            return Err("short ROOT_ITEM".into());
        }
        r.root_dir = u64_at(item, 168);
        r.fs_root = u64_at(item, 176);
        Ok(r)
    }

    /// Bytes at a partition offset.
    fn phys(&self, at: u64, len: usize) -> Result<Vec<u8>, String> {
        if at.checked_add(len as u64).is_none_or(|e| e > self.len) {
            return Err(format!("read of {len} bytes at {at} is past the partition end ({})", self.len));
        }
        let mut b = vec![0u8; len];
        self.f.read_exact_at(&mut b, self.offset + at).map_err(|e| e.to_string())?;
        Ok(b)
    }

    /// Bytes at a logical address (within one chunk).
    fn logical(&self, at: u64, len: usize) -> Result<Vec<u8>, String> {
        let (start, clen, phys) = self
            .chunks
            .iter()
            .find(|(s, l, _)| at >= *s && at - s < *l)
            .copied()
            .ok_or_else(|| format!("logical address {at} is in no chunk"))?;
        if at - start + len as u64 > clen {
            return Err(format!("{len} bytes at logical {at} cross the end of their chunk"));
        }
        self.phys(phys + (at - start), len)
    }

    /// The items of the tree rooted at `root` with keys in `lo..=hi`.
    fn items(&self, root: u64, lo: Key, hi: Key) -> Result<Vec<(Key, Vec<u8>)>, String> {
        let mut out = Vec::new();
        let mut todo = vec![root];
        let mut seen = 0;
        while let Some(at) = todo.pop() {
            seen += 1;
            if seen > MAX_NODES {
                return Err(format!("more than {MAX_NODES} tree blocks"));
            }
            let b = self.logical(at, self.nodesize)?;
            if u64_at(&b, 0x30) != at {
                return Err(format!("tree block at {at} says it is at {}", u64_at(&b, 0x30)));
            }
            let n = u32_at(&b, 0x60) as usize;
            let level = b[0x64];
            if level == 0 {
                for i in 0..n {
                    let o = HEADER + i * 25;
                    if o + 25 > b.len() {
                        return Err(format!("leaf at {at}: item {i} past the block"));
                    }
                    let k = key_at(&b, o);
                    if k < lo || k > hi {
                        continue;
                    }
                    let (off, size) = (u32_at(&b, o + 17) as usize, u32_at(&b, o + 21) as usize);
                    let data =
                        b.get(HEADER + off..HEADER + off + size).ok_or_else(|| format!("leaf at {at}: item {i} data past the block"))?;
                    out.push((k, data.to_vec()));
                }
            } else {
                // Child i holds keys from its key up to the next child's.
                let mut kids = Vec::new();
                for i in 0..n {
                    let o = HEADER + i * 33;
                    if o + 33 > b.len() {
                        return Err(format!("node at {at}: pointer {i} past the block"));
                    }
                    let k = key_at(&b, o);
                    let next = (i + 1 < n && HEADER + (i + 1) * 33 + 17 <= b.len()).then(|| key_at(&b, HEADER + (i + 1) * 33));
                    if k <= hi && next.is_none_or(|nk| nk > lo) {
                        kids.push(u64_at(&b, o + 17));
                    }
                }
                // Depth first, in key order.
                todo.extend(kids.into_iter().rev());
            }
        }
        Ok(out)
    }

    /// (inode, type) of the entries of directory `dir`, by name.
    fn entries(&self, dir: u64) -> Result<Vec<(String, u64, u8)>, String> {
        let mut v = Vec::new();
        for (_, d) in self.items(self.fs_root, (dir, DIR_INDEX, 0), (dir, DIR_INDEX, u64::MAX))? {
            if d.len() < 30 {
                return Err("short DIR_INDEX item".into());
            }
            let name_len = u16_at(&d, 27) as usize;
            let name = d.get(30..30 + name_len).ok_or("DIR_INDEX name past its item")?;
            v.push((String::from_utf8_lossy(name).into_owned(), u64_at(&d, 0), d[29]));
        }
        Ok(v)
    }

    /// The inode at `path` and its type; `None` if a component is missing.
    fn lookup(&self, path: &str) -> Result<Option<(u64, u8)>, String> {
        let mut cur = (self.root_dir, FT_DIR);
        for c in path.split('/').filter(|c| !c.is_empty()) {
            if cur.1 != FT_DIR {
                return Ok(None);
            }
            match self.entries(cur.0)?.into_iter().find(|e| e.0 == c) {
                Some((_, ino, t)) => cur = (ino, t),
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The names of the regular files in `dir`; none if it does not exist.
    pub fn list_files(&self, dir: &str) -> Result<Vec<String>, String> {
        match self.lookup(dir)? {
            Some((ino, FT_DIR)) => Ok(self.entries(ino)?.into_iter().filter(|e| e.2 == FT_REG_FILE).map(|e| e.0).collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// A regular file's content (at most `max` bytes, else an error);
    /// `None` if there is no regular file at `path`.
    pub fn read_file(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
        let Some((ino, FT_REG_FILE)) = self.lookup(path)? else { return Ok(None) };
        let inode = self.items(self.fs_root, (ino, INODE_ITEM, 0), (ino, INODE_ITEM, 0))?;
        let (_, ii) = inode.first().ok_or_else(|| format!("{path}: no INODE_ITEM for inode {ino}"))?;
        let size = u64_at(ii, 16);
        if size > max {
            return Err(format!("{path} is {size} bytes, more than {max}"));
        }
        let mut out = vec![0u8; size as usize];
        for (k, e) in self.items(self.fs_root, (ino, EXTENT_DATA, 0), (ino, EXTENT_DATA, u64::MAX))? {
            if e.len() < 21 {
                return Err(format!("{path}: short EXTENT_DATA item"));
            }
            if e[16] != 0 {
                return Err(format!("{path}: compressed extent (type {}) not supported", e[16]));
            }
            let file_off = k.2;
            let data = match e[20] {
                0 => e[21..].to_vec(),
                1 | 2 if e.len() >= 53 => {
                    let (disk, off, num) = (u64_at(&e, 21), u64_at(&e, 37), u64_at(&e, 45));
                    if disk == 0 || e[20] == 2 || num > max {
                        vec![0; num.min(max) as usize]
                    } else {
                        self.logical(disk + off, num as usize)?
                    }
                }
                t => return Err(format!("{path}: extent type {t}")),
            };
            let s = (file_off as usize).min(out.len());
            let n = data.len().min(out.len() - s);
            out[s..s + n].copy_from_slice(&data[..n]);
        }
        Ok(Some(out))
    }
}

/// (length, first stripe's physical offset) and the item's size.
fn chunk_item(b: &[u8]) -> Option<((u64, u64), usize)> {
    if b.len() < 48 + 32 {
        return None;
    }
    let stripes = u16_at(b, 44) as usize;
    if stripes == 0 {
        return None;
    }
    Some(((u64_at(b, 0), u64_at(b, 48 + 8)), 48 + 32 * stripes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::region::Region;
    use crate::fs::btrfs::{write, BtrfsOptions};
    use crate::fs::FsParams;
    use crate::tree::{Content, Inode, Kind, Meta, Tree};

    /// A btrfs image made by our writer from `files`.
    fn write_tree(files: &[(&str, Vec<u8>)]) -> (tempfile::NamedTempFile, File) {
        let mut t = Tree::new(1_000_000);
        for (p, d) in files {
            t.insert(p.as_bytes(), Inode { meta: Meta::new(0o644, 5), kind: Kind::File(Content::bytes(d.clone())) }).unwrap();
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        let size = 128 << 20;
        f.as_file().set_len(size).unwrap();
        let params = FsParams { label: "OEM".into(), uuid: uuid::Uuid::from_bytes([9; 16]), seed: [3; 32], epoch: 1_000_000 };
        write(&t, Region::new(f.as_file(), 0, size, "unit"), &params, &BtrfsOptions::default()).unwrap();
        let file = f.reopen().unwrap();
        (f, file)
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (t, f) = write_tree(&[
            ("/config.json", b"{\"a\": 1}\n".to_vec()),
            ("/config.d/50-site.json", b"{}".to_vec()),
            ("/big.bin", big.clone()),
        ]);
        let _keep = t;
        let len = f.metadata().unwrap().len();
        let r = Reader::open(&f, 0, len).unwrap();
        assert_eq!(r.read_file("/config.json", 1 << 20).unwrap().as_deref(), Some(&b"{\"a\": 1}\n"[..]));
        assert_eq!(r.read_file("/big.bin", 1 << 20).unwrap(), Some(big));
        assert_eq!(r.list_files("/config.d").unwrap(), ["50-site.json"]);
        assert_eq!(r.list_files("/layers").unwrap(), Vec::<String>::new());
        assert_eq!(r.read_file("/missing.json", 1 << 20).unwrap(), None);
        assert_eq!(r.read_file("/config.d", 1 << 20).unwrap(), None, "a directory is not a file");
        assert!(r.read_file("/big.bin", 1000).unwrap_err().contains("more than"));
        // Not btrfs.
        let z = tempfile::tempfile().unwrap();
        z.set_len(1 << 20).unwrap();
        assert!(Reader::open(&z, 0, 1 << 20).err().unwrap().contains("no btrfs superblock"));
    }
}
