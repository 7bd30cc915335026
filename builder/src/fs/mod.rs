//! Filesystem writers. Each one has the same shape: it gets a [`Tree`], a
//! [`Region`] (its partition, bounds-checked) and [`FsParams`] (identity and
//! time, derived by the plan), plus its own options. It never sees the recipe,
//! the host's directories or other partitions.

pub mod btrfs;
pub mod ext4;
pub mod fat;

use uuid::Uuid;

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
