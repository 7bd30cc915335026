//! ext4, written directly from a [`Tree`] into a [`Region`]: a pure-Rust
//! `mke2fs -d`, with no root, loop device or host tool.
//!
//! # Why our own writer
//! The crates we measured do not fit (see `docs/` and the research notes):
//! `mkext4` lacks `64bit` and `resize_inode` (an image could not be grown
//! with `resize2fs`) and is unmaintained; `ferrosys` makes sparse files
//! dense and sets `orphan_file`/`metadata_csum_seed`, which older GRUB and
//! e2fsprogs refuse; `ext4_rs` cannot create a filesystem at all. The format
//! is documented (kernel `Documentation/filesystems/ext4/`), and writing a
//! fresh, fully known filesystem in one pass is much simpler than editing one.
//!
//! # What we write
//! The e2fsprogs 1.47 Debian defaults: 4 KiB blocks, 256-byte inodes,
//! `has_journal ext_attr resize_inode dir_index filetype extent 64bit
//! flex_bg sparse_super large_file huge_file dir_nlink extra_isize
//! metadata_csum`, inode ratio 16384, 5 % reserved, `half_md4` directory
//! hash with a seed derived from [`FsParams::seed`], UUID from the plan, and
//! every invented timestamp equal to [`FsParams::epoch`].
//!
//! # Layout choices
//! * Groups of 32768 blocks; superblock and GDT backups in groups 0, 1 and
//!   powers of 3, 5, 7, each followed by the reserved GDT blocks that the
//!   resize inode (7) maps, so `resize2fs` can grow the image up to 1024×.
//! * Per flex group of 16, block bitmaps, inode bitmaps and inode tables are
//!   packed at the start of its first group, spaced as mke2fs spaces them.
//! * Inodes are numbered in tree-walk order (root 2, `lost+found` 11, then
//!   the tree from 12), so the used inodes are one run from 1.
//! * Blocks are handed out by one forward cursor in the same order:
//!   the resize inode's block, the journal, then each inode's data,
//!   xattr block and extent-tree blocks. Every block below the cursor is in
//!   use, everything above it that is not fixed metadata is free: the
//!   bitmaps follow without a global map.
//! * dd-safety: every metadata block is written explicitly — superblocks,
//!   all GDT copies, reserved GDT blocks, bitmaps, *all* inode tables in
//!   full, directory, extent and xattr blocks, the whole journal (zeros). No
//!   group is flagged `BLOCK_UNINIT`/`INODE_UNINIT`. The only holes left are
//!   free data blocks and the holes of sparse files, which have no extents.
//! * Directories over one block get an htree index (`dir_index`).
//! * Data is copied with `copy_file_range` on a second thread while the
//!   metadata is written on the first.

mod csum;
mod image;
mod layout;

use crate::disk::Region;
use crate::disk::RegionError;
use crate::fs::FsOptions;
use crate::fs::{FsParams, FsReport};
use crate::tree::Tree;

/// Block size: always 4 KiB.
pub const BS: u64 = 4096;

