//! Filesystem writers. Each one has the same shape: it gets a
//! [`Tree`](crate::tree::Tree), a [`Region`](crate::disk::Region) (its
//! partition, bounds-checked) and [`FsParams`] (identity and time, derived
//! by the plan), plus its own options. It never sees the recipe, the host's
//! directories or other partitions.

pub mod btrfs;
pub mod ext4;
pub mod fat;

use uuid::Uuid;

/// The options a caller asks of a writer, before the writer checks them and
/// resolves its own ([`ext4::Ext4Options::from_fs_options`],
/// [`btrfs::BtrfsOptions::from_fs_options`]). Plain data: the builder's
/// recipe `fs` object (which also carries the label and the sizing
/// headroom, the plan's business) converts into it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsOptions {
    /// ext4: bytes per inode (default 16384).
    pub inode_ratio: Option<u64>,
    /// ext4: exact inode count (overrides `inode_ratio`).
    pub inodes: Option<u64>,
    /// ext4: percent of blocks reserved for root (default 5).
    pub reserved_percent: Option<u32>,
    /// ext4: write an (empty, clean) journal. Default true.
    pub journal: Option<bool>,
    /// ext4: feature changes against the defaults, e.g. `["-huge_file"]`.
    pub features: Vec<String>,
    /// btrfs: subvolumes, e.g. `@` from `/`.
    pub subvolumes: Vec<btrfs::SubvolumeSpec>,
    /// btrfs: the subvolume a plain mount shows.
    pub default_subvolume: Option<String>,
    /// btrfs: `zstd` or `zlib` compression of data extents.
    pub compression: Option<String>,
}

/// What every writer needs from the plan.
#[derive(Debug, Clone)]
pub struct FsParams {
    /// Filesystem label.
    pub label: String,
    /// Filesystem UUID, derived from the recipe digest.
    pub uuid: Uuid,
    /// 32 further derived bytes for filesystem-internal seeds (e.g. the ext4
    /// directory hash seed, btrfs chunk-tree and device UUIDs).
    pub seed: [u8; 32],
    /// `source_date_epoch`: every timestamp the writer invents.
    pub epoch: i64,
}

/// What a writer reports back, for the manifest and `inspect`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FsReport {
    /// Filesystem type name (`vfat`, `ext4`, `btrfs`).
    pub kind: String,
    /// Bytes of the region actually used by data and metadata.
    pub used_bytes: u64,
    /// Free-form notes (e.g. the FAT type chosen).
    pub notes: Vec<String>,
}
