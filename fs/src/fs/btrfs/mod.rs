//! Btrfs writer: a pure-Rust `mkfs.btrfs --rootdir`.
//!
//! # Why our own
//! The Rust btrfs writers we looked at do not fit: `ferrosys` makes sparse
//! files dense, sets `block-group-tree` (kernels before 6.1 mount it
//! read-only), reserves 256 MiB of DUP metadata on a 1 GiB image and
//! changes its large API every few weeks; `btrfs-mkfs` is GPL-2.0-only.
//! This module is written from the on-disk format documentation, the
//! kernel's `btrfs_tree.h` and what `tree-checker.c` and `btrfs check`
//! accept.
//!
//! # What it writes
//! The defaults of btrfs-progs ≥ 5.15: 16 KiB nodes, 4 KiB sectors, crc32c,
//! one device with DUP metadata and system chunks and SINGLE data,
//! `extref`, `skinny-metadata`, `no-holes` and the free-space tree. The
//! trees are root, extent, chunk, dev, one fs tree per subvolume, csum,
//! uuid, free-space and data-reloc. No block-group tree.
//!
//! # Layout strategy
//! Everything is computed before metadata is written, and written once:
//! 1. Subvolumes and inode numbers are planned from the [`Tree`]; files are
//!    cut into pieces (≤ 128 MiB; ≤ 128 KiB when compressing). Holes stay
//!    holes (`no-holes`), small files (≤ 2048 bytes) and symlinks are inline.
//! 2. Physical space: 1 MiB reserved, the system chunk (2 × 2 MiB DUP), then
//!    data chunks (≤ 1 GiB each), then the metadata chunk (DUP) sized to the
//!    metadata plus the kernel's global reserve plus 6 MiB, so that even a
//!    filesystem of exactly [`min_size`] takes small changes read-write
//!    (about 2 × 13 MiB for a small tree, where mkfs.btrfs reserves up to
//!    2 × 256 MiB). No chunk covers a superblock mirror.
//! 3. The data pass copies content into the data chunks, checksumming each
//!    4 KiB sector (and compressing where that saves a sector); the last
//!    data chunk is then trimmed to what was used. Plain extents are read
//!    once into 4 MiB buffers, checksummed there, and written with
//!    O_DIRECT on a second thread (`data::store_plain`).
//! 4. Every tree is built as sorted items; leaves are filled and internal
//!    nodes built bottom-up. The extent tree describes all tree blocks,
//!    including its own, so the block count is iterated until it settles;
//!    item sizes do not depend on addresses, so it settles exactly.
//! 5. Every tree block is written to both DUP copies, then each superblock
//!    copy that fits. Free space inside chunks and unallocated space are the
//!    only bytes left unwritten: an image written onto a disk full of old
//!    data is still valid.
//!
//! All identities come from [`FsParams`] (fsid = `uuid`; chunk-tree,
//! device and subvolume UUIDs are derived from `seed`), every generation is
//! 1 and every time is the tree's (clamped) mtime or the epoch, so two builds
//! are bit-identical.

mod btree;
mod crc;
mod data;
mod disk;
mod fstree;
pub mod read;

use std::collections::BTreeMap;

use crate::derive::derive_uuid;
use crate::disk::region::{Region, RegionError};
use crate::fs::FsOptions;
use crate::fs::{FsParams, FsReport};
use crate::tree::{Kind, Tree};

use btree::{block_count, level_counts, Stamp};
use data::{DataChunk, DataSpace};
use disk::*;
use fstree::{FileData, FsRootPlan};

/// Errors of the btrfs writer.
#[derive(Debug, thiserror::Error)]
pub enum BtrfsError {
    #[error("btrfs compression `{0}` is not supported: use `zstd` or `zlib` (or leave it out)")]
    BadCompression(String),
    #[error("btrfs compression `{0}` needs imagefs built with its `compress` feature (the guest agent's is not): leave it out")]
    CompressionNotBuilt(&'static str),
    #[error("btrfs subvolume `{name}`: {why}")]
    BadSubvolume { name: String, why: String },
    #[error("btrfs default_subvolume `{0}` is not one of the listed subvolumes")]
    BadDefault(String),
    #[error("name `{name}` is {len} bytes long; btrfs names are at most 255 bytes")]
    NameTooLong { name: String, len: usize },
    #[error("{what}: a symlink target of {len} bytes is too long (at most 4095)")]
    SymlinkTooLong { what: String, len: usize },
    #[error("btrfs label `{0}` is longer than 255 bytes")]
    BadLabel(String),
    #[error("the partition of {have} bytes is too small for this btrfs filesystem: it needs at least {need} bytes")]
    TooSmall { have: u64, need: u64 },
    #[error("{what}: {size} bytes do not fit in one btrfs leaf item (at most {max})")]
    ItemTooLarge { what: String, size: usize, max: usize },
    #[error("reading {origin}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("compressing {origin}")]
    Compress {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the btrfs filesystem")]
    Region(#[from] RegionError),
    #[error("btrfs writer bug: {0}")]
    Internal(String),
}

/// Data compression (written only with the crate's `compress` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Zlib,
}

impl Compression {
    /// The name the recipe (and `mount -o compress=`) uses.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Zlib => "zlib",
        }
    }

    /// Refuse when this build cannot write compressed extents.
    fn check_built(self) -> Result<Self, BtrfsError> {
        if cfg!(feature = "compress") {
            Ok(self)
        } else {
            Err(BtrfsError::CompressionNotBuilt(self.name()))
        }
    }
}

