//! `build-image inspect`: read an image (not its manifest) and report the
//! partition table and, for each partition, the filesystem found there with
//! its UUID and label, from the filesystem's own superblock.
//!
//! The OEM partition's files (`/config.json`, `/layers/*.json`,
//! `/config.d/*.json`) are read back from FAT (the `fatfs` crate), ext4
//! (`ext4-view`) or btrfs ([`crate::fs::btrfs::read`], our own small
//! reader: no maintained crate reads btrfs), and merged as the agent does
//! for layers 00–30.
//!
//! Layer 40 comes from the kernel command line baked into the image: the
//! `.cmdline` section of the unified kernel image `/EFI/BOOT/BOOTX64.EFI` on
//! the ESP (UEFI; the PE file read with the `object` crate through a
//! `ReadCache`, so only its headers and that section are read), and the
//! `linux` line of the config embedded in GRUB's core image in the
//! bios-boot partition, as GRUB's loader hands it to the kernel (BIOS; see
//! [`crate::boot::grub::read_config`]). Its `oem.*` keys are parsed as the
//! agent parses `/proc/cmdline` ([`oem_rules::cmdline_layer`]) and merged
//! as `40-cmdline`. When the image has both, layer 40 is the UEFI line's
//! and any difference between the parameters the two hand the kernel is
//! reported. Layer 50 (cloud metadata) exists only at boot.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::disk::gpt::ReadPartition;

pub mod config_drive;

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
    /// The kernel command line(s) the image boots with, and layer 40 from
    /// them; absent when the image has no UKI and no GRUB core image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<CmdlineReport>,
    /// The OEM configuration read back from the OEM partition, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oem: Option<OemReport>,
}

/// The kernel command lines baked into the image.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CmdlineReport {
    /// UEFI: the `.cmdline` section of the UKI on the ESP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi: Option<BootCmdline>,
    /// BIOS: the `linux` line of GRUB's embedded config, as GRUB's loader
    /// hands it to the kernel (`BOOT_IMAGE=/boot/vmlinuz …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<BootCmdline>,
    /// Which line layer 40 comes from: `uefi` when the image has one, else
    /// `bios`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oem_from: Option<String>,
    /// Layer 40: that line's `oem.*` keys as the agent merges them; absent
    /// when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oem: Option<serde_json::Value>,
    /// `oem.*` words the agent skips, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// How the UEFI and BIOS lines differ in the parameters they give the
    /// kernel (`BOOT_IMAGE` aside), when they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
    /// What could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// One boot path's kernel command line.
#[derive(Debug, Clone, Serialize)]
pub struct BootCmdline {
    /// GPT entry number of the partition it was read from.
    pub partition: u32,
    /// Where in that partition: `/EFI/BOOT/BOOTX64.EFI` or `GRUB core image`.
    pub source: String,
    pub cmdline: String,
}

/// The OEM partition's configuration as the image holds it.
#[derive(Debug, Clone, Serialize)]
pub struct OemReport {
    /// GPT entry number of the OEM partition.
    pub partition: u32,
    /// `/config.json`: the effective configuration the builder rendered.
    pub config: Option<serde_json::Value>,
    /// `/layers/*.json` file names, in merge order.
    pub layers: Vec<String>,
    /// `/config.d/*.json` file names, in merge order (layer 30).
    pub config_d: Vec<String>,
    /// Layer 40 as merged here: the `oem.*` keys of the image's kernel
    /// command line ([`CmdlineReport::oem`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<serde_json::Value>,
    /// `/config.json` with the valid `/config.d/*.json` and the image's
    /// kernel command line merged over it: what the agent has before cloud
    /// metadata (layer 50).
    pub effective: Option<serde_json::Value>,
    /// Each key of `effective`, its value and the layer that set it.
    pub keys: Vec<OemKey>,
    /// `/config.d` files the agent would skip, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Why the configuration could not be read, or a mismatch between
    /// `/config.json` and the merge of the layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OemKey {
    pub key: String,
    pub value: serde_json::Value,
    pub layer: String,
}

const TYPE_NAMES: [&str; 11] = ["esp", "bios-boot", "linux", "root-x86-64", "usr-x86-64", "swap", "home", "srv", "var", "tmp", "xbootldr"];

