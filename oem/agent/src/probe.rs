//! Filesystem superblock probing: pure functions over the first bytes of a
//! block device. Gives the filesystem type (to mount without guessing), its
//! UUID and label (for `root=UUID=`/`root=LABEL=`).

/// How many bytes from the start of a device [`probe`] needs to see.
pub const PROBE_LEN: usize = 0x10000 + 4096;

/// What a superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// The name `mount(2)` takes: `ext4`, `btrfs`, `vfat`.
    pub fstype: &'static str,
    /// Lower case; `xxxx-xxxx` for FAT volume IDs.
    pub uuid: String,
    pub label: String,
}

fn uuid_text(b: &[u8]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", h[0..4].concat(), h[4..6].concat(), h[6..8].concat(), h[8..10].concat(), h[10..16].concat())
}

fn cstr_text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Identify ext2/3/4, btrfs or FAT from the first [`PROBE_LEN`] bytes (fewer
/// bytes just means fewer filesystems can be recognised).
pub fn probe(b: &[u8]) -> Option<FsInfo> {
    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56. The ext4 driver
    // mounts all three.
    if b.len() >= 1024 + 136 && b[1024 + 56..1024 + 58] == [0x53, 0xEF] {
        let sb = &b[1024..];
        return Some(FsInfo { fstype: "ext4", uuid: uuid_text(&sb[104..120]), label: cstr_text(&sb[120..136]) });
    }
    // btrfs: superblock at 64 KiB, magic at +0x40, fsid at +0x20, label at +0x12b.
    const B: usize = 0x10000;
    if b.len() >= B + 0x12b + 256 && &b[B + 0x40..B + 0x48] == b"_BHRfS_M" {
        return Some(FsInfo { fstype: "btrfs", uuid: uuid_text(&b[B + 0x20..B + 0x30]), label: cstr_text(&b[B + 0x12b..B + 0x12b + 256]) });
    }
    // FAT: boot signature, then the FAT32 or FAT12/16 extended BPB.
    if b.len() >= 512 && b[510..512] == [0x55, 0xAA] {
        let (id_off, label_off) = if &b[0x52..0x57] == b"FAT32" {
            (0x43, 0x47)
        } else if &b[0x36..0x39] == b"FAT" {
            (0x27, 0x2B)
        } else {
            return None;
        };
        if b[id_off - 1] != 0x29 {
            // Extended boot signature absent: no volume ID or label.
            return Some(FsInfo { fstype: "vfat", uuid: String::new(), label: String::new() });
        }
        let id = u32::from_le_bytes(b[id_off..id_off + 4].try_into().unwrap());
        let label = String::from_utf8_lossy(&b[label_off..label_off + 11]).trim_end().to_string();
        let label = if label == "NO NAME" { String::new() } else { label };
        return Some(FsInfo { fstype: "vfat", uuid: format!("{:04x}-{:04x}", id >> 16, id & 0xffff), label });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4() {
        let mut b = vec![0u8; PROBE_LEN];
        b[1024 + 56] = 0x53;
        b[1024 + 57] = 0xEF;
        let u: Vec<u8> = (1..=16).collect();
        b[1024 + 104..1024 + 120].copy_from_slice(&u);
        b[1024 + 120..1024 + 124].copy_from_slice(b"root");
        let i = probe(&b).unwrap();
        assert_eq!(i.fstype, "ext4");
        assert_eq!(i.uuid, "01020304-0506-0708-090a-0b0c0d0e0f10");
        assert_eq!(i.label, "root");
    }

    #[test]
    fn btrfs() {
        let mut b = vec![0u8; PROBE_LEN];
        b[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        b[0x10020..0x10030].copy_from_slice(&[0xab; 16]);
        b[0x1012b..0x1012e].copy_from_slice(b"sys");
        let i = probe(&b).unwrap();
        assert_eq!((i.fstype, i.label.as_str()), ("btrfs", "sys"));
        assert_eq!(i.uuid, "abababab-abab-abab-abab-abababababab");
        // Too short to see the btrfs superblock.
        assert_eq!(probe(&b[..4096]), None);
    }

    #[test]
    fn fat32_and_fat16() {
        let mut b = vec![0u8; 512];
        b[510] = 0x55;
        b[511] = 0xAA;
        b[0x52..0x5A].copy_from_slice(b"FAT32   ");
        b[0x42] = 0x29;
        b[0x43..0x47].copy_from_slice(&0x1234_ABCDu32.to_le_bytes());
        b[0x47..0x52].copy_from_slice(b"ESP        ");
        let i = probe(&b).unwrap();
        assert_eq!((i.fstype, i.uuid.as_str(), i.label.as_str()), ("vfat", "1234-abcd", "ESP"));

        let mut b = vec![0u8; 512];
        b[510] = 0x55;
        b[511] = 0xAA;
        b[0x36..0x3E].copy_from_slice(b"FAT16   ");
        b[0x26] = 0x29;
        b[0x27..0x2B].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        b[0x2B..0x36].copy_from_slice(b"NO NAME    ");
        let i = probe(&b).unwrap();
        assert_eq!((i.uuid.as_str(), i.label.as_str()), ("dead-beef", ""));
    }

    #[test]
    fn nothing() {
        assert_eq!(probe(&vec![0u8; PROBE_LEN]), None);
        assert_eq!(probe(&[]), None);
        // An MBR boot sector is not a FAT filesystem.
        let mut b = vec![0u8; 512];
        b[510] = 0x55;
        b[511] = 0xAA;
        assert_eq!(probe(&b), None);
    }
}
