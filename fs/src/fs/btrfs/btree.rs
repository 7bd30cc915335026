//! Packing sorted items into leaves and building the internal levels
//! bottom-up: a whole B-tree written once, never balanced.

use std::ops::Range;

use super::crc::crc32c;
use super::disk::{
    Item, Key, GENERATION, HEADER_FLAG_WRITTEN, HEADER_SIZE, ITEM_SIZE, KEY_PTR_SIZE, LEAF_DATA, MAX_PTRS, MIXED_BACKREF_REV, NODESIZE,
};

/// Largest item body that fits in a leaf on its own.
pub const MAX_ITEM_DATA: usize = LEAF_DATA - ITEM_SIZE;

/// Split items (by body size) into leaves, filling each leaf. An empty tree
/// still has one (empty) leaf. Every size must be at most [`MAX_ITEM_DATA`].
pub fn pack(sizes: impl Iterator<Item = usize>) -> Vec<Range<usize>> {
    let mut leaves = Vec::new();
    let mut start = 0;
    let mut used = 0;
    let mut n = 0;
    for s in sizes {
        let need = ITEM_SIZE + s;
        if used + need > LEAF_DATA && n > start {
            leaves.push(start..n);
            start = n;
            used = 0;
        }
        used += need;
        n += 1;
    }
    if n > start || leaves.is_empty() {
        leaves.push(start..n);
    }
    leaves
}

/// Number of blocks on each level (index 0 = leaves) for `leaves` leaves.
pub fn level_counts(leaves: usize) -> Vec<usize> {
    let mut v = vec![leaves];
    let mut n = leaves;
    while n > 1 {
        n = n.div_ceil(MAX_PTRS);
        v.push(n);
    }
    v
}

/// Total tree blocks for items of these body sizes.
pub fn block_count(sizes: impl Iterator<Item = usize>) -> usize {
    level_counts(pack(sizes).len()).iter().sum()
}

/// Identity stamped into every block header.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub fsid: [u8; 16],
    pub chunk_tree_uuid: [u8; 16],
}

/// A tree laid out as blocks.
#[derive(Debug)]
pub struct Built {
    /// (logical address, level, block bytes), leaves first then upwards;
    /// the root is last.
    pub blocks: Vec<(u64, u8, Vec<u8>)>,
    pub root: u64,
    pub level: u8,
}

fn header(b: &mut [u8], stamp: &Stamp, bytenr: u64, owner: u64, nritems: u32, level: u8) {
    b[0x20..0x30].copy_from_slice(&stamp.fsid);
    b[0x30..0x38].copy_from_slice(&bytenr.to_le_bytes());
    b[0x38..0x40].copy_from_slice(&(HEADER_FLAG_WRITTEN | MIXED_BACKREF_REV).to_le_bytes());
    b[0x40..0x50].copy_from_slice(&stamp.chunk_tree_uuid);
    b[0x50..0x58].copy_from_slice(&GENERATION.to_le_bytes());
    b[0x58..0x60].copy_from_slice(&owner.to_le_bytes());
    b[0x60..0x64].copy_from_slice(&nritems.to_le_bytes());
    b[0x64] = level;
}

/// Checksum a tree block in place (crc32c of bytes 0x20.. into 0..4).
pub fn seal(b: &mut [u8]) {
    let c = crc32c(&b[0x20..]);
    b[0..4].copy_from_slice(&c.to_le_bytes());
}

fn put_key(dst: &mut [u8], k: &Key) {
    dst[0..8].copy_from_slice(&k.objectid.to_le_bytes());
    dst[8] = k.ty;
    dst[9..17].copy_from_slice(&k.offset.to_le_bytes());
}