fn type_name(g: &uuid::Uuid) -> Option<String> {
    TYPE_NAMES.iter().find(|n| crate::recipe::partition_type_guid(n).as_ref() == Some(g)).map(|s| s.to_string())
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
    let cmdline = read_cmdlines(&f, &out);
    let layer40 = cmdline.as_ref().and_then(|c| c.oem.as_ref());
    let oem = out.iter().find(|p| p.filesystem.label.as_deref() == Some(oem_rules::OEM_LABEL)).map(|p| read_oem(&f, p, layer40));
    Ok(Inspection { image: shown, size, disk_guid: guid.to_string(), partitions: out, cmdline, oem })
}

/// Where the builder puts the UKI on the ESP.
const UKI_PATH: &str = "/EFI/BOOT/BOOTX64.EFI";

/// The kernel command lines of the image's UKI and GRUB core image, and
/// layer 40 from them; `None` when it has neither.
fn read_cmdlines(f: &File, parts: &[InspectedPartition]) -> Option<CmdlineReport> {
    let mut r = CmdlineReport::default();
    for p in parts.iter().filter(|p| p.type_name.as_deref() == Some("esp") && p.filesystem.kind == "vfat") {
        match uki_cmdline(f, p.partition.offset, p.partition.size) {
            Ok(Some(c)) => {
                r.uefi = Some(BootCmdline { partition: p.partition.number, source: UKI_PATH.into(), cmdline: c });
                break;
            }
            Ok(None) => {}
            Err(e) => r.problems.push(format!("partition {} {UKI_PATH}: {e}", p.partition.number)),
        }
    }
    for p in parts.iter().filter(|p| p.type_name.as_deref() == Some("bios-boot")) {
        let n = p.partition.number;
        match crate::boot::grub::read_config(f, p.partition.offset, p.partition.size) {
            Ok(Some(config)) => match crate::boot::grub::linux_cmdline(&config) {
                Some(c) => {
                    r.bios = Some(BootCmdline { partition: n, source: "GRUB core image".into(), cmdline: c });
                    break;
                }
                None => r.problems.push(format!("partition {n}: GRUB's embedded config has no `linux` line")),
            },
            Ok(None) => {}
            Err(e) => r.problems.push(format!("partition {n}: reading GRUB's core image: {e}")),
        }
    }
    let (from, line) = match (&r.uefi, &r.bios) {
        (Some(u), _) => ("uefi", u.cmdline.clone()),
        (None, Some(b)) => ("bios", b.cmdline.clone()),
        (None, None) if r.problems.is_empty() => return None,
        (None, None) => return Some(r),
    };
    r.oem_from = Some(from.into());
    (r.oem, r.skipped) = oem_rules::cmdline_layer(&line);
    if let (Some(u), Some(b)) = (&r.uefi, &r.bios) {
        r.mismatch = mismatch(&u.cmdline, &b.cmdline);
    }
    Some(r)
}

/// The parameters only the UEFI line has and those only the BIOS line has
/// (`BOOT_IMAGE`, which GRUB adds, aside; both empty when only the order
/// differs), or `None` when the kernel gets the same ones.
pub(crate) fn param_diff(uefi: &str, bios: &str) -> Option<(String, String)> {
    let params = |s: &str| -> Vec<String> {
        oem_rules::kernel_params(s)
            .into_iter()
            .filter(|(k, _)| k != "BOOT_IMAGE")
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k,
            })
            .collect()
    };
    let (u, b) = (params(uefi), params(bios));
    if u == b {
        return None;
    }
    let only = |a: &[String], b: &[String]| a.iter().filter(|x| !b.contains(x)).cloned().collect::<Vec<_>>().join(" ");
    Some((only(&u, &b), only(&b, &u)))
}

/// How the parameters of the UEFI and BIOS lines differ, or `None` when
/// the kernel gets the same ones.
fn mismatch(uefi: &str, bios: &str) -> Option<String> {
    let (ou, ob) = param_diff(uefi, bios)?;
    let mut m = if ou.is_empty() && ob.is_empty() {
        "the UEFI and BIOS command lines give the kernel the same parameters in a different order".to_string()
    } else {
        format!("the kernel gets `{ou}` under UEFI but `{ob}` under BIOS (a double quote inside a parameter does not survive GRUB's config, and GRUB backslash-escapes \\ and ')")
    };
    if oem_rules::cmdline_layer(uefi).0 != oem_rules::cmdline_layer(bios).0 {
        m.push_str("; their oem.* keys differ: layer 40 here is the UEFI one");
    }
    Some(m)
}