/// A subvolume: its name in the top level and the tree directory it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolumeSpec {
    pub name: String,
    pub from: String,
}

/// Btrfs-specific options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtrfsOptions {
    pub compression: Option<Compression>,
    pub subvolumes: Vec<SubvolumeSpec>,
    /// Name of the subvolume a plain mount shows (default: the top level).
    pub default_subvolume: Option<String>,
    /// Files up to this size are stored inline in the metadata (btrfs-progs'
    /// and the kernel's default `max_inline`: 2048).
    pub max_inline: u64,
}

impl Default for BtrfsOptions {
    fn default() -> Self {
        BtrfsOptions { compression: None, subvolumes: Vec::new(), default_subvolume: None, max_inline: 2048 }
    }
}

impl BtrfsOptions {
    /// Validate the caller's filesystem options.
    pub fn from_fs_options(o: &FsOptions) -> Result<Self, BtrfsError> {
        let compression = match o.compression.as_deref() {
            None => None,
            Some("zstd") => Some(Compression::Zstd.check_built()?),
            Some("zlib") => Some(Compression::Zlib.check_built()?),
            Some(other) => return Err(BtrfsError::BadCompression(other.to_string())),
        };
        let mut subvolumes: Vec<SubvolumeSpec> = Vec::new();
        for s in &o.subvolumes {
            let bad = |why: &str| BtrfsError::BadSubvolume { name: s.name.clone(), why: why.to_string() };
            if s.name.is_empty() || s.name == "." || s.name == ".." || s.name.contains('/') || s.name.contains('\0') {
                return Err(bad("a name must be one path component (not empty, `.`, `..`, no `/`)"));
            }
            if s.name.len() > 255 {
                return Err(bad("the name is longer than 255 bytes"));
            }
            if subvolumes.iter().any(|p| p.name == s.name) {
                return Err(bad("the name is listed twice"));
            }
            let norm = crate::tree::components(s.from.as_bytes()).map_err(|_| bad("`from` escapes the tree"))?;
            if subvolumes.iter().any(|p| crate::tree::components(p.from.as_bytes()).ok().as_ref() == Some(&norm)) {
                return Err(bad("another subvolume already holds this `from` directory"));
            }
            subvolumes.push(SubvolumeSpec { name: s.name.clone(), from: s.from.clone() });
        }
        if let Some(d) = &o.default_subvolume {
            if !subvolumes.iter().any(|s| &s.name == d) {
                return Err(BtrfsError::BadDefault(d.clone()));
            }
        }
        Ok(BtrfsOptions { compression, subvolumes, default_subvolume: o.default_subvolume.clone(), max_inline: 2048 })
    }
}

const MIB: u64 = 1 << 20;
const SYS_CHUNK: u64 = 2 * MIB;
const MAX_DATA_CHUNK: u64 = 1 << 30;
/// Superblock copies: primary and mirrors.
const SUPER_MIRRORS: [u64; 3] = [SUPER_INFO_OFFSET, 64 * MIB, 256 << 30];
/// Size assumed for a device when only sizing.
const UNBOUNDED: u64 = 1 << 60;

/// Physical allocator: MiB-aligned, never over a superblock copy.
struct PhysAlloc {
    cursor: u64,
    zones: Vec<u64>,
}

impl PhysAlloc {
    fn new(dev_size: u64) -> PhysAlloc {
        let zones = SUPER_MIRRORS[1..].iter().copied().filter(|&m| m + SUPER_INFO_SIZE as u64 <= dev_size).collect();
        PhysAlloc { cursor: MIB, zones }
    }

    /// Up to `want` bytes (at least 1 MiB unless `want` is smaller): (start, len).
    fn alloc_upto(&mut self, want: u64, exact: bool) -> (u64, u64) {
        loop {
            let start = align_up(self.cursor, MIB);
            let next_zone = self.zones.iter().copied().find(|&z| z + MIB > start);
            match next_zone {
                Some(z) if z <= start => self.cursor = z + MIB,
                Some(z) if z - start < want && (exact || z - start < MIB) => self.cursor = z + MIB,
                Some(z) => {
                    let len = want.min(z - start);
                    self.cursor = start + len;
                    return (start, len);
                }
                None => {
                    self.cursor = start + want;
                    return (start, want);
                }
            }
        }
    }
}

/// A subvolume in the top level.
struct SubvolRef {
    id: u64,
    name: Vec<u8>,
    index: u64,
}

fn plan_roots(tree: &Tree, opts: &BtrfsOptions) -> Result<(Vec<FsRootPlan>, Vec<SubvolRef>), BtrfsError> {
    let n = tree.link_counts().len();
    if opts.subvolumes.is_empty() {
        return Ok((vec![FsRootPlan::walk(FS_TREE, tree, Some(Tree::ROOT), &[], n)?], Vec::new()));
    }
    let mut froms = Vec::new();
    for s in &opts.subvolumes {
        let id = tree.find(s.from.as_bytes()).filter(|&id| matches!(tree.inode(id).kind, Kind::Dir(_))).ok_or_else(|| {
            BtrfsError::BadSubvolume { name: s.name.clone(), why: format!("`from` {} is not a directory in the tree", s.from) }
        })?;
        froms.push(id);
    }
    let top_start = if froms.contains(&Tree::ROOT) { None } else { Some(Tree::ROOT) };
    let mut roots = vec![FsRootPlan::walk(FS_TREE, tree, top_start, &froms, n)?];
    let mut refs = Vec::new();
    for (i, s) in opts.subvolumes.iter().enumerate() {
        let id = FIRST_FREE_OBJECTID + i as u64;
        roots.push(FsRootPlan::walk(id, tree, Some(froms[i]), &froms, n)?);
        if roots[0].inodes[0].entries.iter().any(|e| e.name == s.name.as_bytes()) {
            return Err(BtrfsError::BadSubvolume { name: s.name.clone(), why: "the top level already has an entry of this name".into() });
        }
        let index = roots[0].add_subvol_entry(s.name.as_bytes(), id);
        refs.push(SubvolRef { id, name: s.name.as_bytes().to_vec(), index });
    }
    Ok((roots, refs))
}

