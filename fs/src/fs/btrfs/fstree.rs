//! Filesystem trees: which tree inode lands in which subvolume under which
//! inode number, and the items (inodes, refs, directory entries, xattrs,
//! file extents) of each subvolume.
//!
//! Each subvolume numbers its own inodes from 256 in depth-first order. A
//! hardlinked file whose names fall into two subvolumes becomes one inode
//! in each (btrfs cannot link across subvolumes), with its data stored
//! once per subvolume.

use std::collections::BTreeMap;

use super::btree::MAX_ITEM_DATA;
use super::crc::{crc32c_raw, name_hash};
use super::disk::*;
use super::BtrfsError;
use crate::tree::{InodeId, Kind, Tree};

/// A data extent of a regular file, placed by the data pass.
#[derive(Debug, Clone)]
pub struct FileExtent {
    pub file_off: u64,
    /// Bytes of the file it covers (sector-aligned).
    pub num_bytes: u64,
    pub disk_bytenr: u64,
    pub disk_num_bytes: u64,
    pub compression: u8,
}

/// How a regular file's content is stored.
#[derive(Debug, Clone, Default)]
pub enum FileData {
    /// No extents: empty, all holes, or not a regular file.
    #[default]
    None,
    /// Inline in the EXTENT_DATA item (length; bytes read when encoding).
    Inline(u64),
    /// Regular extents.
    Extents(Vec<FileExtent>),
}

/// A directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub index: u64,
    pub name: Vec<u8>,
    pub location: Key,
    pub ftype: u8,
}

/// One inode of a subvolume.
#[derive(Debug, Clone, Default)]
pub struct InodePlan {
    /// The tree inode; `None` for a synthetic top-level directory.
    pub src: Option<InodeId>,
    /// (parent inode number, index, name).
    pub refs: Vec<(u64, u64, Vec<u8>)>,
    pub entries: Vec<Entry>,
    pub data: FileData,
}

/// A filesystem tree (the top level or a subvolume).
#[derive(Debug, Clone)]
pub struct FsRootPlan {
    pub id: u64,
    /// `inodes[i]` has inode number `256 + i`; `inodes[0]` is the root dir.
    pub inodes: Vec<InodePlan>,
}

/// Longest name btrfs stores (BTRFS_NAME_LEN).
pub const NAME_MAX: usize = 255;

pub fn ftype(k: &Kind) -> u8 {
    match k {
        Kind::Dir(_) => FT_DIR,
        Kind::File(_) => FT_REG_FILE,
        Kind::Symlink(_) => FT_SYMLINK,
        Kind::CharDev { .. } => FT_CHRDEV,
        Kind::BlockDev { .. } => FT_BLKDEV,
        Kind::Fifo => FT_FIFO,
        Kind::Socket => FT_SOCK,
    }
}

/// The device number as btrfs stores it: the kernel's internal `dev_t`
/// (`MKDEV`: major in the top 12 bits, minor in the low 20), which btrfs
/// copies from and to `inode->i_rdev` unchanged. (Not `new_encode_dev`,
/// which is ext4's encoding: the kernel read-back test shows the
/// difference.)
pub fn rdev(major: u32, minor: u32) -> u64 {
    ((major as u64) << 20) | (minor as u64 & 0xfffff)
}

