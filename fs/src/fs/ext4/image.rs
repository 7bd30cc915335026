//! Plan (inode numbers, blocks, every metadata block's bytes) and write.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::csum::{crc32c, dx_hash};
use super::layout::{backup_groups, Alloc, Geometry, NoFit, BPG, DESC_SIZE, FLEX, INODE_SIZE};
use super::{Ext4Error, Ext4Options, BS};
use crate::disk::region::Staged;
use crate::disk::Region;
use crate::fs::{FsParams, FsReport};
use crate::tree::{show, InodeId, Kind, Tree};

const EXTENTS_FL: u32 = 0x0008_0000;
const INDEX_FL: u32 = 0x0000_1000;
const FIRST_INO: u64 = 11;
const ROOT_INO: u64 = 2;
const RESIZE_INO: u64 = 7;
const JOURNAL_INO: u64 = 8;
const LPF_INO: u64 = 11;
/// Extent entries per tree block (after the 12-byte header, before the tail).
const EXT_PER_BLOCK: usize = ((BS as usize) - 12 - 4) / 12;
/// Longest extent of initialised blocks.
const MAX_EXT_LEN: u64 = 32768;
/// End of the directory entries in a block (a 12-byte checksum tail follows).
const DIR_END: usize = BS as usize - 12;
/// dx entries in the root block and in an interior node (8-byte tail each).
const DX_ROOT_LIMIT: usize = (BS as usize - 0x20 - 8) / 8;
const DX_NODE_LIMIT: usize = (BS as usize - 8 - 8) / 8;
/// Space for in-inode xattrs: after the 128 + 32 byte inode, minus the magic.
const IBODY_START: usize = 128 + 32;

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// `ext2fs_default_journal_size` (in blocks) for a filesystem of `blocks`.
pub(super) fn journal_blocks(blocks: u64) -> Option<u64> {
    Some(match blocks {
        0..2048 => return None,
        2048..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        524288..4194304 => 16384,
        4194304..8388608 => 32768,
        8388608..16777216 => 65536,
        16777216..33554432 => 131072,
        _ => 262144,
    })
}

/// A run of a file: logical block, length (≤ 32768), physical block.
#[derive(Debug, Clone, Copy)]
struct Ext {
    lblk: u32,
    len: u32,
    pblk: u64,
}

/// What an inode is.
#[derive(Debug)]
enum What {
    Unused,
    Resize,
    Journal,
    LostFound,
    Tree(InodeId),
}

/// Everything needed to encode one on-disk inode and its blocks.
#[derive(Debug)]
struct PInode {
    what: What,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    links: u16,
    size: u64,
    flags: u32,
    /// Blocks counted in `i_blocks` (4 KiB units).
    blocks: u64,
    iblock: [u8; 60],
    file_acl: u64,
    /// In-inode xattr area (from offset 160 to the end), or empty.
    ibody: Vec<u8>,
    /// Data extents (files: where to copy the content).
    exts: Vec<Ext>,
    /// Metadata blocks to write: directory blocks, slow symlink block,
    /// xattr block, extent-tree nodes.
    blobs: Vec<(u64, Vec<u8>)>,
}

impl PInode {
    fn new(what: What, mode: u16, epoch: i64) -> PInode {
        PInode {
            what,
            mode,
            uid: 0,
            gid: 0,
            mtime: (epoch, 0),
            links: 0,
            size: 0,
            flags: 0,
            blocks: 0,
            iblock: [0; 60],
            file_acl: 0,
            ibody: Vec::new(),
            exts: Vec::new(),
            blobs: Vec::new(),
        }
    }
}

/// The whole filesystem, decided before the first write.
pub struct Plan {
    geo: Geometry,
    opts: Ext4Options,
    uuid: [u8; 16],
    label: [u8; 16],
    epoch: i64,
    hash_seed: [u32; 4],
    csum_seed: u32,
    /// Index = inode number - 1, for inodes 1..=last used.
    inodes: Vec<PInode>,
    /// End of the block allocation: every block below is in use.
    cursor: u64,
    /// Blocks handed out by the allocator (a lower bound on any size).
    data_blocks: u64,
    dind: Option<u64>,
    journal: Option<(u64, u64)>,
    notes: Vec<String>,
}

enum PlanErr {
    /// More blocks are needed (a guess of how many in all).
    Need(u64),
    /// The content did not fit by `missing` blocks, with this journal.
    Shortage {
        missing: u64,
        journal: Option<u64>,
        need: u64,
    },
    Fatal(Ext4Error),
}

impl From<Ext4Error> for PlanErr {
    fn from(e: Ext4Error) -> Self {
        PlanErr::Fatal(e)
    }
}

/// Walk order of the tree: first visit of each inode, with its parent.
struct Order {
    /// (tree id, parent tree id) in walk order, root first.
    list: Vec<(InodeId, InodeId)>,
    /// Tree id → ext4 inode number (0: unreachable).
    ino: Vec<u32>,
    links: Vec<u32>,
    lpf: bool,
}

fn path_of(tree: &Tree, id: InodeId) -> String {
    let mut p = None;
    tree.walk(|v| {
        if v.ino == id && p.is_none() {
            p = Some(show(v.path));
        }
    });
    p.unwrap_or_else(|| "/".into())
}

fn order(tree: &Tree) -> Result<Order, Ext4Error> {
    let links = tree.link_counts();
    let mut seen = vec![false; links.len()];
    let mut list = Vec::new();
    let mut err = None;
    tree.walk(|v| {
        if err.is_some() {
            return;
        }
        if v.name.len() > 255 {
            err = Some(Ext4Error::NameTooLong { path: show(v.path), len: v.name.len() });
            return;
        }
        if seen[v.ino] {
            return;
        }
        seen[v.ino] = true;
        let node = tree.inode(v.ino);
        if !matches!(node.kind, Kind::Dir(_)) && links[v.ino] > 65000 {
            err = Some(Ext4Error::TooManyLinks { path: show(v.path), links: links[v.ino] });
        }
        match &node.kind {
            Kind::Symlink(t) if t.len() > 4095 => {
                err = Some(Ext4Error::SymlinkTooLong { path: show(v.path), len: t.len() });
            }
            Kind::File(c) if c.len() > (u32::MAX as u64) * BS => {
                err = Some(Ext4Error::FileTooLarge { path: show(v.path), size: c.len() });
            }
            _ => {}
        }
        list.push((v.ino, v.parent));
    });
    if let Some(e) = err {
        return Err(e);
    }
    let lpf = match tree.child(Tree::ROOT, b"lost+found") {
        None => true,
        Some(id) if matches!(tree.inode(id).kind, Kind::Dir(_)) => false,
        Some(id) => {
            return Err(Ext4Error::LostFound { kind: tree.inode(id).kind.word() });
        }
    };
    let mut ino = vec![0u32; links.len()];
    let mut next = if lpf { FIRST_INO + 1 } else { FIRST_INO };
    for &(id, _) in &list {
        if id == Tree::ROOT {
            ino[id] = ROOT_INO as u32;
        } else {
            ino[id] = next as u32;
            next += 1;
        }
    }
    Ok(Order { list, ino, links, lpf })
}