/// The size `write` needs for this tree at the least (exact without
/// compression, an upper bound with it).
pub fn min_size(tree: &Tree, params: &FsParams, opts: &BtrfsOptions) -> u64 {
    match build(tree, params, opts, None) {
        Ok(r) => r.end,
        Err(_) => 0,
    }
}

/// Write a btrfs filesystem holding `tree` into `region`.
pub fn write(tree: &Tree, region: Region<'_>, params: &FsParams, opts: &BtrfsOptions) -> Result<FsReport, BtrfsError> {
    let need = build(tree, params, opts, None)?.end;
    let have = align_down(region.len(), SECTORSIZE as u64);
    if need > have {
        return Err(BtrfsError::TooSmall { have: region.len(), need });
    }
    let r = build(tree, params, opts, Some(&region))?;
    Ok(FsReport {
        kind: "btrfs".into(),
        used_bytes: r.bytes_used,
        notes: vec![format!("{} bytes allocated to chunks", r.allocated), format!("{} metadata blocks", r.meta_blocks)],
    })
}

struct Outcome {
    /// End of the last allocated physical byte.
    end: u64,
    bytes_used: u64,
    allocated: u64,
    meta_blocks: usize,
}

/// A tree to lay out: owner, sorted items.
struct TreeItems {
    owner: u64,
    items: Vec<Item>,
}

fn sizes(items: &[Item]) -> impl Iterator<Item = usize> + '_ {
    items.iter().map(|i| i.data.len())
}

