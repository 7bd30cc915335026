//! GPT partition table (protective MBR, primary and backup headers and
//! arrays), written with the `gpt` crate from the [`Plan`].

use std::collections::BTreeMap;

use gpt::disk::LogicalBlockSize;
use gpt::partition_types::{OperatingSystem, Type};

use super::Region;
use crate::plan::{Plan, SECTOR};

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("writing the GPT partition table")]
    Gpt(#[source] gpt::GptError),
    #[error("writing the protective MBR")]
    Mbr(#[source] gpt::mbr::MBRError),
    #[error("reading the partition table of {image}: {msg}")]
    Read { image: String, msg: String },
}

/// Write the protective MBR and both GPT headers and arrays into `disk`
/// (a region covering the whole image).
pub fn write(disk: Region<'_>, plan: &Plan) -> Result<(), GptError> {
    let mut dev = disk.io_cursor();
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(disk.len() / SECTOR - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut dev).map_err(GptError::Mbr)?;
    let mut g = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .change_partition_count(true)
        .create_from_device(dev, Some(plan.disk_guid))
        .map_err(GptError::Gpt)?;
    let mut parts = BTreeMap::new();
    for p in &plan.partitions {
        parts.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: Type { guid: p.type_guid, os: OperatingSystem::None },
                part_guid: p.part_guid,
                first_lba: p.offset / SECTOR,
                last_lba: (p.offset + p.size) / SECTOR - 1,
                flags: 0,
                name: p.label.clone(),
            },
        );
    }
    g.update_partitions(parts).map_err(GptError::Gpt)?;
    g.write().map_err(GptError::Gpt)?;
    Ok(())
}

/// A partition read back from an image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadPartition {
    pub number: u32,
    pub name: String,
    pub type_guid: uuid::Uuid,
    pub part_guid: uuid::Uuid,
    pub offset: u64,
    pub size: u64,
}

/// Read the GPT of an image file: (disk GUID, partitions).
pub fn read(file: &std::fs::File, shown: &str) -> Result<(uuid::Uuid, Vec<ReadPartition>), GptError> {
    let len = file.metadata().map_err(|e| GptError::Read { image: shown.into(), msg: e.to_string() })?.len();
    let region = Region::new(file, 0, len, shown);
    let g = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(LogicalBlockSize::Lb512)
        .open_from_device(region.io_cursor())
        .map_err(|e| GptError::Read { image: shown.into(), msg: format!("no valid GPT: {e}") })?;
    let parts = g
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| ReadPartition {
            number: *n,
            name: p.name.clone(),
            type_guid: p.part_type_guid.guid,
            part_guid: p.part_guid,
            offset: p.first_lba * SECTOR,
            size: (p.last_lba + 1 - p.first_lba) * SECTOR,
        })
        .collect();
    Ok((*g.guid(), parts))
}