/// Errors of the ext4 writer.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("ext4 feature `{name}` is unknown (known: has_journal, ext_attr, resize_inode, dir_index, filetype, extent, 64bit, flex_bg, sparse_super, large_file, huge_file, dir_nlink, extra_isize, metadata_csum)")]
    UnknownFeature { name: String },
    #[error("ext4 feature change `{change}` is not supported by this writer: {why}")]
    UnsupportedFeature { change: String, why: &'static str },
    #[error("ext4 option `{field}`: {why}")]
    BadOption { field: &'static str, why: String },
    #[error("the ext4 filesystem needs at least {needed} bytes ({} MiB) but the partition has {size} bytes; make the partition larger or use \"size\": \"auto\"", needed.div_ceil(1 << 20))]
    TooSmall { size: u64, needed: u64 },
    #[error("the tree needs {needed} inodes but the ext4 filesystem has {available}; raise `inodes` or lower `inode_ratio`")]
    TooFewInodes { needed: u64, available: u64 },
    #[error("{path}: name is {len} bytes long; ext4 allows at most 255")]
    NameTooLong { path: String, len: usize },
    #[error("{path}: symlink target is {len} bytes long; at most 4095 are allowed")]
    SymlinkTooLong { path: String, len: usize },
    #[error("{path}: {links} hard links; ext4 allows at most 65000")]
    TooManyLinks { path: String, links: u32 },
    #[error("{path}: file of {size} bytes is larger than ext4 allows with 4 KiB blocks (16 TiB)")]
    FileTooLarge { path: String, size: u64 },
    #[error("{path}: extended attribute `{name}`: {why}")]
    Xattr { path: String, name: String, why: String },
    #[error("/lost+found is a {kind} in the tree; ext4 needs it to be a directory (e2fsck would flag it): remove or rename it")]
    LostFound { kind: &'static str },
    #[error("{path}: copying the content from {origin} into the image")]
    Content {
        path: String,
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the ext4 filesystem")]
    Region(#[from] RegionError),
}

/// ext4 options, resolved from the caller's [`FsOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// Bytes per inode (default 16384). The count is raised when the tree
    /// needs more inodes than the ratio gives (to the need plus a quarter;
    /// unless `inodes` is set).
    pub inode_ratio: u64,
    /// Exact inode count, overriding the ratio.
    pub inodes: Option<u64>,
    /// Percent of blocks reserved for root (default 5).
    pub reserved_percent: u32,
    /// Write an empty journal (`has_journal`).
    pub journal: bool,
    /// `resize_inode`: reserve GDT blocks for online/offline growth.
    pub resize_inode: bool,
    /// `dir_index`: htree indexes for directories over one block.
    pub dir_index: bool,
    /// `huge_file`.
    pub huge_file: bool,
    /// `dir_nlink`: directories with more than 65000 subdirectories.
    pub dir_nlink: bool,
}

impl Default for Ext4Options {
    fn default() -> Self {
        Ext4Options {
            inode_ratio: 16384,
            inodes: None,
            reserved_percent: 5,
            journal: true,
            resize_inode: true,
            dir_index: true,
            huge_file: true,
            dir_nlink: true,
        }
    }
}

/// Features always on; they may be named with `+` (no change).
const FIXED: &[&str] =
    &["ext_attr", "filetype", "extent", "extents", "64bit", "flex_bg", "sparse_super", "large_file", "extra_isize", "metadata_csum"];
/// Features e2fsprogs knows that this writer does not write.
const NOT_WRITTEN: &[&str] = &[
    "metadata_csum_seed",
    "orphan_file",
    "orphan_present",
    "quota",
    "project",
    "encrypt",
    "casefold",
    "fname_encoding",
    "inline_data",
    "bigalloc",
    "meta_bg",
    "mmp",
    "ea_inode",
    "large_dir",
    "sparse_super2",
    "stable_inodes",
    "verity",
    "fast_commit",
    "journal_dev",
    "uninit_bg",
    "uninit_groups",
    "gdt_csum",
    "lazy_bg",
    "compression",
    "snapshot_bitmap",
    "exclude_bitmap",
    "dirdata",
    "imagic_inodes",
    "needs_recovery",
    "shared_blocks",
    "read-only",
    "replica",
];

impl Ext4Options {
    /// Resolve the caller's options. Feature changes are `+name` / `-name`
    /// (also `^name`, as mke2fs spells it); a bare name means `+name`.
    pub fn from_fs_options(o: &FsOptions) -> Result<Ext4Options, Ext4Error> {
        let mut r = Ext4Options::default();
        if let Some(ratio) = o.inode_ratio {
            if !(1024..=67_108_864).contains(&ratio) {
                return Err(Ext4Error::BadOption {
                    field: "inode_ratio",
                    why: format!("{ratio} is outside 1024..=67108864 bytes per inode"),
                });
            }
            r.inode_ratio = ratio;
        }
        if let Some(n) = o.inodes {
            if n == 0 || n > u32::MAX as u64 {
                return Err(Ext4Error::BadOption { field: "inodes", why: format!("{n} is outside 1..=4294967295") });
            }
            r.inodes = Some(n);
        }
        if let Some(p) = o.reserved_percent {
            if p > 50 {
                return Err(Ext4Error::BadOption { field: "reserved_percent", why: format!("{p} is above 50") });
            }
            r.reserved_percent = p;
        }
        if let Some(j) = o.journal {
            r.journal = j;
        }
        for change in &o.features {
            let (on, name) = match change.as_bytes().first() {
                Some(b'+') => (true, &change[1..]),
                Some(b'-') | Some(b'^') => (false, &change[1..]),
                _ => (true, change.as_str()),
            };
            let flag = match name {
                "has_journal" => &mut r.journal,
                "resize_inode" => &mut r.resize_inode,
                "dir_index" => &mut r.dir_index,
                "huge_file" => &mut r.huge_file,
                "dir_nlink" => &mut r.dir_nlink,
                n if FIXED.contains(&n) => {
                    if on {
                        continue;
                    }
                    return Err(Ext4Error::UnsupportedFeature {
                        change: change.clone(),
                        why: "the writer always uses this feature (part of the Debian defaults it writes)",
                    });
                }
                n if NOT_WRITTEN.contains(&n) => {
                    if !on {
                        continue;
                    }
                    return Err(Ext4Error::UnsupportedFeature {
                        change: change.clone(),
                        why: "the writer does not implement this feature",
                    });
                }
                _ => return Err(Ext4Error::UnknownFeature { name: name.to_string() }),
            };
            *flag = on;
        }
        Ok(r)
    }
}

/// Write `tree` as an ext4 filesystem filling `region` (whole 4 KiB blocks;
/// a tail under one block is left alone).
pub fn write(tree: &Tree, region: Region<'_>, params: &FsParams, opts: &Ext4Options) -> Result<FsReport, Ext4Error> {
    let blocks = region.len() / BS;
    let plan = image::Plan::new(tree, blocks, params, opts)?;
    plan.write(tree, region)
}

/// The smallest region (bytes, a multiple of 4 KiB) that holds `tree`.
pub fn min_size(tree: &Tree, params: &FsParams, opts: &Ext4Options) -> u64 {
    image::min_blocks(tree, params, opts) * BS
}

#[cfg(test)]
mod tests;