fn build(tree: &Tree, params: &FsParams, opts: &BtrfsOptions, region: Option<&Region<'_>>) -> Result<Outcome, BtrfsError> {
    if params.label.len() > 255 {
        return Err(BtrfsError::BadLabel(params.label.clone()));
    }
    if let Some(c) = opts.compression {
        c.check_built()?;
    }
    let dev_size = match region {
        Some(r) => align_down(r.len(), SECTORSIZE as u64),
        None => UNBOUNDED,
    };
    let fsid = *params.uuid.as_bytes();
    let chunk_uuid = *derive_uuid(&params.seed, "btrfs-chunk-tree-uuid").as_bytes();
    let dev_uuid = *derive_uuid(&params.seed, "btrfs-dev-uuid").as_bytes();
    let stamp = Stamp { fsid, chunk_tree_uuid: chunk_uuid };
    let epoch = params.epoch;

    // 1. Subvolumes, inodes, pieces.
    let (mut roots, subvols) = plan_roots(tree, opts)?;
    let pieces = data::plan_pieces(&mut roots, tree, opts.max_inline, opts.compression.is_some());

    // 2. Physical layout: system chunk, data chunks.
    let mut phys = PhysAlloc::new(dev_size);
    let (s0, _) = phys.alloc_upto(SYS_CHUNK, true);
    let (s1, _) = phys.alloc_upto(SYS_CHUNK, true);
    let sys = Chunk { logical: s0, length: SYS_CHUNK, flags: BG_SYSTEM | BG_DUP, stripes: vec![s0, s1] };
    let mut need: u64 = pieces.iter().map(|p| p.len).sum();
    if opts.compression.is_some() {
        need += (need / MAX_DATA_CHUNK + 2) * data::MAX_COMPRESSED_SPAN;
    }
    let mut need = align_up(need.max(1), MIB);
    let mut dchunks = Vec::new();
    let mut logical = sys.logical + sys.length;
    while need > 0 {
        let (p, l) = phys.alloc_upto(need.min(MAX_DATA_CHUNK), false);
        dchunks.push(DataChunk { logical, len: l, phys: p, used: 0 });
        logical += l;
        need -= l;
    }
    let mut space = DataSpace::new(dchunks);

    // 3. Data.
    let csums = data::write_data(&mut roots, tree, &pieces, &mut space, region, opts.compression)?;
    let mut data_chunks: Vec<Chunk> = Vec::new();
    let mut data_used: Vec<u64> = Vec::new();
    for (i, c) in space.chunks.iter().enumerate() {
        if c.used == 0 && i > 0 {
            break;
        }
        let last = space.chunks.get(i + 1).is_none_or(|n| n.used == 0);
        let len = if last { align_up(c.used.max(1), MIB) } else { c.len };
        data_chunks.push(Chunk { logical: c.logical, length: len, flags: BG_DATA, stripes: vec![c.phys] });
        data_used.push(c.used);
    }
    let data_end_phys = data_chunks.last().map(|c| c.stripes[0] + c.length).unwrap_or(MIB);
    let data_end_logical = data_chunks.last().map(|c| c.logical + c.length).unwrap_or(logical);
    phys.cursor = data_end_phys;

    // 4. Trees that do not depend on metadata addresses.
    let mut fs_trees: Vec<TreeItems> = Vec::new();
    let mut data_refs: Vec<(u64, u64, u64, u64, u64)> = Vec::new(); // bytenr, len, root, ino, file_off
    for root in &roots {
        let mut read_inline = |id: crate::tree::InodeId, len: u64| -> Result<Vec<u8>, BtrfsError> {
            let mut v = vec![0u8; len as usize];
            if region.is_some() {
                if let Kind::File(c) = &tree.inode(id).kind {
                    let r = c.open().map_err(|e| BtrfsError::Read { origin: c.origin(), source: e })?;
                    r.read_exact_at(&mut v, 0).map_err(|e| BtrfsError::Read { origin: c.origin(), source: e })?;
                }
            }
            Ok(v)
        };
        let items = root.items(tree, epoch, &mut read_inline)?;
        for (i, ip) in root.inodes.iter().enumerate() {
            if let FileData::Extents(v) = &ip.data {
                for e in v {
                    data_refs.push((e.disk_bytenr, e.disk_num_bytes, root.id, FIRST_FREE_OBJECTID + i as u64, e.file_off));
                }
            }
        }
        fs_trees.push(TreeItems { owner: root.id, items });
    }
    let reloc = FsRootPlan::walk(DATA_RELOC_TREE, tree, None, &[], 0)?;
    let reloc_items = reloc.items(tree, epoch, &mut |_, _| Ok(Vec::new()))?;
    fs_trees.push(TreeItems { owner: DATA_RELOC_TREE, items: reloc_items });
    let csum_items = csum_items(&csums);

    // Chunks as they will be (the metadata chunk's position and size are
    // placeholders until sized; they do not change any item size).
    let meta_logical = align_up(data_end_logical, MIB);
    let mut meta = Chunk { logical: meta_logical, length: MIB, flags: BG_METADATA | BG_DUP, stripes: vec![0, 0] };
    let chunks_of = |meta: &Chunk| -> Vec<Chunk> {
        let mut v = vec![sys.clone()];
        v.extend(data_chunks.iter().cloned());
        v.push(meta.clone());
        v
    };

    let root_tree_items = |addrs: &RootAddrs| -> Vec<Item> { root_items(addrs, &subvols, opts, params, epoch) };
    let dummy_addrs = RootAddrs::default();
    let n_root = block_count(sizes(&root_tree_items(&dummy_addrs)));
    let n_dev = block_count(sizes(&dev_items(&chunks_of(&meta), &chunk_uuid)));
    let n_chunk = block_count(sizes(&chunk_items(&chunks_of(&meta), 0, &dev_uuid, &fsid, dev_size)));
    let n_csum = block_count(sizes(&csum_items));
    let uuid_items = uuid_items(&roots, params);
    let n_uuid = block_count(sizes(&uuid_items));
    let fs_counts: Vec<usize> = fs_trees.iter().map(|t| block_count(sizes(&t.items))).collect();
    if n_chunk as u64 * NODESIZE as u64 > SYS_CHUNK / 2 {
        return Err(BtrfsError::Internal("chunk tree does not fit the system chunk".into()));
    }

    // 5. Iterate the metadata block count until it settles.
    let fixed = n_root + n_dev + n_csum + n_uuid + fs_counts.iter().sum::<usize>();
    let mut m = fixed + 2;
    let (n_ext, n_fst) = loop {
        meta.length = meta_chunk_size(m, 0);
        let blocks = placeholder_blocks(&sys, n_chunk, &meta, m);
        let ext = block_count(sizes(&extent_items(
            &chunks_of(&meta),
            &data_used_of(&chunks_of(&meta), n_chunk, m, &data_used),
            &data_refs,
            &blocks,
        )));
        let fst = block_count(sizes(&free_space_items(&chunks_of(&meta), &used_ranges(&sys, n_chunk, &meta, m, &data_refs))));
        let total = fixed + ext + fst;
        if total == m {
            break (ext, fst);
        }
        m = total;
    };
    meta.length = meta_chunk_size(m, n_root + n_csum + n_ext + n_fst);
    let (m0, _) = phys.alloc_upto(meta.length, true);
    let (m1, _) = phys.alloc_upto(meta.length, true);
    meta.stripes = vec![m0, m1];
    let end = m1 + meta.length;
    if let Some(r) = region {
        if end > dev_size {
            return Err(BtrfsError::TooSmall { have: r.len(), need: end });
        }
    }
    if region.is_none() {
        return Ok(Outcome { end, bytes_used: 0, allocated: 0, meta_blocks: m });
    }
    let chunks = chunks_of(&meta);

    // 6. Addresses: chunk tree in the system chunk; the rest in order.
    let mut next = meta.logical;
    let mut take = |n: usize| -> Vec<u64> {
        let v: Vec<u64> = (0..n as u64).map(|i| next + i * NODESIZE as u64).collect();
        next += n as u64 * NODESIZE as u64;
        v
    };
    let a_root = take(n_root);
    let a_ext = take(n_ext);
    let a_dev = take(n_dev);
    let a_csum = take(n_csum);
    let a_uuid = take(n_uuid);
    let a_fst = take(n_fst);
    let a_fs: Vec<Vec<u64>> = fs_counts.iter().map(|&n| take(n)).collect();
    let a_chunk: Vec<u64> = (0..n_chunk as u64).map(|i| sys.logical + i * NODESIZE as u64).collect();
    // (address, level, owner) of every tree block.
    let mut blocks: Vec<(u64, u8, u64)> = Vec::new();
    // level_counts works from the leaf count; recover it from the total.
    let leaves_of = |total: usize| (1..=total).find(|&l| level_counts(l).iter().sum::<usize>() == total).unwrap_or(1);
    let fixed_trees = [
        (&a_root, ROOT_TREE),
        (&a_ext, EXTENT_TREE),
        (&a_dev, DEV_TREE),
        (&a_csum, CSUM_TREE),
        (&a_uuid, UUID_TREE),
        (&a_fst, FREE_SPACE_TREE),
        (&a_chunk, CHUNK_TREE),
    ];
    for (addrs, owner) in fixed_trees.into_iter().chain(a_fs.iter().zip(fs_trees.iter().map(|t| t.owner))) {
        let levels = level_counts(leaves_of(addrs.len()));
        let lv = levels.iter().enumerate().flat_map(|(lvl, &c)| std::iter::repeat_n(lvl as u8, c));
        for (a, lvl) in addrs.iter().zip(lv) {
            blocks.push((*a, lvl, owner));
        }
    }
    blocks.sort();

    let bg_used = data_used_of(&chunks, n_chunk, m, &data_used);
    let ext_items = extent_items(&chunks, &bg_used, &data_refs, &blocks);
    let fst_items = free_space_items(&chunks, &used_ranges(&sys, n_chunk, &meta, m, &data_refs));
    let dev_allocated: u64 = chunks.iter().map(|c| c.length * c.stripes.len() as u64).sum();
    let bytes_used: u64 = bg_used.iter().sum();

    // Build every tree but the root tree, then the root tree.
    let mut built: Vec<(Chunk, btree::Built)> = Vec::new();
    let build_tree = |items: &[Item], owner: u64, addrs: &[u64]| -> Result<btree::Built, BtrfsError> {
        if block_count(sizes(items)) != addrs.len() {
            return Err(BtrfsError::Internal(format!("tree {owner}: block count changed after sizing")));
        }
        Ok(btree::build(items, owner, addrs, &stamp))
    };
    let b_ext = build_tree(&ext_items, EXTENT_TREE, &a_ext)?;
    let b_dev = build_tree(&dev_items(&chunks, &chunk_uuid), DEV_TREE, &a_dev)?;
    let b_csum = build_tree(&csum_items, CSUM_TREE, &a_csum)?;
    let b_uuid = build_tree(&uuid_items, UUID_TREE, &a_uuid)?;
    let b_fst = build_tree(&fst_items, FREE_SPACE_TREE, &a_fst)?;
    let b_chunk = build_tree(&chunk_items(&chunks, dev_allocated, &dev_uuid, &fsid, dev_size), CHUNK_TREE, &a_chunk)?;
    let b_fs: Vec<btree::Built> = fs_trees.iter().zip(&a_fs).map(|(t, a)| build_tree(&t.items, t.owner, a)).collect::<Result<_, _>>()?;
    let mut addrs = RootAddrs {
        extent: (b_ext.root, b_ext.level, n_ext),
        dev: (b_dev.root, b_dev.level, n_dev),
        csum: (b_csum.root, b_csum.level, n_csum),
        uuid: (b_uuid.root, b_uuid.level, n_uuid),
        fst: (b_fst.root, b_fst.level, n_fst),
        fs: BTreeMap::new(),
    };
    for (t, b) in fs_trees.iter().zip(&b_fs) {
        addrs.fs.insert(t.owner, (b.root, b.level, b.blocks.len()));
    }
    let b_root = build_tree(&root_tree_items(&addrs), ROOT_TREE, &a_root)?;

    // 7. Write tree blocks to every stripe.
    let region = region.expect("checked above");
    built.push((sys.clone(), b_chunk));
    for b in [b_root, b_ext, b_dev, b_csum, b_uuid, b_fst].into_iter().chain(b_fs) {
        built.push((meta.clone(), b));
    }
    let mut root_info = (0u64, 0u8);
    let mut chunk_info = (0u64, 0u8);
    for (i, (c, b)) in built.iter().enumerate() {
        if i == 0 {
            chunk_info = (b.root, b.level);
        } else if i == 1 {
            root_info = (b.root, b.level);
        }
        for (addr, _, bytes) in &b.blocks {
            if !c.contains(*addr) {
                return Err(BtrfsError::Internal(format!("block {addr} outside its chunk")));
            }
            for &s in &c.stripes {
                region.write_at(bytes, s + (addr - c.logical))?;
            }
        }
    }

    // 8. Superblocks.
    let sb_ctx = SuperCtx {
        fsid,
        dev_uuid,
        label: params.label.as_bytes(),
        dev_size,
        bytes_used,
        dev_allocated,
        root: root_info,
        chunk_root: chunk_info,
        sys: &sys,
        incompat: INCOMPAT_MIXED_BACKREF
            | INCOMPAT_EXTENDED_IREF
            | INCOMPAT_SKINNY_METADATA
            | INCOMPAT_NO_HOLES
            | if opts.default_subvolume.is_some() { INCOMPAT_DEFAULT_SUBVOL } else { 0 }
            | if opts.compression == Some(Compression::Zstd) { INCOMPAT_COMPRESS_ZSTD } else { 0 },
        backup: &addrs,
    };
    for &off in &SUPER_MIRRORS {
        if off + SUPER_INFO_SIZE as u64 <= dev_size {
            region.write_at(&superblock(&sb_ctx, off), off)?;
        }
    }
    Ok(Outcome { end, bytes_used, allocated: dev_allocated, meta_blocks: m })
}

