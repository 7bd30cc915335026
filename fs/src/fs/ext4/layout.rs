//! Geometry: block groups, inode counts, where the fixed metadata lies, and
//! the forward-only block allocator that places everything else.

use std::ops::Range;

use super::{Ext4Options, BS};

/// Blocks per group with 4 KiB blocks (one bitmap block of bits).
pub const BPG: u64 = 32768;
/// Groups per flex group (`-G 16`, the mke2fs default).
pub const FLEX: u64 = 16;
pub const DESC_SIZE: u64 = 64;
pub const INODE_SIZE: u64 = 256;
pub const INODES_PER_BLOCK: u64 = BS / INODE_SIZE;

/// The fixed layout of one filesystem size.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub blocks: u64,
    pub groups: u64,
    pub ipg: u64,
    /// Inode table blocks per group.
    pub itb: u64,
    pub gdt_blocks: u64,
    pub rsv_gdt: u64,
    pub block_bitmap: Vec<u64>,
    pub inode_bitmap: Vec<u64>,
    pub inode_table: Vec<u64>,
    /// Every fixed metadata block, as sorted disjoint ranges.
    pub meta: Vec<Range<u64>>,
}

/// Whether group `g` holds a superblock backup (`sparse_super`).
pub fn has_super(g: u64) -> bool {
    fn pow_of(mut n: u64, b: u64) -> bool {
        while n % b == 0 {
            n /= b;
        }
        n == 1
    }
    g <= 1 || pow_of(g, 3) || pow_of(g, 5) || pow_of(g, 7)
}

/// Groups below `groups` other than 0 that hold backups, ascending.
pub fn backup_groups(groups: u64) -> Vec<u64> {
    (1..groups).filter(|&g| has_super(g)).collect()
}

/// Reserved GDT blocks, as mke2fs computes them: room to grow 1024-fold
/// (capped at 2^32 blocks) and at most one indirect block's worth.
fn reserved_gdt(blocks: u64, gdt_blocks: u64) -> u64 {
    let max_blocks: u64 = if blocks < 0xffff_ffff / 1024 { blocks * 1024 } else { 0xffff_ffff };
    let rsv_groups = max_blocks.div_ceil(BPG);
    let per_block = BS / DESC_SIZE;
    let rsv = rsv_groups.div_ceil(per_block).saturating_sub(gdt_blocks);
    rsv.min(BS / 4)
}

/// Why a geometry cannot be laid out in the given number of blocks.
#[derive(Debug)]
pub struct NoFit {
    /// A better guess of the blocks needed.
    pub need_blocks: u64,
}

