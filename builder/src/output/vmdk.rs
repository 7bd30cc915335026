//! VMDK, streamOptimized subformat (VMware ESXi/vSphere, OVA/OVF imports),
//! from the sparse raw image, written directly.
//!
//! Why our own: the subformat is a short, fixed recipe (header, embedded
//! descriptor, deflate-compressed grains with markers, tables at the end,
//! footer) and the tools that write it are not reproducible: `qemu-img` and
//! VMware's tools put a random CID into the descriptor, and none of the
//! crates on crates.io writes it (they read it, or wrap a C library). Ours
//! streams from the sparse raw file, skips holes and all-zero grains,
//! compresses grains on a few threads, and gives the same bytes for the same
//! input: the CID is derived from the content.
//!
//! Layout (sectors of 512 bytes; VMware's "Virtual Disk Format 5.0",
//! stream-optimized sparse extents):
//! ```text
//! sector 0        sparse extent header, gdOffset = GD_AT_END
//! sectors 1..21   embedded descriptor (createType="streamOptimized"), zero-padded
//! sector 128…     grains: {u64 lba, u32 size, zlib data}, each sector-aligned
//!                 for each grain table that has grains: GT marker + table (4 sectors)
//!                 GD marker + grain directory
//!                 footer marker + footer (the header with the real gdOffset)
//!                 end-of-stream marker
//! ```

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::grains;

const SECTOR: u64 = 512;
/// 64 KiB grains, as VMware and qemu write them.
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries (u32 each): one table covers 32 MiB.
const GTES_PER_GT: u64 = 512;
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
const DESC_OFFSET: u64 = 1;
const DESC_SECTORS: u64 = 20;
/// Grains start at 64 KiB, after the header and descriptor.
const OVERHEAD: u64 = 128;
const GD_AT_END: u64 = u64::MAX;
/// Flags: valid new-line detection test, compressed grains, markers.
const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// The virtual disk controller the descriptor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Adapter {
    /// LSI Logic SCSI: what ESXi and most OVF importers expect.
    #[default]
    LsiLogic,
    /// IDE: the most widely understood, for old or picky hypervisors.
    Ide,
}

/// Options of the VMDK writer.
#[derive(Debug, Clone, Copy)]
pub struct VmdkOptions {
    pub adapter: Adapter,
    /// zlib level 1–9 (default 6).
    pub level: u32,
    /// Compression threads.
    pub threads: usize,
}

impl Default for VmdkOptions {
    fn default() -> Self {
        VmdkOptions { adapter: Adapter::LsiLogic, level: 6, threads: crate::parallel::threads() }
    }
}

fn header(capacity_sectors: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&DESC_OFFSET.to_le_bytes());
    h[36..44].copy_from_slice(&DESC_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // rgdOffset (48..56) stays 0: no redundant directory in a stream.
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD.to_le_bytes());
    h[72] = 0; // uncleanShutdown
    h[73] = b'\n';
    h[74] = b' ';
    h[75] = b'\r';
    h[76] = b'\n';
    h[77..79].copy_from_slice(&1u16.to_le_bytes()); // compressAlgorithm: deflate
    h
}

fn marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    // size (8..12) is 0 for metadata markers.
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The embedded descriptor text.
pub fn descriptor(capacity_sectors: u64, cid: u32, adapter: Adapter, file_name: &str) -> String {
    let (heads, sectors, max_cyl, name) = match adapter {
        Adapter::LsiLogic => (255u64, 63u64, 65535u64, "lsilogic"),
        Adapter::Ide => (16, 63, 16383, "ide"),
    };
    let cylinders = (capacity_sectors / (heads * sectors)).clamp(1, max_cyl);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{file_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"{name}\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"{heads}\"\n\
         ddb.geometry.sectors = \"{sectors}\"\n\
         ddb.virtualHWVersion = \"4\"\n"
    )
}

fn pad_to_sector(n: u64) -> u64 {
    n.div_ceil(SECTOR) * SECTOR
}

