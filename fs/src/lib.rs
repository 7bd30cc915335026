//! imagefs: build-image's filesystem writers (ext4, btrfs, vfat), written
//! from scratch without host mkfs tools, and what they consume.
//!
//! A writer sees a [`tree::Tree`] (in-memory inodes, content by reference),
//! a [`disk::Region`] (a bounds-checked window of one file or block device)
//! and [`fs::FsParams`] (label, UUID, seed, time). It never sees a recipe,
//! the host's directories or other partitions. The builder (`build-image`)
//! builds trees from its inputs and plans the regions; the guest agent calls
//! [`format_empty`] to put an empty filesystem on a data disk at first boot.
//!
//! Output is deterministic: the same tree, size and parameters give the
//! same bytes. Every metadata block a filesystem relies on is written
//! explicitly, so the result is valid over a disk full of old data.
//!
//! Feature `compress` (on by default): btrfs zstd and zlib compression of
//! data extents. Without it, asking for compression is an error.

pub mod derive;
pub mod disk;
mod empty;
pub mod fs;
pub mod parallel;
pub mod tree;

pub use empty::{format_empty, FormatError, FsKind};
/// The UUID type of [`format_empty`] and [`fs::FsParams`], for callers
/// that have no `uuid` dependency of their own.
pub use uuid::Uuid;