impl Geometry {
    /// Lay out `blocks` blocks for a tree needing `need_inodes` inodes
    /// (including the reserved ones). Returns the geometry and whether the
    /// inode count had to be raised above what the ratio gives.
    pub fn new(mut blocks: u64, opts: &Ext4Options, need_inodes: u64) -> Result<(Geometry, bool), NoFit> {
        if blocks < 64 {
            return Err(NoFit { need_blocks: 64 });
        }
        loop {
            let groups = blocks.div_ceil(BPG);
            let gdt_blocks = (groups * DESC_SIZE).div_ceil(BS);
            let rsv_gdt = if opts.resize_inode && blocks <= u32::MAX as u64 { reserved_gdt(blocks, gdt_blocks) } else { 0 };
            let sb_area = 1 + gdt_blocks + rsv_gdt;
            // A last group too small for its own backup and some data is
            // dropped, as mke2fs does.
            let last_len = blocks - (groups - 1) * BPG;
            let last_over = if has_super(groups - 1) { sb_area } else { 0 };
            if groups > 1 && last_len < last_over + 50 {
                blocks = (groups - 1) * BPG;
                continue;
            }
            let mut raised = false;
            let total = match opts.inodes {
                Some(n) => n,
                None => {
                    // Too few for the tree: raise, with a quarter spare so
                    // the running system can still create files.
                    let by_ratio = blocks * BS / opts.inode_ratio;
                    if by_ratio < need_inodes {
                        raised = true;
                        need_inodes + need_inodes / 4
                    } else {
                        by_ratio
                    }
                }
            };
            let mut ipg = total.div_ceil(groups).max(INODES_PER_BLOCK);
            ipg = ipg.div_ceil(INODES_PER_BLOCK) * INODES_PER_BLOCK;
            if ipg > BPG {
                if opts.inodes.is_some() || need_inodes > BPG * groups {
                    // More groups are needed to hold that many inodes.
                    return Err(NoFit { need_blocks: total.div_ceil(BPG) * BPG + BPG });
                }
                ipg = BPG;
            }
            if ipg * groups > u32::MAX as u64 {
                ipg = (u32::MAX as u64 / groups) / INODES_PER_BLOCK * INODES_PER_BLOCK;
            }
            let itb = ipg * INODE_SIZE / BS;
            let mut g = Geometry {
                blocks,
                groups,
                ipg,
                itb,
                gdt_blocks,
                rsv_gdt,
                block_bitmap: vec![0; groups as usize],
                inode_bitmap: vec![0; groups as usize],
                inode_table: vec![0; groups as usize],
                meta: Vec::new(),
            };
            match g.place(sb_area) {
                Ok(()) => return Ok((g, raised)),
                // A small last group that starts a flex group cannot hold
                // its bitmaps and inode table: drop it, as mke2fs does.
                Err(_) if groups > 1 => {
                    blocks = (groups - 1) * BPG;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Place superblock/GDT copies, then per flex group the block bitmaps,
    /// inode bitmaps and inode tables packed in its first group (with the
    /// same spacing as mke2fs so that resize2fs finds room for new groups).
    fn place(&mut self, sb_area: u64) -> Result<(), NoFit> {
        let mut sb: Vec<Range<u64>> = Vec::new();
        for grp in 0..self.groups {
            if has_super(grp) {
                sb.push(grp * BPG..grp * BPG + sb_area);
            }
        }
        let mut meta = sb.clone();
        // First free position at or after `at` for `len` blocks not
        // overlapping a superblock area.
        let fit = |mut at: u64, len: u64| -> u64 {
            for r in &sb {
                if at < r.end && at + len > r.start {
                    at = r.end;
                }
            }
            at
        };
        let mut flex_start = 0;
        while flex_start < self.groups {
            let n = FLEX.min(self.groups - flex_start);
            let base = fit(flex_start * BPG, 1);
            let mut at = base;
            for i in 0..n {
                at = fit(at, 1);
                self.block_bitmap[(flex_start + i) as usize] = at;
                meta.push(at..at + 1);
                at += 1;
            }
            at = at.max(base + FLEX);
            for i in 0..n {
                at = fit(at, 1);
                self.inode_bitmap[(flex_start + i) as usize] = at;
                meta.push(at..at + 1);
                at += 1;
            }
            at = at.max(base + 2 * FLEX);
            for i in 0..n {
                at = fit(at, self.itb);
                self.inode_table[(flex_start + i) as usize] = at;
                meta.push(at..at + self.itb);
                at += self.itb;
            }
            if at > self.blocks {
                return Err(NoFit { need_blocks: at + 1024 });
            }
            flex_start += n;
        }
        meta.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(meta.len());
        for r in meta {
            match merged.last_mut() {
                Some(l) if l.end >= r.start => l.end = l.end.max(r.end),
                _ => merged.push(r),
            }
        }
        self.meta = merged;
        Ok(())
    }

    /// Blocks not taken by fixed metadata.
    pub fn free_blocks(&self) -> u64 {
        let meta: u64 = self.meta.iter().filter(|r| r.start < self.blocks).map(|r| r.end.min(self.blocks) - r.start).sum();
        self.blocks - meta
    }

    pub fn inodes_count(&self) -> u64 {
        self.ipg * self.groups
    }

    /// Blocks `[start, end)` of group `g`.
    pub fn group_range(&self, g: u64) -> Range<u64> {
        g * BPG..((g + 1) * BPG).min(self.blocks)
    }
}

/// Hands out blocks in increasing order, skipping fixed metadata. Blocks
/// past the end of the filesystem are handed out too (so the caller learns
/// how much was missing) and flagged by [`Alloc::overflow`].
pub struct Alloc<'g> {
    meta: &'g [Range<u64>],
    idx: usize,
    pub cursor: u64,
    pub handed_out: u64,
}

impl<'g> Alloc<'g> {
    pub fn new(g: &'g Geometry) -> Alloc<'g> {
        let mut a = Alloc { meta: &g.meta, idx: 0, cursor: 0, handed_out: 0 };
        a.skip();
        a
    }

    fn skip(&mut self) {
        while let Some(r) = self.meta.get(self.idx) {
            if self.cursor >= r.end {
                self.idx += 1;
            } else if self.cursor >= r.start {
                self.cursor = r.end;
                self.idx += 1;
            } else {
                break;
            }
        }
    }

    /// `n` blocks as physical runs `(start, len)`.
    pub fn take(&mut self, mut n: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        while n > 0 {
            self.skip();
            let room = match self.meta.get(self.idx) {
                Some(r) => r.start - self.cursor,
                None => u64::MAX,
            };
            let k = room.min(n);
            match out.last_mut() {
                Some((s, l)) if *s + *l == self.cursor => *l += k,
                _ => out.push((self.cursor, k)),
            }
            self.cursor += k;
            self.handed_out += k;
            n -= k;
        }
        self.skip();
        out
    }

    /// One block.
    pub fn one(&mut self) -> u64 {
        self.take(1)[0].0
    }
}