fn need_inodes(o: &Order) -> u64 {
    FIRST_INO - 1 + o.lpf as u64 + (o.list.len() as u64 - 1)
}

/// Smallest number of blocks that holds the tree.
pub fn min_blocks(tree: &Tree, params: &FsParams, opts: &Ext4Options) -> u64 {
    let Ok(o) = order(tree) else { return 64 };
    // With a journal wanted, never answer below the size that gets one
    // (under 2048 blocks there is none, as with mke2fs).
    let floor: u64 = if opts.journal { 2048 } else { 64 };
    let mut blocks: u64 = floor.max(64 + need_inodes(&o) * INODE_SIZE / BS);
    for _ in 0..64 {
        match Plan::fit(tree, &o, blocks, params, opts) {
            Ok(p) => {
                // Content demand hardly depends on the size: everything the
                // allocator handed out but the journal and the resize block.
                let j = p.journal.map_or(0, |j| j.1);
                let demand = p.data_blocks - j - p.dind.is_some() as u64;
                let jmin = if opts.journal { j.min(1024) } else { 0 };
                let need = need_inodes(&o);
                // Cheap bisection on geometry alone: the smallest size
                // whose free blocks hold the demand and the smallest journal.
                let fits_geo = |b: u64| match Geometry::new(b, opts, need) {
                    Ok((g, _)) if g.inodes_count() >= need => g.free_blocks() >= demand + jmin + (g.rsv_gdt > 0) as u64,
                    _ => false,
                };
                let (mut bad, mut good) = ((demand + jmin).max(floor) - 1, blocks);
                while good - bad > 1 {
                    let mid = bad + (good - bad) / 2;
                    if fits_geo(mid) {
                        good = mid;
                    } else {
                        bad = mid;
                    }
                }
                // Confirm with full plans; fall back to bisecting on them.
                let full = |b: u64| Plan::fit(tree, &o, b, params, opts).is_ok();
                if full(good) && (good <= floor || !full(good - 1)) {
                    return good;
                }
                let (mut bad, mut good) = if full(good) { (floor - 1, good - 1) } else { (good, blocks) };
                while good - bad > 1 {
                    let mid = bad + (good - bad) / 2;
                    if full(mid) {
                        good = mid;
                    } else {
                        bad = mid;
                    }
                }
                return good;
            }
            Err(PlanErr::Need(n) | PlanErr::Shortage { need: n, .. }) => blocks = n.max(blocks + blocks / 64 + 16),
            Err(PlanErr::Fatal(_)) => return blocks,
        }
    }
    blocks
}

fn csum_seed(uuid: &[u8; 16]) -> u32 {
    crc32c(!0, uuid)
}

impl Plan {
    pub fn new(tree: &Tree, blocks: u64, params: &FsParams, opts: &Ext4Options) -> Result<Plan, Ext4Error> {
        let o = order(tree)?;
        match Plan::fit(tree, &o, blocks, params, opts) {
            Ok(p) => Ok(p),
            Err(PlanErr::Fatal(e)) => Err(e),
            Err(PlanErr::Need(_) | PlanErr::Shortage { .. }) => {
                Err(Ext4Error::TooSmall { size: blocks * BS, needed: min_blocks(tree, params, opts) * BS })
            }
        }
    }

    /// Plan with the default journal size; when only the journal is what
    /// does not fit, shrink it (down to 1024 blocks) rather than fail, so
    /// that a larger region never fits less than a smaller one.
    fn fit(tree: &Tree, o: &Order, blocks: u64, params: &FsParams, opts: &Ext4Options) -> Result<Plan, PlanErr> {
        match Plan::try_new(tree, o, blocks, params, opts, None) {
            Err(PlanErr::Shortage { missing, journal: Some(j), need }) if j > 1024 => {
                let smaller = (j.saturating_sub(missing + 64) / 1024 * 1024).max(1024);
                let mut r = Plan::try_new(tree, o, blocks, params, opts, Some(smaller));
                if smaller > 1024 && matches!(r, Err(PlanErr::Shortage { .. })) {
                    r = Plan::try_new(tree, o, blocks, params, opts, Some(1024));
                }
                match r {
                    Ok(mut p) => {
                        p.notes.push(format!(
                            "journal shrunk from {} to {} MiB to fit the content",
                            (j * BS) >> 20,
                            (p.journal.map_or(0, |j| j.1) * BS) >> 20
                        ));
                        Ok(p)
                    }
                    Err(PlanErr::Shortage { .. }) => Err(PlanErr::Need(need)),
                    Err(e) => Err(e),
                }
            }
            Err(PlanErr::Shortage { need, .. }) => Err(PlanErr::Need(need)),
            r => r,
        }
    }