/// Lay out sorted `items` as a tree owned by `owner` at `addrs` (exactly
/// [`block_count`] addresses: leaves first, then each level upwards).
pub fn build(items: &[Item], owner: u64, addrs: &[u64], stamp: &Stamp) -> Built {
    debug_assert!(items.windows(2).all(|w| w[0].key < w[1].key), "items of tree {owner} not sorted/unique");
    let leaves = pack(items.iter().map(|i| i.data.len()));
    let counts = level_counts(leaves.len());
    assert_eq!(counts.iter().sum::<usize>(), addrs.len(), "address count for tree {owner}");
    let mut blocks = Vec::with_capacity(addrs.len());
    let mut next = 0;
    // (first key, address) of each block of the level below.
    let mut below: Vec<(Key, u64)> = Vec::with_capacity(leaves.len());
    for r in &leaves {
        let addr = addrs[next];
        next += 1;
        let mut b = vec![0u8; NODESIZE as usize];
        header(&mut b, stamp, addr, owner, r.len() as u32, 0);
        let mut data_end = LEAF_DATA; // offsets are relative to the end of the header
        for (i, it) in items[r.clone()].iter().enumerate() {
            data_end -= it.data.len();
            let p = HEADER_SIZE + i * ITEM_SIZE;
            put_key(&mut b[p..p + 17], &it.key);
            b[p + 17..p + 21].copy_from_slice(&(data_end as u32).to_le_bytes());
            b[p + 21..p + 25].copy_from_slice(&(it.data.len() as u32).to_le_bytes());
            b[HEADER_SIZE + data_end..HEADER_SIZE + data_end + it.data.len()].copy_from_slice(&it.data);
        }
        seal(&mut b);
        let first = items.get(r.start).map(|i| i.key).unwrap_or(Key::new(0, 0, 0));
        below.push((first, addr));
        blocks.push((addr, 0u8, b));
    }
    let mut level = 0u8;
    while below.len() > 1 {
        level += 1;
        let mut up = Vec::with_capacity(below.len().div_ceil(MAX_PTRS));
        for group in below.chunks(MAX_PTRS) {
            let addr = addrs[next];
            next += 1;
            let mut b = vec![0u8; NODESIZE as usize];
            header(&mut b, stamp, addr, owner, group.len() as u32, level);
            for (i, (k, child)) in group.iter().enumerate() {
                let p = HEADER_SIZE + i * KEY_PTR_SIZE;
                put_key(&mut b[p..p + 17], k);
                b[p + 17..p + 25].copy_from_slice(&child.to_le_bytes());
                b[p + 25..p + 33].copy_from_slice(&GENERATION.to_le_bytes());
            }
            seal(&mut b);
            up.push((group[0].0, addr));
            blocks.push((addr, level, b));
        }
        below = up;
    }
    Built { root: below[0].1, level, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_fills_leaves_and_counts_levels() {
        assert_eq!(pack(std::iter::empty()).len(), 1);
        // 160-byte items: (160 + 25) = 185; 16283 / 185 = 88 per leaf.
        let l = pack(std::iter::repeat_n(160, 200));
        assert_eq!(l.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![88, 88, 24]);
        assert_eq!(level_counts(1), vec![1]);
        assert_eq!(level_counts(494), vec![494, 2, 1]);
        assert_eq!(block_count(std::iter::repeat_n(160, 200)), 4);
    }

    #[test]
    fn built_blocks_are_checksummed() {
        let items: Vec<Item> = (0..300u64).map(|i| Item::new(Key::new(i, 1, 0), vec![7u8; 100])).collect();
        let n = block_count(items.iter().map(|i| i.data.len()));
        let addrs: Vec<u64> = (0..n as u64).map(|i| (1 << 20) + i * 16384).collect();
        let stamp = Stamp { fsid: [1; 16], chunk_tree_uuid: [2; 16] };
        let t = build(&items, 5, &addrs, &stamp);
        assert_eq!(t.level, 1);
        assert_eq!(t.root, *addrs.last().unwrap());
        for (_, _, b) in &t.blocks {
            assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), crc32c(&b[0x20..]));
        }
    }
}