/// Size of the metadata chunk for `blocks` tree blocks, of which
/// `global_blocks` belong to the trees the kernel sizes its global block
/// reserve by (root, extent, csum, free-space). The free part covers that
/// reserve (at least about 6 MiB on a small filesystem) plus 6 MiB for
/// transactions, so that even a filesystem of exactly `min_size` takes small
/// changes read-write without a new chunk.
fn meta_chunk_size(blocks: usize, global_blocks: usize) -> u64 {
    let used = blocks as u64 * NODESIZE as u64;
    let global = (global_blocks as u64 * NODESIZE as u64).clamp(6 * MIB, 512 * MIB);
    align_up(used + global + 6 * MIB, MIB)
}

/// Per chunk (in `chunks_of` order): bytes used.
fn data_used_of(chunks: &[Chunk], n_chunk: usize, m: usize, data_used: &[u64]) -> Vec<u64> {
    let mut v = vec![n_chunk as u64 * NODESIZE as u64];
    v.extend(data_used.iter().copied());
    v.push(m as u64 * NODESIZE as u64);
    debug_assert_eq!(v.len(), chunks.len());
    v
}

/// Placeholder (address, level, owner) for `m` metadata blocks and the
/// chunk tree's blocks: same keys' order and sizes as the real ones.
fn placeholder_blocks(sys: &Chunk, n_chunk: usize, meta: &Chunk, m: usize) -> Vec<(u64, u8, u64)> {
    let mut v: Vec<(u64, u8, u64)> = (0..n_chunk as u64).map(|i| (sys.logical + i * NODESIZE as u64, 0, CHUNK_TREE)).collect();
    v.extend((0..m as u64).map(|i| (meta.logical + i * NODESIZE as u64, 0, FS_TREE)));
    v
}