    fn try_new(
        tree: &Tree,
        o: &Order,
        blocks: u64,
        params: &FsParams,
        opts: &Ext4Options,
        journal_cap: Option<u64>,
    ) -> Result<Plan, PlanErr> {
        let need = need_inodes(o);
        let (geo, raised) = Geometry::new(blocks, opts, need).map_err(|NoFit { need_blocks }| PlanErr::Need(need_blocks))?;
        if geo.inodes_count() < need {
            if opts.inodes.is_some() {
                return Err(Ext4Error::TooFewInodes { needed: need, available: geo.inodes_count() }.into());
            }
            return Err(PlanErr::Need(blocks + blocks / 8 + BPG));
        }
        let uuid = *params.uuid.as_bytes();
        let mut label = [0u8; 16];
        let mut notes = Vec::new();
        {
            let mut l = params.label.as_bytes();
            if l.len() > 16 {
                let mut n = 16;
                while !params.label.is_char_boundary(n) {
                    n -= 1;
                }
                l = &l[..n];
                notes.push(format!("label truncated to 16 bytes: {}", String::from_utf8_lossy(l)));
            }
            label[..l.len()].copy_from_slice(l);
        }
        if raised {
            notes.push(format!("inode count raised to {} to fit the tree", geo.inodes_count()));
        }
        let mut hash_seed = [0u32; 4];
        for (i, w) in hash_seed.iter_mut().enumerate() {
            *w = u32::from_le_bytes(params.seed[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        }
        let mut p = Plan {
            opts: opts.clone(),
            uuid,
            label,
            epoch: params.epoch,
            hash_seed,
            csum_seed: csum_seed(&uuid),
            inodes: Vec::new(),
            cursor: 0,
            data_blocks: 0,
            dind: None,
            journal: None,
            notes,
            geo,
        };
        let geo = p.geo.clone();
        let mut alloc = Alloc::new(&geo);
        let epoch = params.epoch;
        let last = need;
        p.inodes = (1..=last).map(|_| PInode::new(What::Unused, 0, epoch)).collect();

        // The resize inode: a double-indirect block mapping the reserved GDT blocks.
        if geo.rsv_gdt > 0 {
            let dind = alloc.one();
            p.dind = Some(dind);
            let nb = backup_groups(geo.groups).len() as u64;
            let r = &mut p.inodes[(RESIZE_INO - 1) as usize];
            r.what = What::Resize;
            r.mode = 0o100600;
            r.links = 1;
            r.size = (1024 * 1024 + 1024 + 12) * BS;
            r.blocks = 1 + geo.rsv_gdt * (1 + nb);
            put32(&mut r.iblock, 13 * 4, dind as u32);
        }
        // The journal.
        if opts.journal {
            match journal_blocks(geo.blocks).map(|n| journal_cap.map_or(n, |c| c.min(n))) {
                Some(n) => {
                    let runs = alloc.take(n);
                    let exts = to_exts(0, &runs);
                    let tb = alloc.take(tree_blocks_needed(exts.len()));
                    let seed = p.ino_seed(JOURNAL_INO);
                    let j = &mut p.inodes[(JOURNAL_INO - 1) as usize];
                    j.what = What::Journal;
                    j.mode = 0o100600;
                    j.links = 1;
                    j.size = n * BS;
                    j.flags = EXTENTS_FL;
                    j.blocks = n + run_len(&tb);
                    let (ib, nodes) = extent_tree(&exts, &tb, seed);
                    j.iblock = ib;
                    j.blobs = nodes;
                    j.exts = exts;
                    p.journal = Some((runs[0].0, n));
                }
                None => p.notes.push("no journal: the filesystem is under 2048 blocks".into()),
            }
        }
        // lost+found.
        if o.lpf {
            let seed = p.ino_seed(LPF_INO);
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            let mut b0 = DirBlock::new();
            b0.add(LPF_INO as u32, b".", 2);
            b0.add(ROOT_INO as u32, b"..", 2);
            blocks.push(b0.finish(seed));
            for _ in 1..4 {
                blocks.push(DirBlock::new().finish(seed));
            }
            let l = &mut p.inodes[(LPF_INO - 1) as usize];
            l.what = What::LostFound;
            l.mode = 0o40700;
            l.links = 2;
            place_blocks(l, blocks, &mut alloc, seed);
        }
        // The tree, in inode order.
        for &(id, parent) in &o.list {
            let ino = o.ino[id] as u64;
            let seed = p.ino_seed(ino);
            let node = tree.inode(id);
            let mut pi = PInode::new(What::Tree(id), node.st_mode() as u16, epoch);
            pi.uid = node.meta.uid;
            pi.gid = node.meta.gid;
            pi.mtime = (node.meta.mtime, node.meta.mtime_nsec);
            let mut links = o.links[id] + if id == Tree::ROOT && o.lpf { 1 } else { 0 };
            if links > 65000 {
                links = 1; // dir_nlink: "many"
                if !opts.dir_nlink {
                    return Err(Ext4Error::TooManyLinks { path: path_of(tree, id), links: o.links[id] }.into());
                }
            }
            pi.links = links as u16;
            // Extended attributes first: the block goes before the data.
            let (ibody, xblock) =
                xattrs(&node.meta.xattrs).map_err(|(name, why)| Ext4Error::Xattr { path: path_of(tree, id), name, why })?;
            pi.ibody = ibody;
            if let Some(mut xb) = xblock {
                let b = alloc.one();
                let mut c = crc32c(p.csum_seed, &b.to_le_bytes());
                c = crc32c(c, &xb);
                put32(&mut xb, 0x10, c);
                pi.file_acl = b;
                pi.blocks += 1;
                pi.blobs.push((b, xb));
            }
            match &node.kind {
                Kind::Dir(children) => {
                    let self_ino = ino as u32;
                    let parent_ino = o.ino[parent];
                    let mut ents: Vec<(&[u8], u32, u8)> = Vec::with_capacity(children.len() + 1);
                    for (name, &cid) in children {
                        ents.push((name, o.ino[cid], ftype(&tree.inode(cid).kind)));
                    }
                    if id == Tree::ROOT && o.lpf {
                        let at = ents.partition_point(|e| e.0 < &b"lost+found"[..]);
                        ents.insert(at, (b"lost+found", LPF_INO as u32, 2));
                    }
                    let (blocks, indexed) = p.dir_blocks(self_ino, parent_ino, &ents, seed);
                    if indexed {
                        pi.flags |= INDEX_FL;
                    }
                    place_blocks(&mut pi, blocks, &mut alloc, seed);
                }
                Kind::File(c) => {
                    pi.size = c.len();
                    pi.flags |= EXTENTS_FL;
                    let mut exts = Vec::new();
                    for r in block_runs(&c.data_ranges()) {
                        let runs = alloc.take(r.end - r.start);
                        exts.extend(to_exts(r.start, &runs));
                    }
                    let data: u64 = exts.iter().map(|e| e.len as u64).sum();
                    let tb = alloc.take(tree_blocks_needed(exts.len()));
                    pi.blocks += data + run_len(&tb);
                    let (ib, nodes) = extent_tree(&exts, &tb, seed);
                    pi.iblock = ib;
                    pi.blobs.extend(nodes);
                    pi.exts = exts;
                }
                Kind::Symlink(t) => {
                    pi.size = t.len() as u64;
                    if t.len() < 60 {
                        pi.iblock[..t.len()].copy_from_slice(t);
                    } else {
                        let mut b = vec![0u8; BS as usize];
                        b[..t.len()].copy_from_slice(t);
                        pi.flags |= EXTENTS_FL;
                        place_blocks(&mut pi, vec![b], &mut alloc, seed);
                    }
                }
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                    let (ma, mi) = (*major, *minor);
                    if ma < 256 && mi < 256 {
                        put32(&mut pi.iblock, 0, (ma << 8) | mi);
                    } else {
                        put32(&mut pi.iblock, 4, (mi & 0xff) | (ma << 8) | ((mi & !0xff) << 12));
                    }
                }
                Kind::Fifo | Kind::Socket => {}
            }
            p.inodes[(ino - 1) as usize] = pi;
        }
        p.cursor = alloc.cursor;
        p.data_blocks = alloc.handed_out;
        if p.cursor > geo.blocks {
            // Estimate: the missing blocks plus their share of metadata.
            let missing = p.cursor - geo.blocks;
            return Err(PlanErr::Shortage { missing, journal: p.journal.map(|j| j.1), need: geo.blocks + missing + missing / 32 + 256 });
        }
        Ok(p)
    }

    /// Per-inode checksum seed (generation 0).
    fn ino_seed(&self, ino: u64) -> u32 {
        crc32c(crc32c(self.csum_seed, &(ino as u32).to_le_bytes()), &0u32.to_le_bytes())
    }

    /// The blocks of a directory: linear when one block holds it (or
    /// `dir_index` is off), else an htree root, optional interior nodes and
    /// hash-ordered leaves. Returns the blocks and whether they are indexed.
    fn dir_blocks(&self, self_ino: u32, parent: u32, ents: &[(&[u8], u32, u8)], seed: u32) -> (Vec<Vec<u8>>, bool) {
        let mut lin = Linear::new();
        lin.cur.add(self_ino, b".", 2);
        lin.cur.add(parent, b"..", 2);
        for &(n, i, t) in ents {
            lin.add(i, n, t);
        }
        if lin.blocks.is_empty() || !self.opts.dir_index {
            return (lin.finish(seed), false);
        }
        // htree: leaves sorted by hash.
        let mut hashed: Vec<(u32, &[u8], u32, u8)> = ents.iter().map(|&(n, i, t)| (dx_hash(n, &self.hash_seed), n, i, t)).collect();
        hashed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)));
        let mut leaves: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut cur = DirBlock::new();
        let mut first_hash = 0u32;
        let mut prev_hash: Option<u32> = None;
        for &(h, n, i, t) in &hashed {
            if !cur.fits(n.len()) {
                leaves.push((first_hash, std::mem::replace(&mut cur, DirBlock::new()).finish(seed)));
                // Collision bit: this leaf continues the previous hash.
                first_hash = if prev_hash == Some(h) { h | 1 } else { h };
            } else if cur.is_empty() {
                first_hash = h;
            }
            cur.add(i, n, t);
            prev_hash = Some(h);
        }
        leaves.push((first_hash, cur.finish(seed)));
        let nleaves = leaves.len();
        let levels = if nleaves <= DX_ROOT_LIMIT { 0 } else { 1 };
        let nodes = if levels == 0 { 0 } else { nleaves.div_ceil(DX_NODE_LIMIT) };
        if nodes > DX_ROOT_LIMIT {
            return (lin.finish(seed), false);
        }
        let mut out = Vec::with_capacity(1 + nodes + nleaves);
        // Root.
        let mut root = vec![0u8; BS as usize];
        put32(&mut root, 0, self_ino);
        put16(&mut root, 4, 12);
        root[6] = 1;
        root[7] = 2;
        root[8] = b'.';
        put32(&mut root, 12, parent);
        put16(&mut root, 16, (BS - 12) as u16);
        root[18] = 2;
        root[19] = 2;
        root[20] = b'.';
        root[21] = b'.';
        root[0x18 + 4] = 1; // half_md4
        root[0x18 + 5] = 8;
        root[0x18 + 6] = levels as u8;
        let leaf_base = 1 + nodes as u32;
        if levels == 0 {
            let ents: Vec<(u32, u32)> = leaves.iter().enumerate().map(|(k, l)| (l.0, leaf_base + k as u32)).collect();
            dx_fill(&mut root, 0x20, DX_ROOT_LIMIT, &ents, seed);
            out.push(root);
        } else {
            let chunks: Vec<Vec<(u32, u32)>> = leaves
                .iter()
                .enumerate()
                .map(|(k, l)| (l.0, leaf_base + k as u32))
                .collect::<Vec<_>>()
                .chunks(DX_NODE_LIMIT)
                .map(|c| c.to_vec())
                .collect();
            let rents: Vec<(u32, u32)> = chunks.iter().enumerate().map(|(k, c)| (c[0].0, 1 + k as u32)).collect();
            dx_fill(&mut root, 0x20, DX_ROOT_LIMIT, &rents, seed);
            out.push(root);
            for c in &chunks {
                let mut node = vec![0u8; BS as usize];
                put16(&mut node, 4, BS as u16); // fake empty dirent spanning the block
                dx_fill(&mut node, 8, DX_NODE_LIMIT, c, seed);
                out.push(node);
            }
        }
        out.extend(leaves.into_iter().map(|l| l.1));
        (out, true)
    }

    /// Write everything: file data on a second thread, metadata on this one
    /// (they never share a block). Files are handed out in small batches,
    /// so this thread copies data too once the metadata is out.
    pub fn write(self, tree: &Tree, region: Region<'_>) -> Result<FsReport, Ext4Error> {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let data = s.spawn(|| self.write_data(tree, region, &next));
            let report = self.write_meta(region);
            let mine = self.write_data(tree, region, &next);
            data.join().unwrap_or_else(|e| std::panic::resume_unwind(e))?;
            mine?;
            report
        })
    }

    /// Take batches of inodes from `next` and write their file content.
    fn write_data(&self, tree: &Tree, region: Region<'_>, next: &AtomicUsize) -> Result<(), Ext4Error> {
        const BATCH: usize = 16;
        let mut stage = Staged::new(region);
        loop {
            let from = next.fetch_add(BATCH, Ordering::Relaxed);
            if from >= self.inodes.len() {
                return Ok(stage.flush()?);
            }
            for pi in &self.inodes[from..(from + BATCH).min(self.inodes.len())] {
                self.write_file(tree, &mut stage, pi)?;
            }
        }
    }

    /// File content: each extent's bytes, the gaps between data ranges and
    /// past the end of the file zeroed explicitly.
    fn write_file(&self, tree: &Tree, stage: &mut Staged<'_>, pi: &PInode) -> Result<(), Ext4Error> {
        let What::Tree(id) = pi.what else { return Ok(()) };
        let Kind::File(c) = &tree.inode(id).kind else { return Ok(()) };
        if pi.exts.is_empty() {
            return Ok(());
        }
        let cerr = |e: std::io::Error| Ext4Error::Content { path: path_of(tree, id), origin: c.origin(), source: e };
        let reader = c.open().map_err(cerr)?;
        let ranges = c.data_ranges();
        let mut ri = 0;
        for e in &pi.exts {
            let win = e.lblk as u64 * BS..(e.lblk as u64 + e.len as u64) * BS;
            let dst = |off: u64| e.pblk * BS + (off - win.start);
            let mut pos = win.start;
            while ri > 0 && ranges[ri - 1].end > win.start {
                ri -= 1;
            }
            while ri < ranges.len() && ranges[ri].start < win.end {
                let r = &ranges[ri];
                let s = r.start.max(win.start);
                let t = r.end.min(win.end);
                if s > pos {
                    stage.zero(dst(pos), s - pos)?;
                }
                if t > s {
                    stage.copy(&reader, s, t - s, dst(s)).map_err(|e| match e {
                        crate::disk::RegionError::Io { source, .. } => cerr(source),
                        other => Ext4Error::Region(other),
                    })?;
                    pos = t;
                }
                if r.end > win.end {
                    break;
                }
                ri += 1;
            }
            if pos < win.end {
                stage.zero(dst(pos), win.end - pos)?;
            }
        }
        Ok(())
    }

    fn write_meta(&self, region: Region<'_>) -> Result<FsReport, Ext4Error> {
        let g = &self.geo;
        let last_ino = self.inodes.len() as u64;
        // Inode tables, per group, in full.
        let mut dirs = vec![0u32; g.groups as usize];
        for grp in 0..g.groups {
            let first = grp * g.ipg + 1;
            let mut buf = vec![0u8; (g.itb * BS) as usize];
            if first <= last_ino {
                for ino in first..=(last_ino.min(first + g.ipg - 1)) {
                    let pi = &self.inodes[(ino - 1) as usize];
                    if pi.mode & 0xf000 == 0x4000 {
                        dirs[grp as usize] += 1;
                    }
                    let off = ((ino - first) * INODE_SIZE) as usize;
                    self.encode_inode(ino, pi, &mut buf[off..off + INODE_SIZE as usize]);
                }
            }
            region.write_at(&buf, g.inode_table[grp as usize] * BS)?;
        }
        // Blocks owned by inodes.
        for pi in &self.inodes {
            for (b, bytes) in &pi.blobs {
                region.write_at(bytes, b * BS)?;
            }
        }
        // Journal: zeros, then its superblock.
        if let Some(j) = &self.inodes.get((JOURNAL_INO - 1) as usize) {
            if matches!(j.what, What::Journal) {
                for e in &j.exts {
                    region.zero(e.pblk * BS, e.len as u64 * BS)?;
                }
                let mut jsb = vec![0u8; 1024];
                be32(&mut jsb, 0, 0xC03B_3998);
                be32(&mut jsb, 4, 4);
                be32(&mut jsb, 0xC, BS as u32);
                be32(&mut jsb, 0x10, (j.size / BS) as u32);
                be32(&mut jsb, 0x14, 1);
                be32(&mut jsb, 0x18, 1);
                jsb[0x30..0x40].copy_from_slice(&self.uuid);
                be32(&mut jsb, 0x40, 1);
                region.write_at(&jsb, j.exts[0].pblk * BS)?;
            }
        }
        // Resize inode: the dind block and the primary reserved GDT blocks
        // list their backups; the backup copies are zeros.
        let backups = backup_groups(g.groups);
        if let Some(dind) = self.dind {
            let mut d = vec![0u8; BS as usize];
            for r in 0..g.rsv_gdt {
                let blk = 1 + g.gdt_blocks + r;
                put32(&mut d, (((g.gdt_blocks + r) % 1024) * 4) as usize, blk as u32);
                let mut ind = vec![0u8; BS as usize];
                for (k, &grp) in backups.iter().enumerate() {
                    put32(&mut ind, k * 4, (blk + grp * BPG) as u32);
                }
                region.write_at(&ind, blk * BS)?;
            }
            region.write_at(&d, dind * BS)?;
            for &grp in &backups {
                region.zero((grp * BPG + 1 + g.gdt_blocks) * BS, g.rsv_gdt * BS)?;
            }
        }
        // Bitmaps and group descriptors.
        let mut gdt = vec![0u8; (g.gdt_blocks * BS) as usize];
        let mut free_blocks_total = 0u64;
        let mut free_inodes_total = 0u64;
        let mut mi = 0usize;
        for grp in 0..g.groups {
            let range = g.group_range(grp);
            let mut bb = vec![0u8; BS as usize];
            let set = |bb: &mut [u8], r: Range<u64>| {
                for b in r {
                    let i = (b - range.start) as usize;
                    bb[i / 8] |= 1 << (i % 8);
                }
            };
            let used_end = self.cursor.min(range.end);
            if used_end > range.start {
                set(&mut bb, range.start..used_end);
            }
            while mi < g.meta.len() && g.meta[mi].end <= range.start {
                mi += 1;
            }
            let mut k = mi;
            while k < g.meta.len() && g.meta[k].start < range.end {
                let r = g.meta[k].start.max(range.start)..g.meta[k].end.min(range.end);
                set(&mut bb, r);
                k += 1;
            }
            let used = bb.iter().map(|b| b.count_ones() as u64).sum::<u64>();
            let free_blocks = (range.end - range.start) - used;
            // Padding past the end of the filesystem.
            for i in (range.end - range.start)..BPG {
                bb[(i / 8) as usize] |= 1 << (i % 8);
            }
            let mut ib = vec![0u8; BS as usize];
            let first = grp * g.ipg + 1;
            let used_inodes = if last_ino >= first { (last_ino - first + 1).min(g.ipg) } else { 0 };
            for i in 0..(BS * 8) {
                if i < used_inodes || i >= g.ipg {
                    ib[(i / 8) as usize] |= 1 << (i % 8);
                }
            }
            let free_inodes = g.ipg - used_inodes;
            free_blocks_total += free_blocks;
            free_inodes_total += free_inodes;
            region.write_at(&bb, g.block_bitmap[grp as usize] * BS)?;
            region.write_at(&ib, g.inode_bitmap[grp as usize] * BS)?;
            let bcs = crc32c(self.csum_seed, &bb);
            let ics = crc32c(self.csum_seed, &ib[..(g.ipg / 8) as usize]);
            let d = &mut gdt[(grp * DESC_SIZE) as usize..((grp + 1) * DESC_SIZE) as usize];
            let bbk = g.block_bitmap[grp as usize];
            let ibk = g.inode_bitmap[grp as usize];
            let itk = g.inode_table[grp as usize];
            put32(d, 0x0, bbk as u32);
            put32(d, 0x4, ibk as u32);
            put32(d, 0x8, itk as u32);
            put16(d, 0xC, free_blocks as u16);
            put16(d, 0xE, free_inodes as u16);
            put16(d, 0x10, dirs[grp as usize] as u16);
            put16(d, 0x12, 0x4); // ITABLE_ZEROED
            put16(d, 0x18, bcs as u16);
            put16(d, 0x1A, ics as u16);
            put16(d, 0x1C, free_inodes as u16); // itable_unused
            put32(d, 0x20, (bbk >> 32) as u32);
            put32(d, 0x24, (ibk >> 32) as u32);
            put32(d, 0x28, (itk >> 32) as u32);
            put16(d, 0x2C, (free_blocks >> 16) as u16);
            put16(d, 0x2E, (free_inodes >> 16) as u16);
            put16(d, 0x30, (dirs[grp as usize] >> 16) as u16);
            put16(d, 0x32, (free_inodes >> 16) as u16);
            put16(d, 0x38, (bcs >> 16) as u16);
            put16(d, 0x3A, (ics >> 16) as u16);
            let mut c = crc32c(self.csum_seed, &(grp as u32).to_le_bytes());
            c = crc32c(c, d);
            put16(d, 0x1E, c as u16);
        }
        // Superblocks and GDT copies.
        for grp in std::iter::once(0).chain(backups.iter().copied()) {
            let sb = self.superblock(grp, free_blocks_total, free_inodes_total);
            let base = grp * BPG * BS;
            if grp == 0 {
                let mut b0 = vec![0u8; BS as usize];
                b0[1024..2048].copy_from_slice(&sb);
                region.write_at(&b0, 0)?;
            } else {
                let mut b = vec![0u8; BS as usize];
                b[..1024].copy_from_slice(&sb);
                region.write_at(&b, base)?;
            }
            region.write_at(&gdt, base + BS)?;
        }
        Ok(FsReport {
            kind: "ext4".into(),
            used_bytes: (g.blocks - free_blocks_total) * BS,
            notes: std::iter::once(format!(
                "{} blocks of 4 KiB in {} groups, {} inodes ({} used), journal {} MiB, {} reserved GDT blocks",
                g.blocks,
                g.groups,
                g.inodes_count(),
                last_ino,
                self.journal.map_or(0, |j| (j.1 * BS) >> 20),
                g.rsv_gdt
            ))
            .chain(self.notes.iter().cloned())
            .collect(),
        })
    }

    fn superblock(&self, grp: u64, free_blocks: u64, free_inodes: u64) -> Vec<u8> {
        let g = &self.geo;
        let mut s = vec![0u8; 1024];
        let t = self.epoch.max(0);
        let r_blocks = g.blocks * self.opts.reserved_percent as u64 / 100;
        put32(&mut s, 0x0, g.inodes_count() as u32);
        put32(&mut s, 0x4, g.blocks as u32);
        put32(&mut s, 0x8, r_blocks as u32);
        put32(&mut s, 0xC, free_blocks as u32);
        put32(&mut s, 0x10, free_inodes as u32);
        put32(&mut s, 0x14, 0);
        put32(&mut s, 0x18, 2);
        put32(&mut s, 0x1C, 2);
        put32(&mut s, 0x20, BPG as u32);
        put32(&mut s, 0x24, BPG as u32);
        put32(&mut s, 0x28, g.ipg as u32);
        put32(&mut s, 0x30, t as u32); // wtime
        put16(&mut s, 0x36, 0xFFFF); // max mount count: -1
        put16(&mut s, 0x38, 0xEF53);
        put16(&mut s, 0x3A, 1); // clean
        put16(&mut s, 0x3C, 1); // errors: continue
        put32(&mut s, 0x40, t as u32); // lastcheck
        put32(&mut s, 0x4C, 1); // dynamic rev
        put32(&mut s, 0x54, FIRST_INO as u32);
        put16(&mut s, 0x58, INODE_SIZE as u16);
        put16(&mut s, 0x5A, grp as u16);
        let mut compat = 0x8 | (0x20 * self.opts.dir_index as u32); // ext_attr, dir_index
        if self.journal.is_some() {
            compat |= 0x4;
        }
        if g.rsv_gdt > 0 {
            compat |= 0x10;
        }
        let incompat = 0x2 | 0x40 | 0x80 | 0x200; // filetype extent 64bit flex_bg
        let ro = 0x1 | 0x2 | 0x40 | 0x400 | (0x8 * self.opts.huge_file as u32) | (0x20 * self.opts.dir_nlink as u32);
        put32(&mut s, 0x5C, compat);
        put32(&mut s, 0x60, incompat);
        put32(&mut s, 0x64, ro);
        s[0x68..0x78].copy_from_slice(&self.uuid);
        s[0x78..0x88].copy_from_slice(&self.label);
        put16(&mut s, 0xCE, g.rsv_gdt as u16);
        if let Some(j) = self.inodes.get((JOURNAL_INO - 1) as usize).filter(|j| matches!(j.what, What::Journal)) {
            put32(&mut s, 0xE0, JOURNAL_INO as u32);
            s[0x10C..0x10C + 60].copy_from_slice(&j.iblock);
            put32(&mut s, 0x10C + 60, (j.size >> 32) as u32);
            put32(&mut s, 0x10C + 64, j.size as u32);
            s[0xFD] = 1; // jnl_backup_type: inode blocks
        }
        for (i, w) in self.hash_seed.iter().enumerate() {
            put32(&mut s, 0xEC + i * 4, *w);
        }
        s[0xFC] = 1; // half_md4
        put16(&mut s, 0xFE, DESC_SIZE as u16);
        put32(&mut s, 0x100, 0x0C); // user_xattr acl
        put32(&mut s, 0x108, t as u32); // mkfs_time
        put32(&mut s, 0x150, (g.blocks >> 32) as u32);
        put32(&mut s, 0x154, (r_blocks >> 32) as u32);
        put32(&mut s, 0x158, (free_blocks >> 32) as u32);
        put16(&mut s, 0x15C, 32);
        put16(&mut s, 0x15E, 32);
        put32(&mut s, 0x160, 1); // signed directory hash
        s[0x174] = FLEX.trailing_zeros() as u8;
        s[0x175] = 1; // crc32c
        let hi = (t >> 32) as u8;
        s[0x274] = hi;
        s[0x276] = hi;
        s[0x277] = hi;
        let c = crc32c(!0, &s[..0x3FC]);
        put32(&mut s, 0x3FC, c);
        s
    }

    fn encode_inode(&self, ino: u64, p: &PInode, b: &mut [u8]) {
        if matches!(p.what, What::Unused) && ino >= FIRST_INO {
            return; // zeros
        }
        let (ep_lo, ep_extra) = time_fields(self.epoch, 0);
        let (m_lo, m_extra) = time_fields(p.mtime.0, p.mtime.1);
        put16(b, 0x0, p.mode);
        put16(b, 0x2, p.uid as u16);
        put32(b, 0x4, p.size as u32);
        if !matches!(p.what, What::Unused) {
            put32(b, 0x8, ep_lo);
            put32(b, 0xC, ep_lo);
            put32(b, 0x10, m_lo);
        }
        put16(b, 0x18, p.gid as u16);
        put16(b, 0x1A, p.links);
        let sectors = p.blocks * (BS / 512);
        put32(b, 0x1C, sectors as u32);
        put32(b, 0x20, p.flags);
        b[0x28..0x28 + 60].copy_from_slice(&p.iblock);
        put32(b, 0x68, p.file_acl as u32);
        put32(b, 0x6C, (p.size >> 32) as u32);
        put16(b, 0x74, (sectors >> 32) as u16);
        put16(b, 0x76, (p.file_acl >> 32) as u16);
        put16(b, 0x78, (p.uid >> 16) as u16);
        put16(b, 0x7A, (p.gid >> 16) as u16);
        put16(b, 0x80, 32); // extra_isize
        if !matches!(p.what, What::Unused) {
            put32(b, 0x84, ep_extra);
            put32(b, 0x88, m_extra);
            put32(b, 0x8C, ep_extra);
            put32(b, 0x90, ep_lo);
            put32(b, 0x94, ep_extra);
        }
        if !p.ibody.is_empty() {
            b[IBODY_START..IBODY_START + p.ibody.len()].copy_from_slice(&p.ibody);
        }
        let c = crc32c(self.ino_seed(ino), b);
        put16(b, 0x7C, c as u16);
        put16(b, 0x82, (c >> 16) as u16);
    }
}