/// The `.cmdline` section of the UKI on the FAT ESP at `offset`; `None`
/// when there is no UKI.
fn uki_cmdline(f: &File, offset: u64, len: u64) -> Result<Option<String>, String> {
    use object::{Object, ObjectSection};
    let part = ReadOnlyPart { f, offset, len, pos: 0 };
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new()).map_err(|e| format!("reading the ESP's FAT: {e}"))?;
    let Ok(file) = fs.root_dir().open_file(UKI_PATH.trim_start_matches('/')) else { return Ok(None) };
    let cache = object::ReadCache::new(file);
    let pe = object::File::parse(&cache).map_err(|e| format!("not a PE image: {e}"))?;
    if !matches!(pe.format(), object::BinaryFormat::Pe) {
        return Err(format!("a {:?} file, not a PE image", pe.format()));
    }
    let sec = pe.section_by_name(".cmdline").ok_or("no .cmdline section: not a unified kernel image")?;
    let data = sec.data().map_err(|e| format!("reading its .cmdline section: {e}"))?;
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    Ok(Some(String::from_utf8_lossy(&data[..end]).trim().to_string()))
}

/// Read `/config.json`, `/layers/*.json` and `/config.d/*.json` from the OEM
/// partition and recompute which layer set each key.
fn read_oem(f: &File, p: &InspectedPartition, layer40: Option<&serde_json::Value>) -> OemReport {
    let mut r = OemReport {
        partition: p.partition.number,
        config: None,
        layers: Vec::new(),
        config_d: Vec::new(),
        cmdline: None,
        effective: None,
        keys: Vec::new(),
        skipped: Vec::new(),
        problem: None,
    };
    let (offset, len) = (p.partition.offset, p.partition.size);
    let files = match p.filesystem.kind.as_str() {
        "vfat" => read_oem_files(&FatOem::open(f, offset, len)),
        "ext2" | "ext3" | "ext4" => Ext4Oem::open(f, offset, len).and_then(|fs| read_oem_files(&fs)),
        "btrfs" => crate::fs::btrfs::read::Reader::open(f, offset, len)
            .map_err(|e| format!("reading the OEM partition's btrfs: {e}"))
            .and_then(|fs| read_oem_files(&BtrfsOem(fs))),
        other => Err(format!("the OEM partition holds {other}; inspect reads vfat, ext4 and btrfs")),
    };
    let files = match files {
        Ok(x) => x,
        Err(e) => {
            r.problem = Some(e);
            return r;
        }
    };
    let parse = |name: &str, b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).map_err(|e| format!("{name} is not valid JSON: {e}"));
    let mut parsed = Vec::new();
    for (name, b) in &files.layers {
        match parse(&format!("/layers/{name}"), b) {
            Ok(v) => parsed.push((name.clone(), v)),
            Err(e) => {
                r.problem = Some(e);
                return r;
            }
        }
    }
    r.layers = files.layers.iter().map(|(n, _)| n.clone()).collect();
    let (merged, _) = oem_rules::merge_layers(&parsed);
    match files.config.as_deref().map(|b| parse("/config.json", b)) {
        Some(Ok(c)) => {
            if c != merged {
                r.problem = Some("/config.json differs from the merge of /layers/*.json: it was edited after the build".into());
            }
            r.config = Some(c);
        }
        Some(Err(e)) => r.problem = Some(e),
        None => r.problem = Some("the OEM partition has no /config.json".into()),
    }
    // Provenance as the agent computes it: per layer when the layers match
    // config.json, else config.json as one layer; then layer 30.
    let mut all: Vec<(String, serde_json::Value)> = match &r.config {
        Some(c) if *c != merged => vec![("config.json".into(), c.clone())],
        _ => parsed,
    };
    for (name, b) in &files.config_d {
        r.config_d.push(name.clone());
        match parse(&format!("/config.d/{name}"), b) {
            Ok(v) if v.is_object() => all.push((format!("30-config.d-{name}"), v)),
            Ok(_) => r.skipped.push(format!("/config.d/{name} is not a JSON object")),
            Err(e) => r.skipped.push(e),
        }
    }
    if let Some(v) = layer40 {
        all.push(("40-cmdline".into(), v.clone()));
        r.cmdline = Some(v.clone());
    }
    let (effective, prov) = oem_rules::merge_layers(&all);
    for (key, value) in oem_rules::leaves(&effective) {
        let layer = prov.get(&key).cloned().unwrap_or_else(|| "config.json".into());
        r.keys.push(OemKey { key, value, layer });
    }
    r.effective = Some(effective);
    r
}

