//! On-disk constants and little-endian encoders of btrfs structures.
//!
//! Written from the kernel's `include/uapi/linux/btrfs_tree.h` and the
//! btrfs documentation (`On-disk-format`); field order and sizes are noted
//! beside each encoder.

pub const NODESIZE: u32 = 16384;
pub const SECTORSIZE: u32 = 4096;
pub const STRIPE_LEN: u64 = 65536;
/// The only generation this writer produces: every tree block, item and
/// the superblock carry it, so two builds are bit-identical.
pub const GENERATION: u64 = 1;

pub const HEADER_SIZE: usize = 101;
pub const ITEM_SIZE: usize = 25;
pub const KEY_PTR_SIZE: usize = 33;
/// Bytes for items (headers + data) in a leaf.
pub const LEAF_DATA: usize = NODESIZE as usize - HEADER_SIZE;
/// Key pointers in an internal node.
pub const MAX_PTRS: usize = LEAF_DATA / KEY_PTR_SIZE;

// Tree object ids.
pub const ROOT_TREE: u64 = 1;
pub const EXTENT_TREE: u64 = 2;
pub const CHUNK_TREE: u64 = 3;
pub const DEV_TREE: u64 = 4;
pub const FS_TREE: u64 = 5;
pub const ROOT_TREE_DIR: u64 = 6;
pub const CSUM_TREE: u64 = 7;
pub const UUID_TREE: u64 = 9;
pub const FREE_SPACE_TREE: u64 = 10;
pub const DATA_RELOC_TREE: u64 = -9i64 as u64;
pub const EXTENT_CSUM_OBJECTID: u64 = -10i64 as u64;
pub const FIRST_FREE_OBJECTID: u64 = 256;
pub const FIRST_CHUNK_TREE_OBJECTID: u64 = 256;
pub const DEV_ITEMS_OBJECTID: u64 = 1;

// Item types.
pub const INODE_ITEM: u8 = 1;
pub const INODE_REF: u8 = 12;
pub const INODE_EXTREF: u8 = 13;
pub const XATTR_ITEM: u8 = 24;
pub const DIR_ITEM: u8 = 84;
pub const DIR_INDEX: u8 = 96;
pub const EXTENT_DATA: u8 = 108;
pub const EXTENT_CSUM: u8 = 128;
pub const ROOT_ITEM: u8 = 132;
pub const ROOT_BACKREF: u8 = 144;
pub const ROOT_REF: u8 = 156;
pub const EXTENT_ITEM: u8 = 168;
pub const METADATA_ITEM: u8 = 169;
pub const TREE_BLOCK_REF: u8 = 176;
pub const EXTENT_DATA_REF: u8 = 178;
pub const BLOCK_GROUP_ITEM: u8 = 192;
pub const FREE_SPACE_INFO: u8 = 198;
pub const FREE_SPACE_EXTENT: u8 = 199;
pub const DEV_EXTENT: u8 = 204;
pub const DEV_ITEM: u8 = 216;
pub const CHUNK_ITEM: u8 = 228;
pub const UUID_KEY_SUBVOL: u8 = 251;

// Block group / chunk type flags.
pub const BG_DATA: u64 = 1;
pub const BG_SYSTEM: u64 = 2;
pub const BG_METADATA: u64 = 4;
pub const BG_DUP: u64 = 1 << 5;

// Directory entry file types.
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;
pub const FT_XATTR: u8 = 8;

// Extent item flags.
pub const EXTENT_FLAG_DATA: u64 = 1;
pub const EXTENT_FLAG_TREE_BLOCK: u64 = 2;

// File extent types and compression.
pub const FILE_EXTENT_INLINE: u8 = 0;
pub const FILE_EXTENT_REG: u8 = 1;
pub const COMPRESS_ZLIB: u8 = 1;
pub const COMPRESS_ZSTD: u8 = 3;