/// (seconds field, extra field) of a timestamp.
fn time_fields(secs: i64, nsec: u32) -> (u32, u32) {
    let lo = secs as i32;
    let epoch_bits = (((secs - lo as i64) >> 32) & 3) as u32;
    (lo as u32, epoch_bits | (nsec << 2))
}

fn ftype(k: &Kind) -> u8 {
    match k {
        Kind::File(_) => 1,
        Kind::Dir(_) => 2,
        Kind::CharDev { .. } => 3,
        Kind::BlockDev { .. } => 4,
        Kind::Fifo => 5,
        Kind::Socket => 6,
        Kind::Symlink(_) => 7,
    }
}

fn run_len(runs: &[(u64, u64)]) -> u64 {
    runs.iter().map(|r| r.1).sum()
}

/// Logical block runs covering byte ranges (merged where they share blocks).
fn block_runs(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        if r.end <= r.start {
            continue;
        }
        let b0 = r.start / BS;
        let b1 = r.end.div_ceil(BS);
        match out.last_mut() {
            Some(l) if b0 <= l.end => l.end = l.end.max(b1),
            _ => out.push(b0..b1),
        }
    }
    out
}

/// Extents for physical runs mapped from logical block `lblk`.
fn to_exts(mut lblk: u64, runs: &[(u64, u64)]) -> Vec<Ext> {
    let mut v = Vec::new();
    for &(mut p, mut n) in runs {
        while n > 0 {
            let k = n.min(MAX_EXT_LEN);
            v.push(Ext { lblk: lblk as u32, len: k as u32, pblk: p });
            lblk += k;
            p += k;
            n -= k;
        }
    }
    v
}

