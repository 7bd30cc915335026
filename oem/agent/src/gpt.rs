//! GPT parsing: pure functions over bytes read from a whole disk.
//!
//! Only what the agent needs to turn `root=PARTUUID=`/`PARTLABEL=` into a
//! partition number: the primary header (CRC-checked) and its entry array
//! (CRC-checked). The kernel exposes `PARTUUID` in the partition's `uevent`
//! only on some versions, so reading the table ourselves is the robust way.

use std::fmt;

/// Why a GPT could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GptError {
    /// No "EFI PART" signature at LBA 1.
    NoSignature,
    /// A field is out of the range the spec allows.
    Bad(&'static str),
    /// The header's CRC32 does not match.
    HeaderCrc,
    /// The entry array's CRC32 does not match.
    EntriesCrc,
}

impl fmt::Display for GptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GptError::NoSignature => f.write_str("no GPT signature"),
            GptError::Bad(what) => write!(f, "invalid GPT header: {what}"),
            GptError::HeaderCrc => f.write_str("GPT header CRC mismatch"),
            GptError::EntriesCrc => f.write_str("GPT partition entries CRC mismatch"),
        }
    }
}

impl std::error::Error for GptError {}

/// The fields of the primary GPT header the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// Bytes of the entry array.
    pub fn entries_len(&self) -> usize {
        self.num_entries as usize * self.entry_size as usize
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based partition number, as the kernel numbers them (`vda1`).
    pub number: u32,
    pub type_guid: String,
    /// The unique partition GUID, i.e. the `PARTUUID`, lower case.
    pub part_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    /// The partition name (`PARTLABEL`).
    pub name: String,
}

/// CRC32 (IEEE 802.3, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Format a 16-byte GPT GUID (mixed-endian on disk) as text, lower case.
pub fn guid_to_string(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Parse the GPT header from the bytes of LBA 1 (at least 92 bytes, normally
/// one logical block).
pub fn parse_header(lba1: &[u8]) -> Result<Header, GptError> {
    if lba1.len() < 92 || &lba1[..8] != b"EFI PART" {
        return Err(GptError::NoSignature);
    }
    let size = u32_at(lba1, 12) as usize;
    if !(92..=lba1.len()).contains(&size) {
        return Err(GptError::Bad("header size"));
    }
    let mut h = lba1[..size].to_vec();
    h[16..20].fill(0);
    if crc32(&h) != u32_at(lba1, 16) {
        return Err(GptError::HeaderCrc);
    }
    let hdr = Header {
        entries_lba: u64_at(lba1, 72),
        num_entries: u32_at(lba1, 80),
        entry_size: u32_at(lba1, 84),
        entries_crc: u32_at(lba1, 88),
    };
    if hdr.entry_size < 128 || hdr.entry_size % 8 != 0 || hdr.entry_size > 4096 {
        return Err(GptError::Bad("entry size"));
    }
    if hdr.num_entries == 0 || hdr.num_entries > 16384 {
        return Err(GptError::Bad("number of entries"));
    }
    if hdr.entries_lba < 2 {
        return Err(GptError::Bad("entry array location"));
    }
    Ok(hdr)
}

/// Parse the entry array (`hdr.entries_len()` bytes at `hdr.entries_lba`).
/// Unused entries (type GUID all zero) are skipped.
pub fn parse_entries(hdr: &Header, bytes: &[u8]) -> Result<Vec<Entry>, GptError> {
    let len = hdr.entries_len();
    if bytes.len() < len {
        return Err(GptError::Bad("entry array truncated"));
    }
    let bytes = &bytes[..len];
    if crc32(bytes) != hdr.entries_crc {
        return Err(GptError::EntriesCrc);
    }
    let mut out = Vec::new();
    for (i, e) in bytes.chunks_exact(hdr.entry_size as usize).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let units: Vec<u16> = e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
        out.push(Entry {
            number: i as u32 + 1,
            type_guid: guid_to_string(&e[..16]),
            part_guid: guid_to_string(&e[16..32]),
            first_lba: u64_at(e, 32),
            last_lba: u64_at(e, 40),
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encode a GUID string into GPT's mixed-endian bytes.
    pub fn guid_bytes(s: &str) -> [u8; 16] {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let mut raw = [0u8; 16];
        for i in 0..16 {
            raw[i] = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        raw[0..4].reverse();
        raw[4..6].reverse();
        raw[6..8].reverse();
        raw
    }

    /// A disk image (LBA 0..34 at 512-byte sectors) with the given
    /// (type, unique GUID, name) entries.
    pub fn make_gpt(parts: &[(&str, &str, &str)]) -> Vec<u8> {
        let mut disk = vec![0u8; 34 * 512];
        let mut entries = vec![0u8; 128 * 128];
        for (i, (t, u, name)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&guid_bytes(t));
            e[16..32].copy_from_slice(&guid_bytes(u));
            e[32..40].copy_from_slice(&(2048u64 * (i as u64 + 1)).to_le_bytes());
            e[40..48].copy_from_slice(&(2048u64 * (i as u64 + 2) - 1).to_le_bytes());
            for (j, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let h = &mut disk[512..1024];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        disk[1024..1024 + entries.len()].copy_from_slice(&entries);
        disk
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn guid_roundtrip() {
        let s = "0fc63daf-8483-4772-8e79-3d69d8477de4";
        assert_eq!(guid_to_string(&guid_bytes(s)), s);
        // The on-disk form of the Linux filesystem type GUID.
        assert_eq!(&guid_bytes(s)[..4], &[0xaf, 0x3d, 0xc6, 0x0f]);
    }

    #[test]
    fn parses_entries() {
        let linux = "0fc63daf-8483-4772-8e79-3d69d8477de4";
        let esp = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
        let disk = make_gpt(&[
            (esp, "11111111-2222-3333-4444-555555555555", "ESP"),
            (linux, "6A9B1F2E-0000-4000-8000-00000000ABCD", "root-x86-64"),
        ]);
        let hdr = parse_header(&disk[512..1024]).unwrap();
        assert_eq!(hdr.entries_lba, 2);
        let lba = hdr.entries_lba as usize * 512;
        let e = parse_entries(&hdr, &disk[lba..lba + hdr.entries_len()]).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].number, 2);
        assert_eq!(e[1].part_guid, "6a9b1f2e-0000-4000-8000-00000000abcd");
        assert_eq!(e[1].type_guid, linux);
        assert_eq!(e[1].name, "root-x86-64");
        assert_eq!((e[1].first_lba, e[1].last_lba), (4096, 6143));
        assert_eq!(e[0].name, "ESP");
    }

    #[test]
    fn rejects_corruption() {
        let mut disk = make_gpt(&[("0fc63daf-8483-4772-8e79-3d69d8477de4", "11111111-2222-3333-4444-555555555555", "r")]);
        assert_eq!(parse_header(&disk[0..512]), Err(GptError::NoSignature));
        let hdr = parse_header(&disk[512..1024]).unwrap();
        disk[1024 + 20] ^= 1;
        assert_eq!(parse_entries(&hdr, &disk[1024..1024 + hdr.entries_len()]), Err(GptError::EntriesCrc));
        assert!(parse_entries(&hdr, &disk[1024..1100]).is_err());
        disk[512 + 40] ^= 1;
        assert_eq!(parse_header(&disk[512..1024]), Err(GptError::HeaderCrc));
        assert_eq!(parse_header(&[0u8; 10]), Err(GptError::NoSignature));
    }
}