/// Write `raw` (of `len` bytes) as a streamOptimized VMDK into `out`.
/// `file_name` is the name the descriptor's extent line shows.
pub fn write(raw: &File, len: u64, out: &File, file_name: &str, opts: &VmdkOptions) -> std::io::Result<()> {
    let capacity = len.div_ceil(SECTOR);
    let grain_count = len.div_ceil(GRAIN);
    let gt_count = grain_count.div_ceil(GTES_PER_GT);
    super::empty(out)?;

    // Grains, from sector OVERHEAD on. The writer goes through a buffer and
    // keeps its position in sectors.
    let mut w = std::io::BufWriter::with_capacity(4 << 20, super::WriteAt::new(out, OVERHEAD * SECTOR));
    let mut gte = vec![0u32; (gt_count * GTES_PER_GT) as usize];
    let mut content = Sha256::new();
    content.update(len.to_le_bytes());
    let level = flate2::Compression::new(opts.level.clamp(1, 9));
    let mut sector = OVERHEAD;
    grains::for_each_grain::<Vec<u8>, _, _, std::io::Error>(
        raw,
        len,
        GRAIN,
        opts.threads,
        |data| {
            let mut z = flate2::write::ZlibEncoder::new(Vec::with_capacity(GRAIN as usize / 2), level);
            z.write_all(data).expect("writing to a Vec");
            z.finish().expect("writing to a Vec")
        },
        |index, data, z| {
            content.update(index.to_le_bytes());
            content.update(data);
            let lba = index * GRAIN_SECTORS;
            let total = pad_to_sector(12 + z.len() as u64);
            gte[index as usize] =
                u32::try_from(sector).map_err(|_| std::io::Error::other("VMDK sparse extent larger than 2 TiB of compressed data"))?;
            w.write_all(&lba.to_le_bytes())?;
            w.write_all(&(z.len() as u32).to_le_bytes())?;
            w.write_all(&z)?;
            w.write_all(&vec![0u8; (total - 12 - z.len() as u64) as usize])?;
            sector += total / SECTOR;
            Ok(())
        },
    )?;

    // Grain tables that hold grains, each behind its marker; the directory
    // points at the table itself (the sector after the marker).
    let mut gd = vec![0u32; gt_count as usize];
    for t in 0..gt_count as usize {
        let table = &gte[t * GTES_PER_GT as usize..(t + 1) * GTES_PER_GT as usize];
        if table.iter().all(|e| *e == 0) {
            continue;
        }
        w.write_all(&marker(GT_SECTORS, MARKER_GT))?;
        sector += 1;
        gd[t] = sector as u32;
        for e in table {
            w.write_all(&e.to_le_bytes())?;
        }
        sector += GT_SECTORS;
    }
    let gd_sectors = pad_to_sector(gt_count * 4) / SECTOR;
    w.write_all(&marker(gd_sectors, MARKER_GD))?;
    sector += 1;
    let gd_offset = sector;
    let mut gd_bytes = vec![0u8; (gd_sectors * SECTOR) as usize];
    for (i, e) in gd.iter().enumerate() {
        gd_bytes[i * 4..i * 4 + 4].copy_from_slice(&e.to_le_bytes());
    }
    w.write_all(&gd_bytes)?;
    w.write_all(&marker(1, MARKER_FOOTER))?;
    w.write_all(&header(capacity, gd_offset))?;
    w.write_all(&marker(0, MARKER_EOS))?;
    w.flush()?;
    drop(w);

    // Header and descriptor last: the CID is derived from the content.
    let digest = content.finalize();
    let cid = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let desc = descriptor(capacity, cid, opts.adapter, file_name);
    if desc.len() as u64 > DESC_SECTORS * SECTOR {
        return Err(std::io::Error::other("VMDK descriptor longer than its 20 sectors"));
    }
    let mut head = vec![0u8; (OVERHEAD * SECTOR) as usize];
    head[..512].copy_from_slice(&header(capacity, GD_AT_END));
    head[512..512 + desc.len()].copy_from_slice(desc.as_bytes());
    out.write_all_at(&head, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_sit_where_the_spec_puts_them() {
        let h = header(4096, GD_AT_END);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u32::from_le_bytes(h[8..12].try_into().unwrap()), 0x30001);
        assert_eq!(u64::from_le_bytes(h[56..64].try_into().unwrap()), u64::MAX);
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes(h[77..79].try_into().unwrap()), 1);
    }

    #[test]
    fn empty_and_tiny_images_end_with_footer_and_eos() {
        let raw = tempfile::tempfile().unwrap();
        raw.set_len(3 << 20).unwrap();
        raw.write_all_at(b"hello", 1 << 20).unwrap();
        let out = tempfile::tempfile().unwrap();
        write(&raw, 3 << 20, &out, "t.vmdk", &VmdkOptions::default()).unwrap();
        let n = out.metadata().unwrap().len();
        assert_eq!(n % 512, 0);
        let mut tail = [0u8; 1536];
        out.read_exact_at(&mut tail, n - 1536).unwrap();
        assert_eq!(u32::from_le_bytes(tail[12..16].try_into().unwrap()), MARKER_FOOTER);
        assert_eq!(&tail[512..516], b"KDMV");
        assert!(tail[1024..].iter().all(|b| *b == 0));
    }
}