fn tree_blocks_needed(n: usize) -> u64 {
    if n <= 4 {
        return 0;
    }
    let mut total = 0;
    let mut level = n;
    loop {
        let nodes = level.div_ceil(EXT_PER_BLOCK);
        total += nodes as u64;
        if nodes <= 4 {
            return total;
        }
        level = nodes;
    }
}

fn ext_header(b: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(b, 0, 0xF30A);
    put16(b, 2, entries as u16);
    put16(b, 4, max as u16);
    put16(b, 6, depth);
}

/// The `i_block` root and the tree nodes (block, bytes) for `exts`.
fn extent_tree(exts: &[Ext], tree: &[(u64, u64)], seed: u32) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let mut ib = [0u8; 60];
    let mut blocks = tree.iter().flat_map(|&(s, n)| s..s + n);
    let mut nodes = Vec::new();
    // Entries of the current level: (first logical block, 12-byte entry).
    let mut level: Vec<(u32, [u8; 12])> = exts
        .iter()
        .map(|e| {
            let mut x = [0u8; 12];
            put32(&mut x, 0, e.lblk);
            put16(&mut x, 4, e.len as u16);
            put16(&mut x, 6, (e.pblk >> 32) as u16);
            put32(&mut x, 8, e.pblk as u32);
            (e.lblk, x)
        })
        .collect();
    let mut depth = 0u16;
    while level.len() > 4 {
        let mut up = Vec::new();
        for chunk in level.chunks(EXT_PER_BLOCK) {
            let blk = blocks.next().expect("tree blocks counted by tree_blocks_needed");
            let mut b = vec![0u8; BS as usize];
            ext_header(&mut b, chunk.len(), EXT_PER_BLOCK, depth);
            for (k, (_, x)) in chunk.iter().enumerate() {
                b[12 + k * 12..24 + k * 12].copy_from_slice(x);
            }
            let tail = 12 + EXT_PER_BLOCK * 12;
            let c = crc32c(seed, &b[..tail]);
            put32(&mut b, tail, c);
            nodes.push((blk, b));
            let mut x = [0u8; 12];
            put32(&mut x, 0, chunk[0].0);
            put32(&mut x, 4, blk as u32);
            put16(&mut x, 8, (blk >> 32) as u16);
            up.push((chunk[0].0, x));
        }
        level = up;
        depth += 1;
    }
    ext_header(&mut ib, level.len(), 4, depth);
    for (k, (_, x)) in level.iter().enumerate() {
        ib[12 + k * 12..24 + k * 12].copy_from_slice(x);
    }
    (ib, nodes)
}