impl FsRootPlan {
    /// Walk the tree from `start` (None: a synthetic empty root), numbering
    /// inodes; directories in `stops` are written empty.
    pub fn walk(id: u64, tree: &Tree, start: Option<InodeId>, stops: &[InodeId], ninodes: usize) -> Result<FsRootPlan, BtrfsError> {
        let mut inodes = vec![InodePlan { src: start, ..Default::default() }];
        let Some(start) = start else { return Ok(FsRootPlan { id, inodes }) };
        let mut map = vec![0u64; ninodes];
        map[start] = FIRST_FREE_OBJECTID;
        // Depth-first, children numbered when their directory is visited.
        let mut stack = vec![(start, FIRST_FREE_OBJECTID)];
        while let Some((dir, dino)) = stack.pop() {
            let Kind::Dir(children) = &tree.inode(dir).kind else { continue };
            let mut subdirs = Vec::new();
            for (i, (name, &child)) in children.iter().enumerate() {
                if name.len() > NAME_MAX {
                    return Err(BtrfsError::NameTooLong { name: String::from_utf8_lossy(name).into_owned(), len: name.len() });
                }
                let index = 2 + i as u64;
                let cino = if map[child] == 0 {
                    let ino = FIRST_FREE_OBJECTID + inodes.len() as u64;
                    map[child] = ino;
                    let is_dir = matches!(tree.inode(child).kind, Kind::Dir(_));
                    let stop = is_dir && stops.contains(&child);
                    inodes.push(InodePlan { src: Some(child), ..Default::default() });
                    if is_dir && !stop {
                        subdirs.push((child, ino));
                    }
                    ino
                } else {
                    map[child]
                };
                let slot = (cino - FIRST_FREE_OBJECTID) as usize;
                inodes[slot].refs.push((dino, index, name.clone()));
                let di = (dino - FIRST_FREE_OBJECTID) as usize;
                inodes[di].entries.push(Entry {
                    index,
                    name: name.clone(),
                    location: Key::new(cino, INODE_ITEM, 0),
                    ftype: ftype(&tree.inode(child).kind),
                });
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(FsRootPlan { id, inodes })
    }

    /// Add a subvolume entry to this tree's root directory.
    pub fn add_subvol_entry(&mut self, name: &[u8], subvol: u64) -> u64 {
        let root = &mut self.inodes[0];
        let index = root.entries.iter().map(|e| e.index + 1).max().unwrap_or(2);
        root.entries.push(Entry {
            index,
            name: name.to_vec(),
            location: Key::new(subvol, ROOT_ITEM, 0), // as the kernel's create_subvol
            ftype: FT_DIR,
        });
        index
    }

    /// Encode every item of this tree, in key order. `inline` reads the
    /// first `len` bytes of a file for an inline extent.
    pub fn items(
        &self,
        tree: &Tree,
        epoch: i64,
        inline: &mut dyn FnMut(InodeId, u64) -> Result<Vec<u8>, BtrfsError>,
    ) -> Result<Vec<Item>, BtrfsError> {
        let mut out = Vec::new();
        for (i, ip) in self.inodes.iter().enumerate() {
            let ino = FIRST_FREE_OBJECTID + i as u64;
            let node = ip.src.map(|s| tree.inode(s));
            let what = || match ip.src {
                Some(s) => path_of(tree, s),
                None => "the top-level directory".to_string(),
            };
            let too_big = |what: String, size: usize| BtrfsError::ItemTooLarge { what, size, max: MAX_ITEM_DATA };
            // INODE_ITEM
            let mut ii = InodeItem { nlink: 1, mode: libc::S_IFDIR | 0o755, sec: epoch, ..Default::default() };
            if let Some(n) = node {
                ii.mode = n.st_mode();
                ii.uid = n.meta.uid;
                ii.gid = n.meta.gid;
                ii.sec = n.meta.mtime;
                ii.nsec = n.meta.mtime_nsec;
                match &n.kind {
                    Kind::Dir(_) => {}
                    Kind::File(c) => {
                        ii.nlink = ip.refs.len() as u32;
                        ii.size = c.len();
                        ii.nbytes = match &ip.data {
                            FileData::None => 0,
                            FileData::Inline(len) => *len,
                            FileData::Extents(v) => v.iter().map(|e| e.num_bytes).sum(),
                        };
                    }
                    Kind::Symlink(t) => {
                        ii.nlink = ip.refs.len() as u32;
                        ii.size = t.len() as u64;
                        ii.nbytes = t.len() as u64;
                    }
                    Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                        ii.nlink = ip.refs.len() as u32;
                        ii.rdev = rdev(*major, *minor);
                    }
                    Kind::Fifo | Kind::Socket => ii.nlink = ip.refs.len() as u32,
                }
            }
            if ii.mode & libc::S_IFMT == libc::S_IFDIR {
                ii.size = ip.entries.iter().map(|e| 2 * e.name.len() as u64).sum();
            }
            out.push(Item::new(Key::new(ino, INODE_ITEM, 0), ii.encode()));
            // INODE_REF, grouped by parent.
            if i == 0 {
                let mut b = Buf::default();
                inode_ref(&mut b, 0, b"..");
                out.push(Item::new(Key::new(ino, INODE_REF, ino), b.into_vec()));
            } else {
                // Names that overflow a parent's INODE_REF item go to
                // INODE_EXTREF items (the `extref` feature), keyed by hash.
                let mut by_parent: BTreeMap<u64, Buf> = BTreeMap::new();
                let mut extrefs: BTreeMap<u64, Buf> = BTreeMap::new();
                for (p, index, name) in &ip.refs {
                    let b = by_parent.entry(*p).or_default();
                    if b.0.len() + 10 + name.len() <= MAX_ITEM_DATA {
                        inode_ref(b, *index, name);
                    } else {
                        let e = extrefs.entry(extref_hash(*p, name)).or_default();
                        e.u64(*p);
                        inode_ref(e, *index, name);
                    }
                }
                for (p, b) in by_parent {
                    out.push(Item::new(Key::new(ino, INODE_REF, p), b.into_vec()));
                }
                for (h, b) in extrefs {
                    if b.0.len() > MAX_ITEM_DATA {
                        return Err(too_big(format!("{}: colliding hardlink names", what()), b.0.len()));
                    }
                    out.push(Item::new(Key::new(ino, INODE_EXTREF, h), b.into_vec()));
                }
            }
            // XATTR_ITEM, grouped by name hash.
            if let Some(n) = node {
                let mut by_hash: BTreeMap<u64, Buf> = BTreeMap::new();
                for (name, value) in &n.meta.xattrs {
                    dir_item(by_hash.entry(name_hash(name)).or_default(), Key::new(0, 0, 0), FT_XATTR, name, value);
                }
                for (h, b) in by_hash {
                    if b.0.len() > MAX_ITEM_DATA {
                        return Err(too_big(format!("{}: extended attributes", what()), b.0.len()));
                    }
                    out.push(Item::new(Key::new(ino, XATTR_ITEM, h), b.into_vec()));
                }
            }
            // DIR_ITEM (by hash) and DIR_INDEX (by index).
            if !ip.entries.is_empty() {
                let mut by_hash: BTreeMap<u64, Buf> = BTreeMap::new();
                for e in &ip.entries {
                    dir_item(by_hash.entry(name_hash(&e.name)).or_default(), e.location, e.ftype, &e.name, b"");
                }
                for (h, b) in by_hash {
                    out.push(Item::new(Key::new(ino, DIR_ITEM, h), b.into_vec()));
                }
                let mut sorted: Vec<&Entry> = ip.entries.iter().collect();
                sorted.sort_by_key(|e| e.index);
                for e in sorted {
                    let mut b = Buf::default();
                    dir_item(&mut b, e.location, e.ftype, &e.name, b"");
                    out.push(Item::new(Key::new(ino, DIR_INDEX, e.index), b.into_vec()));
                }
            }
            // EXTENT_DATA
            match (node.map(|n| &n.kind), &ip.data) {
                (Some(Kind::Symlink(t)), _) => {
                    // Linux symlink targets are shorter than a page.
                    if t.len() >= SECTORSIZE as usize {
                        return Err(BtrfsError::SymlinkTooLong { what: what(), len: t.len() });
                    }
                    out.push(Item::new(Key::new(ino, EXTENT_DATA, 0), inline_extent(t)));
                }
                (Some(Kind::File(_)), FileData::Inline(len)) => {
                    let data = inline(ip.src.expect("file has a source"), *len)?;
                    out.push(Item::new(Key::new(ino, EXTENT_DATA, 0), inline_extent(&data)));
                }
                (Some(Kind::File(_)), FileData::Extents(v)) => {
                    for e in v {
                        let mut b = Buf::with_capacity(53);
                        b.u64(GENERATION)
                            .u64(e.num_bytes) // ram_bytes
                            .u8(e.compression)
                            .u8(0)
                            .u16(0)
                            .u8(FILE_EXTENT_REG)
                            .u64(e.disk_bytenr)
                            .u64(e.disk_num_bytes)
                            .u64(0) // offset
                            .u64(e.num_bytes);
                        out.push(Item::new(Key::new(ino, EXTENT_DATA, e.file_off), b.into_vec()));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Key offset of an INODE_EXTREF: crc32c seeded with the parent's
/// (truncated) inode number, as the kernel's `btrfs_extref_hash`.
fn extref_hash(parent: u64, name: &[u8]) -> u64 {
    crc32c_raw(parent as u32, name) as u64
}

fn inline_extent(data: &[u8]) -> Vec<u8> {
    let mut b = Buf::with_capacity(21 + data.len());
    b.u64(GENERATION).u64(data.len() as u64).u8(0).u8(0).u16(0).u8(FILE_EXTENT_INLINE).bytes(data);
    b.into_vec()
}

/// The first path naming `id` in the tree, for messages.
fn path_of(tree: &Tree, id: InodeId) -> String {
    let mut found = None;
    tree.walk(|v| {
        if found.is_none() && v.ino == id {
            found = Some(crate::tree::show(v.path));
        }
    });
    found.unwrap_or_else(|| format!("inode {id}"))
}
