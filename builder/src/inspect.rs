//! `build-image inspect`: read an image (not its manifest) and report the
//! partition table and, for each partition, the filesystem found there with
//! its UUID and label, from the filesystem's own superblock.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::disk::gpt::ReadPartition;

/// A filesystem recognised by its superblock.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Probed {
    /// `vfat`, `ext4`, `btrfs`, `swap`, `iso9660`, or `unknown`/`empty`.
    pub kind: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Extra facts (FAT type, block size…).
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectedPartition {
    #[serde(flatten)]
    pub partition: ReadPartition,
    /// Well-known name of the type GUID, if any.
    pub type_name: Option<String>,
    pub filesystem: Probed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub image: String,
    pub size: u64,
    pub disk_guid: String,
    pub partitions: Vec<InspectedPartition>,
}

const TYPE_NAMES: [&str; 11] =
    ["esp", "bios-boot", "linux", "root-x86-64", "usr-x86-64", "swap", "home", "srv", "var", "tmp", "xbootldr"];

fn type_name(g: &uuid::Uuid) -> Option<String> {
    TYPE_NAMES.iter().find(|n| crate::plan::partition_type_guid(n).as_ref() == Some(g)).map(|s| s.to_string())
}

/// Inspect an image file.
pub fn inspect(path: &Path) -> Result<Inspection, crate::Error> {
    let shown = path.display().to_string();
    let f = File::open(path).map_err(|e| crate::Error::io(format!("opening {shown}"), e))?;
    let size = f.metadata().map_err(|e| crate::Error::io(format!("reading {shown}"), e))?.len();
    let (guid, parts) = crate::disk::gpt::read(&f, &shown)?;
    let mut out = Vec::new();
    for p in parts {
        let fs = probe(&f, p.offset, p.size).map_err(|e| crate::Error::io(format!("reading partition {} of {shown}", p.number), e))?;
        out.push(InspectedPartition { type_name: type_name(&p.type_guid), partition: p, filesystem: fs });
    }
    Ok(Inspection { image: shown, size, disk_guid: guid.to_string(), partitions: out })
}

fn read(f: &File, at: u64, len: usize, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    if at + len as u64 > limit {
        return Ok(None);
    }
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, at)?;
    Ok(Some(b))
}

fn text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

fn uuid_of(b: &[u8]) -> String {
    uuid::Uuid::from_slice(&b[..16]).map(|u| u.to_string()).unwrap_or_default()
}

/// Probe the filesystem at `[offset, offset+size)`.
pub fn probe(f: &File, offset: u64, size: u64) -> std::io::Result<Probed> {
    let end = offset + size;
    // ext2/3/4: superblock at 1024, magic 0xEF53 at 0x38.
    if let Some(sb) = read(f, offset + 1024, 1024, end)? {
        if sb[0x38..0x3a] == [0x53, 0xef] {
            let incompat = u32::from_le_bytes(sb[0x60..0x64].try_into().expect("4"));
            let compat = u32::from_le_bytes(sb[0x5c..0x60].try_into().expect("4"));
            let kind = if incompat & 0x40 != 0 { "ext4" } else if compat & 0x4 != 0 { "ext3" } else { "ext2" };
            let bs = 1024u64 << u32::from_le_bytes(sb[0x18..0x1c].try_into().expect("4"));
            return Ok(Probed {
                kind: kind.into(),
                uuid: Some(uuid_of(&sb[0x68..0x78])),
                label: text(&sb[0x78..0x88]),
                detail: Some(format!("block size {bs}")),
            });
        }
    }
    // Btrfs: superblock at 64 KiB, magic at 0x40.
    if let Some(sb) = read(f, offset + 0x10000, 0x1000, end)? {
        if &sb[0x40..0x48] == b"_BHRfS_M" {
            return Ok(Probed {
                kind: "btrfs".into(),
                uuid: Some(uuid_of(&sb[0x20..0x30])),
                label: text(&sb[0x12b..0x12b + 256]),
                detail: None,
            });
        }
    }
    if let Some(bs) = read(f, offset, 512, end)? {
        if bs[510..512] == [0x55, 0xaa] {
            // FAT32 keeps its extended BPB at 0x40, FAT12/16 at 0x24.
            let (ext, fat) = if &bs[0x52..0x5a] == b"FAT32   " {
                (0x40, "FAT32")
            } else if &bs[0x36..0x3b] == b"FAT16" {
                (0x24, "FAT16")
            } else if &bs[0x36..0x3b] == b"FAT12" {
                (0x24, "FAT12")
            } else {
                (0, "")
            };
            if ext != 0 {
                let serial = u32::from_le_bytes(bs[ext + 3..ext + 7].try_into().expect("4"));
                let label = text(&bs[ext + 7..ext + 18]).filter(|l| l != "NO NAME");
                return Ok(Probed {
                    kind: "vfat".into(),
                    uuid: Some(format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff)),
                    label,
                    detail: Some(fat.into()),
                });
            }
        }
    }
    // Linux swap: "SWAPSPACE2" at the end of the first 4 KiB page.
    if let Some(pg) = read(f, offset, 4096, end)? {
        if &pg[4086..4096] == b"SWAPSPACE2" {
            return Ok(Probed { kind: "swap".into(), uuid: Some(uuid_of(&pg[0x40c..0x41c])), label: text(&pg[0x41c..0x42c]), detail: None });
        }
    }
    // ISO 9660: primary volume descriptor at 32 KiB.
    if let Some(vd) = read(f, offset + 0x8000, 2048, end)? {
        if &vd[1..6] == b"CD001" {
            return Ok(Probed { kind: "iso9660".into(), uuid: None, label: text(&vd[40..72]), detail: None });
        }
    }
    let head = read(f, offset, 4096.min(size as usize), end)?.unwrap_or_default();
    let kind = if head.iter().all(|b| *b == 0) { "empty" } else { "unknown" };
    Ok(Probed { kind: kind.into(), uuid: None, label: None, detail: None })
}

impl Inspection {
    /// Human-readable table.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{}: {} bytes, GPT disk GUID {}", self.image, self.size, self.disk_guid);
        let _ = writeln!(
            s,
            "{:>3}  {:<14} {:<12} {:>12} {:>12}  {:<8} {:<38} {}",
            "#", "name", "type", "offset", "size", "fs", "fs uuid", "fs label"
        );
        for p in &self.partitions {
            let fs = &p.filesystem;
            let _ = writeln!(
                s,
                "{:>3}  {:<14} {:<12} {:>12} {:>12}  {:<8} {:<38} {}",
                p.partition.number,
                p.partition.name,
                p.type_name.clone().unwrap_or_else(|| p.partition.type_guid.to_string()),
                p.partition.offset,
                p.partition.size,
                fs.kind,
                fs.uuid.clone().unwrap_or_else(|| "-".into()),
                fs.label.clone().unwrap_or_else(|| "-".into()),
            );
        }
        s
    }
}