/// Allocate blocks for `blocks` (directory or symlink blocks), map them
/// with extents and queue them for writing.
fn place_blocks(pi: &mut PInode, blocks: Vec<Vec<u8>>, alloc: &mut Alloc<'_>, seed: u32) {
    let n = blocks.len() as u64;
    let runs = alloc.take(n);
    let exts = to_exts(0, &runs);
    let tb = alloc.take(tree_blocks_needed(exts.len()));
    let (ib, nodes) = extent_tree(&exts, &tb, seed);
    pi.iblock = ib;
    pi.flags |= EXTENTS_FL;
    if pi.mode & 0xf000 == 0x4000 {
        pi.size = n * BS;
    }
    pi.blocks += n + run_len(&tb);
    let phys = runs.iter().flat_map(|&(s, l)| s..s + l);
    pi.blobs.extend(phys.zip(blocks));
    pi.blobs.extend(nodes);
}

/// One directory leaf block being filled.
struct DirBlock {
    buf: Vec<u8>,
    len: usize,
    last: Option<usize>,
}

fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

impl DirBlock {
    fn new() -> DirBlock {
        DirBlock { buf: vec![0u8; BS as usize], len: 0, last: None }
    }
    fn is_empty(&self) -> bool {
        self.last.is_none()
    }
    fn fits(&self, name_len: usize) -> bool {
        self.len + rec_len(name_len) <= DIR_END
    }
    fn add(&mut self, ino: u32, name: &[u8], ft: u8) {
        let r = rec_len(name.len());
        let o = self.len;
        put32(&mut self.buf, o, ino);
        put16(&mut self.buf, o + 4, r as u16);
        self.buf[o + 6] = name.len() as u8;
        self.buf[o + 7] = ft;
        self.buf[o + 8..o + 8 + name.len()].copy_from_slice(name);
        self.last = Some(o);
        self.len += r;
    }
    /// Stretch the last entry to the tail and add the checksum tail.
    fn finish(mut self, seed: u32) -> Vec<u8> {
        let o = self.last.unwrap_or(0);
        put16(&mut self.buf, o + 4, (DIR_END - o) as u16);
        put16(&mut self.buf, DIR_END + 4, 12);
        self.buf[DIR_END + 7] = 0xDE;
        let c = crc32c(seed, &self.buf[..DIR_END]);
        put32(&mut self.buf, DIR_END + 8, c);
        self.buf
    }
}