// Superblock feature flags.
pub const INCOMPAT_MIXED_BACKREF: u64 = 1 << 0;
pub const INCOMPAT_DEFAULT_SUBVOL: u64 = 1 << 1;
pub const INCOMPAT_COMPRESS_ZSTD: u64 = 1 << 4;
pub const INCOMPAT_EXTENDED_IREF: u64 = 1 << 6;
pub const INCOMPAT_SKINNY_METADATA: u64 = 1 << 8;
pub const INCOMPAT_NO_HOLES: u64 = 1 << 9;
pub const COMPAT_RO_FREE_SPACE_TREE: u64 = 1 << 0;
pub const COMPAT_RO_FREE_SPACE_TREE_VALID: u64 = 1 << 1;

pub const HEADER_FLAG_WRITTEN: u64 = 1;
/// `backref_rev` 1 (mixed backrefs) in the top byte of the header flags.
pub const MIXED_BACKREF_REV: u64 = 1 << 56;

pub const SUPER_INFO_OFFSET: u64 = 65536;
pub const SUPER_INFO_SIZE: usize = 4096;
pub const MAGIC: &[u8; 8] = b"_BHRfS_M";

/// A btrfs key; the derived order (objectid, type, offset) is the on-disk
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub objectid: u64,
    pub ty: u8,
    pub offset: u64,
}

impl Key {
    pub const fn new(objectid: u64, ty: u8, offset: u64) -> Key {
        Key { objectid, ty, offset }
    }

    pub fn put(&self, b: &mut Buf) {
        b.u64(self.objectid);
        b.u8(self.ty);
        b.u64(self.offset);
    }
}

/// One item: its key and its encoded body.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: Key,
    pub data: Vec<u8>,
}

impl Item {
    pub fn new(key: Key, data: Vec<u8>) -> Item {
        Item { key, data }
    }
}

/// A little-endian byte builder.
#[derive(Debug, Default)]
pub struct Buf(pub Vec<u8>);

