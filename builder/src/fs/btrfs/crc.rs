//! CRC-32C (Castagnoli), as btrfs uses it for block checksums, data
//! checksums and directory-entry name hashes.
//!
//! Hardware `crc32` instructions are used on x86-64 when the CPU has
//! SSE 4.2; otherwise a slicing-by-8 table.

const POLY: u32 = 0x82F6_3B78; // reflected 0x1EDC6F41

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

fn soft(mut crc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][(hi & 0xff) as usize]
            ^ TABLES[2][((hi >> 8) & 0xff) as usize]
            ^ TABLES[1][((hi >> 16) & 0xff) as usize]
            ^ TABLES[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ b as u32) & 0xff) as usize];
    }
    crc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn hw(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = crc as u64;
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let v = u64::from_le_bytes(ch.try_into().expect("8 bytes"));
        c = _mm_crc32_u64(c, v);
    }
    let mut c = c as u32;
    for &b in chunks.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}

/// The raw CRC-32C register update: no inversion before or after, as the
/// kernel's `crc32c(seed, data, len)`.
pub fn crc32c_raw(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE 4.2, checked just above.
            return unsafe { hw(crc, data) };
        }
    }
    soft(crc, data)
}

/// The standard CRC-32C of `data` (what btrfs stores as a checksum).
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_raw(!0, data)
}

/// The btrfs name hash of a directory entry or xattr name.
pub fn name_hash(name: &[u8]) -> u64 {
    crc32c_raw(!1, name) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(!soft(!0, b"123456789"), 0xE306_9283);
        let long: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(crc32c_raw(5, &long), soft(5, &long));
    }

    #[test]
    fn name_hashes_match_mkfs_btrfs() {
        // Values read from `btrfs inspect-internal dump-tree` of an image
        // made by mkfs.btrfs.
        assert_eq!(name_hash(b"default"), 2_378_154_706);
        assert_eq!(name_hash(b"c"), 763_318_075);
        assert_eq!(name_hash(b"home"), 2_651_688_704);
    }
}