/// A linear directory being packed.
struct Linear {
    blocks: Vec<DirBlock>,
    cur: DirBlock,
}

impl Linear {
    fn new() -> Linear {
        Linear { blocks: Vec::new(), cur: DirBlock::new() }
    }
    fn add(&mut self, ino: u32, name: &[u8], ft: u8) {
        if !self.cur.fits(name.len()) {
            self.blocks.push(std::mem::replace(&mut self.cur, DirBlock::new()));
        }
        self.cur.add(ino, name, ft);
    }
    fn finish(mut self, seed: u32) -> Vec<Vec<u8>> {
        self.blocks.push(self.cur);
        self.blocks.into_iter().map(|b| b.finish(seed)).collect()
    }
}

/// Fill a dx node's count/limit and entries at `at`, with its tail checksum.
fn dx_fill(b: &mut [u8], at: usize, limit: usize, ents: &[(u32, u32)], seed: u32) {
    put16(b, at, limit as u16);
    put16(b, at + 2, ents.len() as u16);
    put32(b, at + 4, ents[0].1);
    for (k, &(h, blk)) in ents.iter().enumerate().skip(1) {
        put32(b, at + k * 8, h);
        put32(b, at + k * 8 + 4, blk);
    }
    let mut c = crc32c(seed, &b[..at + ents.len() * 8]);
    c = crc32c(c, &[0u8; 8]);
    let tail = at + limit * 8;
    put32(b, tail + 4, c);
}