impl Buf {
    pub fn with_capacity(n: usize) -> Buf {
        Buf(Vec::with_capacity(n))
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn time(&mut self, sec: i64, nsec: u32) -> &mut Self {
        self.u64(sec as u64).u32(nsec)
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// `btrfs_inode_item` (160 bytes).
#[derive(Debug, Clone, Default)]
pub struct InodeItem {
    pub size: u64,
    pub nbytes: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub rdev: u64,
    pub sec: i64,
    pub nsec: u32,
}

impl InodeItem {
    pub fn put(&self, b: &mut Buf) {
        b.u64(GENERATION) // generation
            .u64(GENERATION) // transid
            .u64(self.size)
            .u64(self.nbytes)
            .u64(0) // block_group
            .u32(self.nlink)
            .u32(self.uid)
            .u32(self.gid)
            .u32(self.mode)
            .u64(self.rdev)
            .u64(0) // flags
            .u64(0) // sequence
            .zeros(32); // reserved
        for _ in 0..4 {
            b.time(self.sec, self.nsec); // atime, ctime, mtime, otime
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Buf::with_capacity(160);
        self.put(&mut b);
        b.into_vec()
    }
}

/// `btrfs_dir_item` (30 bytes) followed by the name and data.
pub fn dir_item(b: &mut Buf, location: Key, ftype: u8, name: &[u8], data: &[u8]) {
    location.put(b);
    b.u64(GENERATION).u16(data.len() as u16).u16(name.len() as u16).u8(ftype).bytes(name).bytes(data);
}

/// `btrfs_inode_ref` entry: index, name_len, name.
pub fn inode_ref(b: &mut Buf, index: u64, name: &[u8]) {
    b.u64(index).u16(name.len() as u16).bytes(name);
}

/// `btrfs_root_item` (439 bytes).
pub struct RootItem {
    pub bytenr: u64,
    pub level: u8,
    pub bytes_used: u64,
    pub root_dirid: u64,
    pub uuid: [u8; 16],
    pub time: i64,
    /// Generation the subvolume was created in (0 for the top level and
    /// internal trees, as mkfs.btrfs writes them).
    pub otransid: u64,
}

impl RootItem {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Buf::with_capacity(439);
        // The embedded inode, as the kernel fills it for a new tree.
        InodeItem { size: 3, nbytes: NODESIZE as u64, nlink: 1, mode: 0o40755, ..Default::default() }.put(&mut b);
        b.u64(GENERATION)
            .u64(self.root_dirid)
            .u64(self.bytenr)
            .u64(0) // byte_limit
            .u64(self.bytes_used)
            .u64(0) // last_snapshot
            .u64(0) // flags
            .u32(1) // refs
            .zeros(17) // drop_progress
            .u8(0) // drop_level
            .u8(self.level)
            .u64(GENERATION) // generation_v2
            .bytes(&self.uuid)
            .zeros(32) // parent_uuid, received_uuid
            .u64(if self.root_dirid != 0 { GENERATION } else { 0 }) // ctransid
            .u64(self.otransid)
            .u64(0) // stransid
            .u64(0); // rtransid
        let t = if self.root_dirid != 0 { self.time } else { 0 };
        b.time(t, 0).time(t, 0).time(0, 0).time(0, 0).zeros(64);
        debug_assert_eq!(b.0.len(), 439);
        b.into_vec()
    }
}

/// `btrfs_dev_item` (98 bytes).
pub struct DevItem {
    pub total_bytes: u64,
    pub bytes_used: u64,
    pub uuid: [u8; 16],
    pub fsid: [u8; 16],
}

impl DevItem {
    pub fn put(&self, b: &mut Buf) {
        b.u64(1) // devid
            .u64(self.total_bytes)
            .u64(self.bytes_used)
            .u32(SECTORSIZE) // io_align
            .u32(SECTORSIZE) // io_width
            .u32(SECTORSIZE) // sector_size
            .u64(0) // type
            .u64(0) // generation
            .u64(0) // start_offset
            .u32(0) // dev_group
            .u8(0) // seek_speed
            .u8(0) // bandwidth
            .bytes(&self.uuid)
            .bytes(&self.fsid);
    }
}

/// A chunk: one logical range mapped to one or two (DUP) device ranges.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub logical: u64,
    pub length: u64,
    pub flags: u64,
    /// Physical offsets of the stripes (1 for SINGLE, 2 for DUP).
    pub stripes: Vec<u64>,
}

impl Chunk {
    /// `btrfs_chunk` (48 bytes) plus 32 bytes per stripe.
    pub fn encode(&self, dev_uuid: &[u8; 16]) -> Vec<u8> {
        let mut b = Buf::with_capacity(48 + 32 * self.stripes.len());
        b.u64(self.length)
            .u64(EXTENT_TREE) // owner
            .u64(STRIPE_LEN)
            .u64(self.flags)
            .u32(STRIPE_LEN as u32) // io_align
            .u32(STRIPE_LEN as u32) // io_width
            .u32(SECTORSIZE)
            .u16(self.stripes.len() as u16)
            .u16(1); // sub_stripes
        for &s in &self.stripes {
            b.u64(1).u64(s).bytes(dev_uuid);
        }
        b.into_vec()
    }

    pub fn contains(&self, logical: u64) -> bool {
        logical >= self.logical && logical < self.logical + self.length
    }
}

pub fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

pub fn align_down(v: u64, a: u64) -> u64 {
    v / a * a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes() {
        assert_eq!(InodeItem::default().encode().len(), 160);
        let r = RootItem { bytenr: 0, level: 0, bytes_used: 0, root_dirid: 256, uuid: [0; 16], time: 0, otransid: 0 };
        assert_eq!(r.encode().len(), 439);
        let mut b = Buf::default();
        DevItem { total_bytes: 0, bytes_used: 0, uuid: [0; 16], fsid: [0; 16] }.put(&mut b);
        assert_eq!(b.0.len(), 98);
        let c = Chunk { logical: 0, length: 0, flags: 0, stripes: vec![0, 1] };
        assert_eq!(c.encode(&[0; 16]).len(), 112);
        assert_eq!(MAX_PTRS, 493);
    }
}
