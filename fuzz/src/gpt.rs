//! A GPT disk image from arbitrary partitions, valid as far as the input
//! lets it be: protective MBR, primary header at LBA 1 with its entry
//! array at LBA 2, backup entries and header at the end, every CRC right.
//! The image is returned as the regions that hold data (the rest is
//! zero), so a large sparse disk costs little.

use arbitrary::Arbitrary;

/// The type GUIDs the readers know, as text (`inspect` names them).
pub const TYPES: &[&str] = &[
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", // esp
    "21686148-6449-6e6f-744e-656564454649", // bios-boot
    "0fc63daf-8483-4772-8e79-3d69d8477de4", // linux
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", // root-x86-64
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", // swap
];

/// Partition fields, as arbitrary as the input makes them.
#[derive(Arbitrary, Debug, Clone)]
pub struct Part {
    /// Index into [`TYPES`] (modulo), or any GUID when `raw_type` is set.
    pub type_sel: u8,
    pub raw_type: Option<[u8; 16]>,
    pub guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
    pub attrs: u64,
    pub name: String,
}

/// GPT's mixed-endian bytes of a GUID in text form.
pub fn guid_bytes(s: &str) -> [u8; 16] {
    let h: Vec<u8> = s.bytes().filter(|c| c.is_ascii_hexdigit()).collect();
    let mut b = [0u8; 16];
    for i in 0..16 {
        let t = std::str::from_utf8(&h[2 * i..2 * i + 2]).unwrap_or("00");
        b[i] = u8::from_str_radix(t, 16).unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// CRC32 as GPT uses it: the agent's own.
pub use guest_agent::gpt::crc32;

/// One 128-byte entry.
pub fn entry(p: &Part) -> [u8; 128] {
    let mut e = [0u8; 128];
    let t = p.raw_type.unwrap_or_else(|| guid_bytes(TYPES[p.type_sel as usize % TYPES.len()]));
    e[..16].copy_from_slice(&t);
    e[16..32].copy_from_slice(&p.guid);
    e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
    e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
    e[48..56].copy_from_slice(&p.attrs.to_le_bytes());
    for (i, u) in p.name.encode_utf16().take(36).enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    e
}

/// A header for `my_lba`, with `entries_lba`, the entry array's CRC and
/// count, padded to one block of `lbs` bytes.
#[allow(clippy::too_many_arguments)]
pub fn header(
    my_lba: u64,
    alternate: u64,
    last_lba: u64,
    entries_lba: u64,
    n: u32,
    entries_crc: u32,
    disk_guid: [u8; 16],
    lbs: usize,
) -> Vec<u8> {
    let mut h = vec![0u8; 92];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alternate.to_le_bytes());
    let entry_sectors = (n as u64 * 128).div_ceil(lbs as u64);
    h[40..48].copy_from_slice(&(2 + entry_sectors).to_le_bytes());
    h[48..56].copy_from_slice(&last_lba.saturating_sub(entry_sectors + 1).to_le_bytes());
    h[56..72].copy_from_slice(&disk_guid);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&n.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let c = crc32(&h);
    h[16..20].copy_from_slice(&c.to_le_bytes());
    h.resize(lbs, 0);
    h
}

/// The regions `(offset, bytes)` of a disk of `disk_lbas` blocks of `lbs`
/// bytes with `parts` in an entry array of `n` entries (at least the
/// partitions; 128 as usual). Empty when the disk is too small to hold a
/// GPT at all.
pub fn image(disk_lbas: u64, lbs: usize, parts: &[Part], n: u32, disk_guid: [u8; 16]) -> Vec<(u64, Vec<u8>)> {
    let n = n.max(parts.len() as u32).max(1);
    let mut entries = vec![0u8; n as usize * 128];
    for (i, p) in parts.iter().enumerate() {
        entries[i * 128..(i + 1) * 128].copy_from_slice(&entry(p));
    }
    let entry_sectors = (entries.len() as u64).div_ceil(lbs as u64);
    if disk_lbas < 3 + 2 * entry_sectors {
        return Vec::new();
    }
    let last = disk_lbas - 1;
    let crc = crc32(&entries);
    let mut mbr = vec![0u8; 512];
    mbr[446 + 4] = 0xEE;
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&(last.min(u32::MAX as u64) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let lb = lbs as u64;
    let backup_entries = last - entry_sectors;
    vec![
        (0, mbr),
        (lb, header(1, last, last, 2, n, crc, disk_guid, lbs)),
        (2 * lb, entries.clone()),
        (backup_entries * lb, entries),
        (last * lb, header(last, 1, last, backup_entries, n, crc, disk_guid, lbs)),
    ]
}

/// The regions laid out in one buffer of `len` bytes (later regions win;
/// what lies past `len` is cut).
pub fn flatten(regions: &[(u64, Vec<u8>)], len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    for (off, data) in regions {
        let Ok(off) = usize::try_from(*off) else { continue };
        if off >= len {
            continue;
        }
        let n = data.len().min(len - off);
        b[off..off + n].copy_from_slice(&data[..n]);
    }
    b
}