/// Read-only access to the few files of an OEM partition.
trait OemFs {
    /// A file's bytes; `Ok(None)` if there is no such file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
    /// The names of the regular files in a directory (none if it is missing).
    fn list(&self, dir: &str) -> Result<Vec<String>, String>;
}

/// The OEM files, each directory's `*.json` in byte order of the name.
struct OemFiles {
    config: Option<Vec<u8>>,
    layers: Vec<(String, Vec<u8>)>,
    config_d: Vec<(String, Vec<u8>)>,
}

/// Largest OEM file read.
const MAX_OEM_FILE: u64 = 16 << 20;

fn read_oem_files(fs: &dyn OemFs) -> Result<OemFiles, String> {
    let dir = |d: &str| -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut names: Vec<String> = fs.list(d)?.into_iter().filter(|n| n.ends_with(".json") && !n.starts_with('.')).collect();
        names.sort();
        names.into_iter().map(|n| Ok((n.clone(), fs.read(&format!("{d}/{n}"))?.unwrap_or_default()))).collect()
    };
    Ok(OemFiles { config: fs.read("/config.json")?, layers: dir("/layers")?, config_d: dir("/config.d")? })
}

/// A read-only view of a partition for the `fatfs` crate: writes fail.
struct ReadOnlyPart<'a> {
    f: &'a File,
    offset: u64,
    len: u64,
    pos: u64,
}

impl std::io::Read for ReadOnlyPart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let k = self.f.read_at(&mut buf[..n], self.offset + self.pos)?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl std::io::Write for ReadOnlyPart<'_> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "inspect never writes to the image"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for ReadOnlyPart<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let p = match to {
            std::io::SeekFrom::Start(p) => p as i128,
            std::io::SeekFrom::End(d) => self.len as i128 + d as i128,
            std::io::SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if p < 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"));
        }
        self.pos = p as u64;
        Ok(self.pos)
    }
}

/// FAT, through `fatfs` (opened once per call: the partition is tiny).
struct FatOem<'a> {
    f: &'a File,
    offset: u64,
    len: u64,
}

impl<'a> FatOem<'a> {
    fn open(f: &'a File, offset: u64, len: u64) -> Self {
        FatOem { f, offset, len }
    }

    fn fs(&self) -> Result<fatfs::FileSystem<ReadOnlyPart<'a>>, String> {
        let part = ReadOnlyPart { f: self.f, offset: self.offset, len: self.len, pos: 0 };
        fatfs::FileSystem::new(part, fatfs::FsOptions::new()).map_err(|e| format!("reading the OEM partition's FAT: {e}"))
    }
}

impl OemFs for FatOem<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        use std::io::Read;
        let fs = self.fs()?;
        let Ok(file) = fs.root_dir().open_file(path.trim_start_matches('/')) else { return Ok(None) };
        let mut b = Vec::new();
        file.take(MAX_OEM_FILE).read_to_end(&mut b).map_err(|e| format!("reading {path}: {e}"))?;
        Ok(Some(b))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        let fs = self.fs()?;
        let Ok(d) = fs.root_dir().open_dir(dir.trim_start_matches('/')) else { return Ok(Vec::new()) };
        let mut v = Vec::new();
        for e in d.iter() {
            let e = e.map_err(|e| format!("listing {dir}: {e}"))?;
            if e.is_file() {
                v.push(e.file_name());
            }
        }
        Ok(v)
    }
}

/// ext2/3/4, through `ext4-view`.
struct Ext4Oem(ext4_view::Ext4);

/// `ext4-view`'s reader over a partition of the image.
struct PartReader {
    f: File,
    offset: u64,
    len: u64,
}

