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
    let sectors = len / SECTOR;
    let mut parts = Vec::new();
    for (n, p) in g.partitions().iter().filter(|(_, p)| p.is_used()) {
        // The table is the image's, not ours: an entry may end before it
        // starts or lie past the end of the image.
        if p.first_lba > p.last_lba || p.last_lba >= sectors {
            return Err(GptError::Read {
                image: shown.into(),
                msg: format!(
                    "partition {n} spans sectors {}..={}, which is not inside the image's {sectors} sectors",
                    p.first_lba, p.last_lba
                ),
            });
        }
        parts.push(ReadPartition {
            number: *n,
            name: p.name.clone(),
            type_guid: p.part_type_guid.guid,
            part_guid: p.part_guid,
            offset: p.first_lba * SECTOR,
            size: (p.last_lba + 1 - p.first_lba) * SECTOR,
        });
    }
    Ok((*g.guid(), parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 MiB image whose GPT (CRCs right) has one partition from
    /// `first` to `last` (sectors).
    fn image_with(first: u64, last: u64) -> tempfile::NamedTempFile {
        let sectors = 2048u64;
        let mut entries = vec![0u8; 128 * 128];
        entries[..16].copy_from_slice(&[0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
        entries[16..32].copy_from_slice(&[1; 16]);
        entries[32..40].copy_from_slice(&first.to_le_bytes());
        entries[40..48].copy_from_slice(&last.to_le_bytes());
        let header = |my: u64, alt: u64, at: u64| {
            let mut h = vec![0u8; 92];
            h[..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[40..48].copy_from_slice(&34u64.to_le_bytes());
            h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
            h[56..72].copy_from_slice(&[2; 16]);
            h[72..80].copy_from_slice(&at.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
            let c = crc32fast::hash(&h);
            h[16..20].copy_from_slice(&c.to_le_bytes());
            h
        };
        let mut img = vec![0u8; (sectors * SECTOR) as usize];
        img[446 + 4] = 0xEE;
        img[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        img[446 + 12..446 + 16].copy_from_slice(&((sectors - 1) as u32).to_le_bytes());
        img[510..512].copy_from_slice(&[0x55, 0xAA]);
        let put = |img: &mut Vec<u8>, lba: u64, b: &[u8]| img[(lba * SECTOR) as usize..][..b.len()].copy_from_slice(b);
        put(&mut img, 1, &header(1, sectors - 1, 2));
        put(&mut img, 2, &entries);
        put(&mut img, sectors - 33, &entries);
        put(&mut img, sectors - 1, &header(sectors - 1, 1, sectors - 33));
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &img).unwrap();
        f
    }

    #[test]
    fn reads_a_partition_back() {
        let f = image_with(34, 2013);
        let (_, parts) = read(f.as_file(), "x.raw").unwrap();
        assert_eq!((parts[0].offset, parts[0].size), (34 * SECTOR, 1980 * SECTOR));
    }

    /// Found by `fuzz/` (target `inspect`): an entry whose LBAs overflow
    /// `* 512`, end before they start, or lie past the image panicked in
    /// `inspect`. Each is a clear error naming the partition.
    #[test]
    fn entries_outside_the_image_are_refused() {
        for (first, last) in [(u64::MAX / 4, u64::MAX / 4 + 1), (100, 50), (34, 4096)] {
            let f = image_with(first, last);
            let e = read(f.as_file(), "x.raw").unwrap_err().to_string();
            assert!(e.contains("x.raw") && e.contains("partition 1") && e.contains("not inside the image"), "{first}..{last}: {e}");
        }
    }
}