/// Used logical ranges per chunk (sorted, merged).
fn used_ranges(sys: &Chunk, n_chunk: usize, meta: &Chunk, m: usize, data_refs: &[(u64, u64, u64, u64, u64)]) -> Vec<(u64, u64)> {
    let mut v = vec![(sys.logical, n_chunk as u64 * NODESIZE as u64), (meta.logical, m as u64 * NODESIZE as u64)];
    v.extend(data_refs.iter().map(|r| (r.0, r.1)));
    v.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, l) in v {
        match out.last_mut() {
            Some(p) if p.0 + p.1 == s => p.1 += l,
            _ => out.push((s, l)),
        }
    }
    out
}

fn extent_items(chunks: &[Chunk], bg_used: &[u64], data_refs: &[(u64, u64, u64, u64, u64)], blocks: &[(u64, u8, u64)]) -> Vec<Item> {
    let mut v = Vec::with_capacity(chunks.len() + data_refs.len() + blocks.len());
    for (c, used) in chunks.iter().zip(bg_used) {
        let mut b = Buf::with_capacity(24);
        b.u64(*used).u64(FIRST_CHUNK_TREE_OBJECTID).u64(c.flags);
        v.push(Item::new(Key::new(c.logical, BLOCK_GROUP_ITEM, c.length), b.into_vec()));
    }
    for &(bytenr, len, root, ino, off) in data_refs {
        let mut b = Buf::with_capacity(53);
        b.u64(1).u64(GENERATION).u64(EXTENT_FLAG_DATA).u8(EXTENT_DATA_REF).u64(root).u64(ino).u64(off).u32(1);
        v.push(Item::new(Key::new(bytenr, EXTENT_ITEM, len), b.into_vec()));
    }
    for &(addr, level, owner) in blocks {
        let mut b = Buf::with_capacity(33);
        b.u64(1).u64(GENERATION).u64(EXTENT_FLAG_TREE_BLOCK).u8(TREE_BLOCK_REF).u64(owner);
        v.push(Item::new(Key::new(addr, METADATA_ITEM, level as u64), b.into_vec()));
    }
    v.sort_by_key(|i| i.key);
    v
}

fn free_space_items(chunks: &[Chunk], used: &[(u64, u64)]) -> Vec<Item> {
    let mut v = Vec::new();
    let mut sorted: Vec<&Chunk> = chunks.iter().collect();
    sorted.sort_by_key(|c| c.logical);
    for c in sorted {
        let mut free = Vec::new();
        let mut pos = c.logical;
        let end = c.logical + c.length;
        for &(s, l) in used.iter().filter(|(s, l)| *s < end && s + l > c.logical) {
            let (s, e) = (s.max(c.logical), (s + l).min(end));
            if s > pos {
                free.push((pos, s - pos));
            }
            pos = e;
        }
        if pos < c.logical + c.length {
            free.push((pos, c.logical + c.length - pos));
        }
        let mut b = Buf::with_capacity(8);
        b.u32(free.len() as u32).u32(0);
        v.push(Item::new(Key::new(c.logical, FREE_SPACE_INFO, c.length), b.into_vec()));
        for (s, l) in free {
            v.push(Item::new(Key::new(s, FREE_SPACE_EXTENT, l), Vec::new()));
        }
    }
    v
}

