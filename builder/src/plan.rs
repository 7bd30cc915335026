//! The plan: partition offsets and sizes, the disk size, and every identity
//! (disk GUID, partition GUIDs, filesystem UUIDs and serials), derived from the
//! recipe digest. Pure data: printable and testable without writing anything.
//!
//! Identities follow systemd-repart: `HMAC-SHA256(key = recipe digest,
//! message = purpose string)`, the first 16 bytes made into a version-4,
//! RFC 4122-variant UUID. The same recipe gives the same identities on any
//! machine; a different recipe gives different ones.

use serde::Serialize;
use uuid::Uuid;

use crate::recipe::size::human;
use crate::recipe::{partition_type_guid, Filesystem, Recipe, Size};

/// Logical sector size of the images we write.
pub const SECTOR: u64 = 512;
/// Partition alignment (and the start of the first partition).
pub const ALIGN: u64 = 1 << 20;
/// Sectors used by one copy of the GPT partition array (128 × 128 bytes).
pub const GPT_ARRAY_SECTORS: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("disk.partitions need {need} ({need_bytes} bytes, including the GPT), but disk.size is {have}: make the disk at least {need}, or shrink the partitions")]
    TooSmall { need: String, need_bytes: u64, have: String },
    #[error("disk.partitions[{index}].size: \"fill\" has no room left: the other partitions already reach {end} of the {disk} in disk.size: make disk.size at least {need}")]
    NoRoomForFill { index: usize, end: String, disk: String, need: String },
    #[error("disk.size: {size} bytes is not a multiple of the {SECTOR}-byte sector")]
    Unaligned { size: u64 },
}

/// The HMAC derivation itself lives with the filesystem writers, which
/// derive their internal identities the same way.
pub use imagefs::derive::{derive_bytes, derive_uuid};

/// One planned partition.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedPartition {
    /// 1-based GPT entry number.
    pub number: u32,
    pub label: String,
    pub type_guid: Uuid,
    pub part_guid: Uuid,
    /// Byte offset of the first byte on the disk.
    pub offset: u64,
    pub size: u64,
    pub filesystem: Filesystem,
    pub tree: Option<String>,
    /// Filesystem UUID (FAT uses its first 4 bytes as the volume serial).
    pub fs_uuid: Uuid,
    /// Filesystem label.
    pub fs_label: String,
    /// Bytes derived for filesystem-internal seeds (directory hash seed…).
    #[serde(skip)]
    pub fs_seed: [u8; 32],
    /// The recipe's filesystem options for this partition.
    #[serde(skip)]
    pub fs: crate::recipe::FsOptions,
}

/// Filesystem UUID and seed of partition `index` (0-based) labelled `label`.
pub fn fs_identity(digest: &[u8; 32], index: usize, label: &str) -> (Uuid, [u8; 32]) {
    (
        derive_uuid(digest, &format!("filesystem-uuid:{}:{}", index + 1, label)),
        derive_bytes(digest, &format!("filesystem-seed:{}:{}", index + 1, label)),
    )
}

/// The full layout of one image.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub disk_size: u64,
    pub disk_guid: Uuid,
    pub partitions: Vec<PlannedPartition>,
    pub epoch: i64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Lay out the disk. `auto_size(i)` gives the size of partition `i` whose
/// size is `"auto"` (asked of its filesystem writer).
pub fn plan(
    recipe: &Recipe,
    digest: &[u8; 32],
    mut auto_size: impl FnMut(usize) -> Result<u64, crate::Error>,
) -> Result<Plan, crate::Error> {
    let disk = recipe.disk.clone().unwrap_or(crate::recipe::Disk { size: None, partitions: Vec::new() });
    let backup = (GPT_ARRAY_SECTORS + 1) * SECTOR;
    let mut sizes = Vec::new();
    for (i, p) in disk.partitions.iter().enumerate() {
        sizes.push(match p.size {
            Size::Bytes(b) => Some(b),
            Size::Auto => Some(align_up(auto_size(i)?, 4096)),
            Size::Fill => None,
        });
    }
    // Offsets of the fixed partitions, and where the fill partition starts.
    let mut offset = ALIGN;
    let mut offsets = Vec::new();
    let mut fill_at = None;
    for (i, s) in sizes.iter().enumerate() {
        offsets.push(offset);
        match s {
            Some(b) => offset = align_up(offset + b, ALIGN),
            None => {
                fill_at = Some(i);
                offset = align_up(offset + SECTOR, ALIGN); // placeholder: fixed below
            }
        }
    }
    let disk_size = match disk.size.and_then(|s| s.bytes()) {
        Some(d) => {
            if d % SECTOR != 0 {
                return Err(PlanError::Unaligned { size: d }.into());
            }
            d
        }
        None => align_up(offset, ALIGN) + ALIGN,
    };
    if let Some(fi) = fill_at {
        // Everything after the fill partition keeps its size; the fill takes
        // what is left between its start and the backup GPT.
        let after: u64 = sizes[fi + 1..].iter().flatten().map(|s| align_up(*s, ALIGN)).sum();
        let start = offsets[fi];
        let usable_end = (disk_size - backup) / 4096 * 4096;
        let room = usable_end.checked_sub(start + after).filter(|r| *r >= ALIGN);
        let Some(room) = room else {
            return Err(PlanError::NoRoomForFill {
                index: fi,
                end: human(start + after),
                disk: human(disk_size),
                need: human(align_up(start + after + ALIGN + backup, ALIGN)),
            }
            .into());
        };
        let fill = if after == 0 { room } else { room / ALIGN * ALIGN };
        sizes[fi] = Some(fill);
        let mut off = align_up(start + fill, ALIGN);
        for j in fi + 1..sizes.len() {
            offsets[j] = off;
            off = align_up(off + sizes[j].expect("fixed"), ALIGN);
        }
    }
    let need_end = offsets.iter().zip(&sizes).map(|(o, s)| o + s.expect("all sized")).max().unwrap_or(ALIGN);
    if need_end + backup > disk_size {
        let need = align_up(need_end + backup, ALIGN);
        return Err(PlanError::TooSmall { need: human(need), need_bytes: need, have: human(disk_size) }.into());
    }
    let mut parts = Vec::new();
    for (i, p) in disk.partitions.iter().enumerate() {
        let fs_label = p.fs.label.clone().unwrap_or_else(|| p.label.clone());
        let (fs_uuid, fs_seed) = fs_identity(digest, i, &p.label);
        parts.push(PlannedPartition {
            number: i as u32 + 1,
            label: p.label.clone(),
            type_guid: partition_type_guid(&p.type_).expect("validated"),
            part_guid: derive_uuid(digest, &format!("partition-guid:{}:{}", i + 1, p.label)),
            offset: offsets[i],
            size: sizes[i].expect("all sized"),
            // An ESP is always FAT, even when the recipe leaves it implicit.
            filesystem: if p.type_ == "esp" && p.filesystem == Filesystem::None { Filesystem::Vfat } else { p.filesystem },
            tree: p.tree.clone(),
            fs_uuid,
            fs_label,
            fs_seed,
            fs: p.fs.clone(),
        });
    }
    Ok(Plan { disk_size, disk_guid: derive_uuid(digest, "disk-guid"), partitions: parts, epoch: recipe.epoch() })
}