/// Split an xattr name into (index, suffix); ACL values are converted to
/// ext4's on-disk form.
fn xattr_key(name: &[u8]) -> Option<(u8, &[u8])> {
    const P: &[(&[u8], u8)] = &[
        (b"system.posix_acl_access", 2),
        (b"system.posix_acl_default", 3),
        (b"user.", 1),
        (b"trusted.", 4),
        (b"security.", 6),
        (b"system.", 7),
    ];
    for &(pre, idx) in P {
        if (idx == 2 || idx == 3) && name == pre {
            return Some((idx, b""));
        }
        if idx != 2 && idx != 3 && name.starts_with(pre) {
            return Some((idx, &name[pre.len()..]));
        }
    }
    None
}

/// VFS `posix_acl_xattr` (version 2, 8-byte entries) to ext4 ACL
/// (version 1, 4-byte entries for the *_OBJ, MASK and OTHER tags).
fn acl_to_disk(v: &[u8]) -> Option<Vec<u8>> {
    if v.len() < 4 || (v.len() - 4) % 8 != 0 || u32::from_le_bytes(v[0..4].try_into().ok()?) != 2 {
        return None;
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in v[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[0..4]);
        if tag == 0x02 || tag == 0x08 {
            out.extend_from_slice(&e[4..8]);
        }
    }
    Some(out)
}

fn xattr_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ c as u32;
    }
    for w in value.chunks(4) {
        let mut x = [0u8; 4];
        x[..w.len()].copy_from_slice(w);
        h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes(x);
    }
    h
}

type XEntry = (u8, Vec<u8>, Vec<u8>);

/// (in-inode xattr area, xattr block) or (attribute name, what is wrong).
type XattrLayout = Result<(Vec<u8>, Option<Vec<u8>>), (String, String)>;

/// Lay out xattrs: in the inode while they fit, the rest in one block.
/// Returns (in-inode area from offset 160, block without checksum).
fn xattrs(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> XattrLayout {
    if x.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut ents: Vec<XEntry> = Vec::new();
    for (name, value) in x {
        let shown = String::from_utf8_lossy(name).into_owned();
        let Some((idx, suffix)) = xattr_key(name) else {
            return Err((shown, "namespace not supported (user., trusted., security., system.)".into()));
        };
        if suffix.len() > 255 {
            return Err((shown, "name longer than 255 bytes".into()));
        }
        let value = if idx == 2 || idx == 3 {
            acl_to_disk(value).ok_or_else(|| (shown.clone(), "not a valid POSIX ACL".to_string()))?
        } else {
            value.clone()
        };
        ents.push((idx, suffix.to_vec(), value));
    }
    ents.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.len().cmp(&b.1.len())).then(a.1.cmp(&b.1)));
    let esize = |e: &XEntry| (16 + e.1.len() + 3) & !3;
    let vsize = |e: &XEntry| (e.2.len() + 3) & !3;
    let room = INODE_SIZE as usize - IBODY_START - 4;
    let mut inl = Vec::new();
    let mut blk = Vec::new();
    let mut used = 4; // terminator
    for e in ents {
        let need = esize(&e) + vsize(&e);
        if used + need <= room {
            used += need;
            inl.push(e);
        } else {
            blk.push(e);
        }
    }
    let write_entries = |area: &mut [u8], first: usize, ents: &[XEntry], value_base: usize| {
        let mut eo = first;
        let mut vend = area.len();
        for e in ents {
            let vs = vsize(e);
            let voff = if e.2.is_empty() {
                0
            } else {
                vend -= vs;
                area[vend..vend + e.2.len()].copy_from_slice(&e.2);
                vend - value_base
            };
            area[eo] = e.1.len() as u8;
            area[eo + 1] = e.0;
            put16(area, eo + 2, voff as u16);
            put32(area, eo + 8, e.2.len() as u32);
            put32(area, eo + 12, xattr_hash(&e.1, &e.2));
            area[eo + 16..eo + 16 + e.1.len()].copy_from_slice(&e.1);
            eo += esize(e);
        }
    };
    let mut ibody = Vec::new();
    if !inl.is_empty() {
        ibody = vec![0u8; INODE_SIZE as usize - IBODY_START];
        put32(&mut ibody, 0, 0xEA02_0000);
        write_entries(&mut ibody, 4, &inl, 4);
    }
    let mut block = None;
    if !blk.is_empty() {
        let total: usize = 32 + 4 + blk.iter().map(|e| esize(e) + vsize(e)).sum::<usize>();
        if total > BS as usize {
            let (_, n, _) = &blk[0];
            return Err((
                String::from_utf8_lossy(n).into_owned(),
                format!(
                    "the attributes need {total} bytes outside the inode; one 4096-byte block is the limit (ea_inode is not supported)"
                ),
            ));
        }
        let mut b = vec![0u8; BS as usize];
        put32(&mut b, 0, 0xEA02_0000);
        put32(&mut b, 4, 1);
        put32(&mut b, 8, 1);
        write_entries(&mut b, 32, &blk, 0);
        let mut h: u32 = 0;
        let mut eo = 32;
        for e in &blk {
            let eh = u32::from_le_bytes(b[eo + 12..eo + 16].try_into().expect("4 bytes"));
            h = (h << 16) ^ (h >> 16) ^ eh;
            eo += esize(e);
        }
        put32(&mut b, 0xC, h);
        block = Some(b);
    }
    Ok((ibody, block))
}

#[cfg(test)]
pub(super) fn hash_for_tests(name: &[u8], seed: &[u32; 4]) -> u32 {
    dx_hash(name, seed)
}