fn dev_items(chunks: &[Chunk], chunk_uuid: &[u8; 16]) -> Vec<Item> {
    let mut v = Vec::new();
    for c in chunks {
        for &s in &c.stripes {
            let mut b = Buf::with_capacity(48);
            b.u64(CHUNK_TREE).u64(FIRST_CHUNK_TREE_OBJECTID).u64(c.logical).u64(c.length).bytes(chunk_uuid);
            v.push(Item::new(Key::new(1, DEV_EXTENT, s), b.into_vec()));
        }
    }
    v.sort_by_key(|i| i.key);
    v
}

fn chunk_items(chunks: &[Chunk], allocated: u64, dev_uuid: &[u8; 16], fsid: &[u8; 16], dev_size: u64) -> Vec<Item> {
    let mut b = Buf::with_capacity(98);
    DevItem { total_bytes: dev_size, bytes_used: allocated, uuid: *dev_uuid, fsid: *fsid }.put(&mut b);
    let mut v = vec![Item::new(Key::new(DEV_ITEMS_OBJECTID, DEV_ITEM, 1), b.into_vec())];
    for c in chunks {
        v.push(Item::new(Key::new(FIRST_CHUNK_TREE_OBJECTID, CHUNK_ITEM, c.logical), c.encode(dev_uuid)));
    }
    v.sort_by_key(|i| i.key);
    v
}

/// The UUID of a subvolume (tree 5 included), derived from the seed.
fn subvol_uuid(params: &FsParams, id: u64) -> [u8; 16] {
    *derive_uuid(&params.seed, &format!("btrfs-subvol-uuid-{id}")).as_bytes()
}

/// The uuid tree: each subvolume's UUID (split into two little-endian
/// halves as the key) to its id, so a first read-write mount need not
/// rescan.
fn uuid_items(roots: &[FsRootPlan], params: &FsParams) -> Vec<Item> {
    let mut v: Vec<Item> = roots
        .iter()
        .map(|r| {
            let u = subvol_uuid(params, r.id);
            let hi = u64::from_le_bytes(u[0..8].try_into().expect("8 bytes"));
            let lo = u64::from_le_bytes(u[8..16].try_into().expect("8 bytes"));
            Item::new(Key::new(hi, UUID_KEY_SUBVOL, lo), r.id.to_le_bytes().to_vec())
        })
        .collect();
    v.sort_by_key(|i| i.key);
    v
}

fn csum_items(csums: &data::Csums) -> Vec<Item> {
    // The kernel's MAX_CSUM_ITEMS for 4-byte checksums.
    let max = (disk::LEAF_DATA - 2 * ITEM_SIZE) / 4 - 1;
    let mut v = Vec::new();
    for (start, sums) in &csums.0 {
        for (i, part) in sums.chunks(max).enumerate() {
            let mut b = Buf::with_capacity(part.len() * 4);
            for s in part {
                b.u32(*s);
            }
            let off = start + (i * max) as u64 * SECTORSIZE as u64;
            v.push(Item::new(Key::new(EXTENT_CSUM_OBJECTID, EXTENT_CSUM, off), b.into_vec()));
        }
    }
    v
}

/// Where the trees' roots are: (address, level, block count).
#[derive(Default)]
struct RootAddrs {
    extent: (u64, u8, usize),
    dev: (u64, u8, usize),
    csum: (u64, u8, usize),
    uuid: (u64, u8, usize),
    fst: (u64, u8, usize),
    fs: BTreeMap<u64, (u64, u8, usize)>,
}

fn root_items(a: &RootAddrs, subvols: &[SubvolRef], opts: &BtrfsOptions, params: &FsParams, epoch: i64) -> Vec<Item> {
    let plain = |(bytenr, level, n): (u64, u8, usize)| {
        RootItem { bytenr, level, bytes_used: n as u64 * NODESIZE as u64, root_dirid: 0, uuid: [0; 16], time: 0, otransid: 0 }.encode()
    };
    let fs = |id: u64| {
        let (bytenr, level, n) = a.fs.get(&id).copied().unwrap_or_default();
        let uuid = if id == DATA_RELOC_TREE { [0; 16] } else { subvol_uuid(params, id) };
        let otransid = if id >= FIRST_FREE_OBJECTID && id != DATA_RELOC_TREE { GENERATION } else { 0 };
        let bytes_used = n as u64 * NODESIZE as u64;
        RootItem { bytenr, level, bytes_used, root_dirid: FIRST_FREE_OBJECTID, uuid, time: epoch, otransid }.encode()
    };
    let mut v = vec![
        Item::new(Key::new(EXTENT_TREE, ROOT_ITEM, 0), plain(a.extent)),
        Item::new(Key::new(DEV_TREE, ROOT_ITEM, 0), plain(a.dev)),
        Item::new(Key::new(FS_TREE, ROOT_ITEM, 0), fs(FS_TREE)),
        Item::new(Key::new(CSUM_TREE, ROOT_ITEM, 0), plain(a.csum)),
        Item::new(Key::new(UUID_TREE, ROOT_ITEM, 0), plain(a.uuid)),
        Item::new(Key::new(FREE_SPACE_TREE, ROOT_ITEM, 0), plain(a.fst)),
        Item::new(Key::new(DATA_RELOC_TREE, ROOT_ITEM, 0), fs(DATA_RELOC_TREE)),
    ];
    // The root tree directory and its "default" entry.
    let default_id =
        opts.default_subvolume.as_ref().and_then(|d| subvols.iter().find(|s| s.name == d.as_bytes())).map(|s| s.id).unwrap_or(FS_TREE);
    let dir = InodeItem { nbytes: NODESIZE as u64, nlink: 1, mode: libc::S_IFDIR | 0o755, sec: epoch, ..Default::default() };
    v.push(Item::new(Key::new(ROOT_TREE_DIR, INODE_ITEM, 0), dir.encode()));
    let mut b = Buf::default();
    inode_ref(&mut b, 0, b"..");
    v.push(Item::new(Key::new(ROOT_TREE_DIR, INODE_REF, ROOT_TREE_DIR), b.into_vec()));
    let mut b = Buf::default();
    // mkfs.btrfs points at tree 5 with offset -1; the kernel's set-default
    // at a subvolume with offset 0.
    let offset = if default_id == FS_TREE { u64::MAX } else { 0 };
    dir_item(&mut b, Key::new(default_id, ROOT_ITEM, offset), FT_DIR, b"default", b"");
    v.push(Item::new(Key::new(ROOT_TREE_DIR, DIR_ITEM, crc::name_hash(b"default")), b.into_vec()));
    for s in subvols {
        let mut b = Buf::default();
        b.u64(FIRST_FREE_OBJECTID).u64(s.index).u16(s.name.len() as u16).bytes(&s.name);
        let body = b.into_vec();
        v.push(Item::new(Key::new(FS_TREE, ROOT_REF, s.id), body.clone()));
        v.push(Item::new(Key::new(s.id, ROOT_BACKREF, FS_TREE), body));
        v.push(Item::new(Key::new(s.id, ROOT_ITEM, 0), fs(s.id)));
    }
    v.sort_by_key(|i| i.key);
    v
}