impl ext4_view::Ext4Read for PartReader {
    fn read(&mut self, start: u64, dst: &mut [u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        if start + dst.len() as u64 > self.len {
            return Err(format!("read of {} bytes at {start} past the partition end {}", dst.len(), self.len).into());
        }
        Ok(self.f.read_exact_at(dst, self.offset + start)?)
    }
}

impl Ext4Oem {
    fn open(f: &File, offset: u64, len: u64) -> Result<Self, String> {
        let f = f.try_clone().map_err(|e| e.to_string())?;
        ext4_view::Ext4::load(Box::new(PartReader { f, offset, len }))
            .map(Ext4Oem)
            .map_err(|e| format!("reading the OEM partition's ext4: {e}"))
    }
}

impl OemFs for Ext4Oem {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match self.0.read(path) {
            Ok(b) if b.len() as u64 <= MAX_OEM_FILE => Ok(Some(b)),
            Ok(b) => Err(format!("{path} is {} bytes, larger than an OEM file may be", b.len())),
            Err(ext4_view::Ext4Error::NotFound) => Ok(None),
            Err(e) => Err(format!("reading {path}: {e}")),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        let rd = match self.0.read_dir(dir) {
            Ok(rd) => rd,
            Err(ext4_view::Ext4Error::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(format!("listing {dir}: {e}")),
        };
        let mut v = Vec::new();
        for e in rd {
            let e = e.map_err(|e| format!("listing {dir}: {e}"))?;
            let regular = e.file_type().map(|t| t.is_regular_file()).unwrap_or(false);
            if let (true, Ok(name)) = (regular, e.file_name().as_str()) {
                v.push(name.to_string());
            }
        }
        Ok(v)
    }
}

/// btrfs, through [`crate::fs::btrfs::read`].
struct BtrfsOem<'a>(crate::fs::btrfs::read::Reader<'a>);

impl OemFs for BtrfsOem<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.read_file(path, MAX_OEM_FILE).map_err(|e| format!("reading {path}: {e}"))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        self.0.list_files(dir).map_err(|e| format!("listing {dir}: {e}"))
    }
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
            let kind = if incompat & 0x40 != 0 {
                "ext4"
            } else if compat & 0x4 != 0 {
                "ext3"
            } else {
                "ext2"
            };
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
            return Ok(Probed {
                kind: "swap".into(),
                uuid: Some(uuid_of(&pg[0x40c..0x41c])),
                label: text(&pg[0x41c..0x42c]),
                detail: None,
            });
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
            "{:>3}  {:<14} {:<12} {:>12} {:>12}  {:<8} {:<38} fs label",
            "#", "name", "type", "offset", "size", "fs", "fs uuid"
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
        if let Some(c) = &self.cmdline {
            let _ = writeln!(s, "\nKernel command line:");
            for (name, b) in [("UEFI", &c.uefi), ("BIOS", &c.bios)] {
                if let Some(b) = b {
                    let _ = writeln!(s, "  {name} (partition {}, {}): {}", b.partition, b.source, b.cmdline);
                }
            }
            if let Some(m) = &c.mismatch {
                let _ = writeln!(s, "  note: {m}");
            }
            for p in &c.problems {
                let _ = writeln!(s, "  problem: {p}");
            }
            match (&c.oem, &c.oem_from) {
                (Some(v), Some(from)) => {
                    let _ = writeln!(s, "  layer 40 (oem.* of the {} line): {v}", from.to_uppercase());
                }
                (None, Some(from)) => {
                    let _ = writeln!(s, "  layer 40: none (no oem.* keys on the {} line)", from.to_uppercase());
                }
                _ => {}
            }
            for k in &c.skipped {
                let _ = writeln!(s, "  skipped at boot: {k}");
            }
        }
        if let Some(o) = &self.oem {
            let mut names = o.layers.clone();
            names.extend(o.config_d.iter().map(|n| format!("config.d/{n}")));
            if o.cmdline.is_some() {
                names.push("40-cmdline".into());
            }
            let _ = writeln!(
                s,
                "\nOEM configuration (partition {}; layers: {}; a boot loader's extra oem.* and cloud metadata apply at boot):",
                o.partition,
                names.join(", ")
            );
            if let Some(p) = &o.problem {
                let _ = writeln!(s, "  note: {p}");
            }
            for k in &o.skipped {
                let _ = writeln!(s, "  skipped at boot: {k}");
            }
            let w = o.keys.iter().map(|k| k.key.len()).max().unwrap_or(3).max(3);
            let _ = writeln!(s, "  {:<w$}  {:<20}  value", "key", "set by");
            for k in &o.keys {
                let _ = writeln!(s, "  {:<w$}  {:<20}  {}", k.key, k.layer, k.value);
            }
        }
        s
    }
}
