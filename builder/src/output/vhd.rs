//! Fixed VHD (Hyper-V, Azure): the raw image followed by a 512-byte footer.
//!
//! Written directly (the footer is 512 bytes of fixed fields; no crate
//! needed). The creator application is `win ` so that readers (qemu
//! included) take the size from the footer, as Hyper-V does, rather than
//! from the CHS geometry. Deterministic: the timestamp is
//! `source_date_epoch` and the unique id is derived from the recipe digest.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::tree::content::data_ranges_or_whole;

/// Seconds from 1970-01-01 to 2000-01-01, the VHD epoch.
const VHD_EPOCH: i64 = 946_684_800;

/// CHS geometry as the VHD specification computes it.
pub fn geometry(size: u64) -> (u16, u8, u8) {
    let mut total = size / 512;
    total = total.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024);
        if h < 4 {
            h = 4;
        }
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// The 512-byte footer of a fixed VHD of `size` bytes.
pub fn footer(size: u64, epoch: i64, unique_id: [u8; 16]) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[24..28].copy_from_slice(&((epoch - VHD_EPOCH).clamp(0, u32::MAX as i64) as u32).to_be_bytes());
    f[28..32].copy_from_slice(b"win ");
    f[32..36].copy_from_slice(&0x000a_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = geometry(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&2u32.to_be_bytes()); // fixed disk
    f[68..84].copy_from_slice(&unique_id);
    let sum: u32 = f.iter().map(|b| u32::from(*b)).sum();
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

/// Write `raw` as a fixed VHD into `out`, keeping the raw image's holes
/// (and making holes of 4 MiB chunks that are all zeros). The data is read
/// here and written on a second thread, with O_DIRECT where the file system
/// takes it if `direct` (see [`crate::disk::direct`]). A raw file whose length is not a whole
/// number of 512-byte sectors is padded with zeros to one, as qemu reads it.
pub fn write(raw: &File, len: u64, out: &File, epoch: i64, unique_id: [u8; 16], direct: bool) -> std::io::Result<()> {
    const CHUNK: u64 = 4 << 20;
    let size = len.div_ceil(512) * 512;
    super::empty(out)?;
    let ranges = data_ranges_or_whole(raw, len)?;
    crate::disk::direct::with_writer(out, CHUNK as usize, direct, |pipe| {
        for r in ranges {
            // Whole 4 KiB blocks (what O_DIRECT wants); holes read as zeros.
            let mut off = r.start / 4096 * 4096;
            let end = r.end.div_ceil(4096) * 4096;
            while off < end {
                let want = CHUNK.min(end - off) as usize;
                let n = want.min((len - off) as usize);
                let Some(mut b) = pipe.buffer() else { return Ok(()) };
                let buf = b.get_mut();
                raw.read_exact_at(&mut buf[..n], off)?;
                buf[n..want].fill(0);
                let keep = if super::grains::is_zero(&buf[..n]) { 0 } else { want.min((size - off) as usize) };
                if !pipe.write(b, keep, off) {
                    return Ok(());
                }
                off += want as u64;
            }
        }
        Ok(())
    })?;
    out.set_len(size + 512)?;
    out.write_all_at(&footer(size, epoch, unique_id), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_checksum_and_geometry() {
        let f = footer(64 << 20, 1_700_000_000, [1; 16]);
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let mut z = f;
        z[64..68].fill(0);
        let sum: u32 = z.iter().map(|b| u32::from(*b)).sum();
        assert_eq!(stored, !sum);
        let (c, h, s) = geometry(64 << 20);
        assert!(u64::from(c) * u64::from(h) * u64::from(s) * 512 <= 64 << 20);
    }
}