struct SuperCtx<'a> {
    fsid: [u8; 16],
    dev_uuid: [u8; 16],
    label: &'a [u8],
    dev_size: u64,
    bytes_used: u64,
    dev_allocated: u64,
    root: (u64, u8),
    chunk_root: (u64, u8),
    sys: &'a Chunk,
    incompat: u64,
    backup: &'a RootAddrs,
}

fn superblock(c: &SuperCtx<'_>, bytenr: u64) -> Vec<u8> {
    let mut b = Buf::with_capacity(SUPER_INFO_SIZE);
    b.zeros(32).bytes(&c.fsid).u64(bytenr).u64(HEADER_FLAG_WRITTEN).bytes(MAGIC);
    b.u64(GENERATION) // generation
        .u64(c.root.0)
        .u64(c.chunk_root.0)
        .u64(0) // log_root
        .u64(0) // log_root_transid
        .u64(c.dev_size)
        .u64(c.bytes_used)
        .u64(ROOT_TREE_DIR)
        .u64(1) // num_devices
        .u32(SECTORSIZE)
        .u32(NODESIZE)
        .u32(NODESIZE) // leafsize
        .u32(SECTORSIZE); // stripesize
    let mut sys_array = Buf::default();
    Key::new(FIRST_CHUNK_TREE_OBJECTID, CHUNK_ITEM, c.sys.logical).put(&mut sys_array);
    sys_array.bytes(&c.sys.encode(&c.dev_uuid));
    b.u32(sys_array.0.len() as u32)
        .u64(GENERATION) // chunk_root_generation
        .u64(0) // compat
        .u64(COMPAT_RO_FREE_SPACE_TREE | COMPAT_RO_FREE_SPACE_TREE_VALID)
        .u64(c.incompat)
        .u16(0) // csum_type crc32c
        .u8(c.root.1)
        .u8(c.chunk_root.1)
        .u8(0); // log_root_level
    DevItem { total_bytes: c.dev_size, bytes_used: c.dev_allocated, uuid: c.dev_uuid, fsid: c.fsid }.put(&mut b);
    let mut label = [0u8; 256];
    label[..c.label.len()].copy_from_slice(c.label);
    b.bytes(&label);
    b.u64(0) // cache_generation
        .u64(GENERATION) // uuid_tree_generation
        .zeros(16) // metadata_uuid
        .u64(0) // nr_global_roots
        .zeros(27 * 8);
    debug_assert_eq!(b.0.len(), 0x32b);
    let mut arr = [0u8; 2048];
    arr[..sys_array.0.len()].copy_from_slice(&sys_array.0);
    b.bytes(&arr);
    // Backup root 0: the roots as written.
    let a = c.backup;
    let fs = a.fs.get(&FS_TREE).copied().unwrap_or_default();
    b.u64(c.root.0).u64(GENERATION);
    b.u64(c.chunk_root.0).u64(GENERATION);
    b.u64(a.extent.0).u64(GENERATION);
    b.u64(fs.0).u64(GENERATION);
    b.u64(a.dev.0).u64(GENERATION);
    b.u64(a.csum.0).u64(GENERATION);
    b.u64(c.dev_size).u64(c.bytes_used).u64(1).zeros(32);
    b.u8(c.root.1).u8(c.chunk_root.1).u8(a.extent.1).u8(fs.1).u8(a.dev.1).u8(a.csum.1).zeros(10);
    b.zeros(3 * 168);
    b.zeros(SUPER_INFO_SIZE - b.0.len());
    let mut out = b.into_vec();
    btree::seal(&mut out);
    out
}

#[cfg(test)]
mod tests;
