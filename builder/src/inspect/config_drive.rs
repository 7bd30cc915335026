//! `build-image inspect --config-drive DRIVE`: what a machine would find on
//! an OpenStack config drive (`config-2`), read as the agent reads it, so a
//! user can check a drive before booting with it.
//!
//! The drive is a whole-device filesystem: vfat (read with the `fatfs`
//! crate, as the OEM partition is) or ISO 9660 as Nova writes it
//! (`genisoimage -J -r`), read by the small [`Iso`] reader below: the
//! primary volume descriptor, directory records, and Rock Ridge `NM`
//! names (else the ISO name without its `;1`). It is ours because the
//! crates that read ISO 9660 do not fit: `cdfs` depends on `fuser`
//! unconditionally (libfuse3 on the host to build), and `hadris-iso` and
//! `iso9660-forensic` bring frameworks of their own for what is here two
//! directory lookups. From `openstack/latest/` it reports the files,
//! `meta_data.json` (uuid, name, hostname, the number of public keys),
//! `network_data.json` (each network's type and address) and `user_data`:
//! its kind, told apart by [`provision::userdata::detect`] exactly as the
//! agent does, and the verdict of the same checks the agent runs at boot
//! (Ignition: [`provision::ignition::check`], whose errors stop a boot;
//! cloud-config: [`provision::cloudconfig::parse`], whose diagnostics are
//! logged while the rest is applied). Limits are the agent's: a
//! `user_data` over 16 MiB or a JSON document over 4 MiB is reported as
//! ignored, as the agent ignores it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{probe, ReadOnlyPart};

/// The agent's limits.
const MAX_USER_DATA: u64 = provision::userdata::MAX_USER_DATA as u64;
const MAX_DOCUMENT: u64 = provision::userdata::MAX_DOCUMENT as u64;

/// What `inspect --config-drive` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigDriveReport {
    pub drive: String,
    /// `vfat` or `iso9660`.
    pub filesystem: String,
    pub label: Option<String>,
    /// The files under `openstack/latest/`, sorted.
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<MetaData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_data: Option<NetworkData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<UserData>,
    /// What could not be read or parsed, by file.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetaData {
    pub uuid: Option<String>,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub public_keys: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkData {
    pub links: usize,
    /// `ipv4 192.168.0.10/255.255.255.0 on tap0`, `ipv4_dhcp on tap0`, …
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserData {
    /// `ignition`, `cloud-config`, `script`, `empty`, or what it looks like.
    pub kind: String,
    pub bytes: u64,
    pub sha256: String,
    /// Whether the agent would apply it: `None` for kinds it does not check.
    pub valid: Option<bool>,
    /// Ignition: the spec version the config declares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Errors (Ignition: the boot stops; cloud-config: the entry is skipped).
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// What it would do, in a few words per section.
    pub summary: Vec<String>,
}

/// Read-only access to the drive's files.
trait DriveFs {
    /// Up to `max + 1` bytes of a file; `Ok(None)` when it is absent.
    fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, String>;
    fn list(&self, dir: &str) -> Result<Vec<String>, String>;
}

struct Fat<'a>(fatfs::FileSystem<ReadOnlyPart<'a>>);

impl DriveFs for Fat<'_> {
    fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
        let Ok(file) = self.0.root_dir().open_file(path) else { return Ok(None) };
        let mut b = Vec::new();
        file.take(max + 1).read_to_end(&mut b).map_err(|e| format!("reading {path}: {e}"))?;
        Ok(Some(b))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        let Ok(d) = self.0.root_dir().open_dir(dir) else { return Ok(Vec::new()) };
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

/// A read-only ISO 9660 reader, just enough for a config drive (see the
/// module docs). Every offset it follows is bounds-checked against the
/// file, and a directory is read only up to [`MAX_DIR`].
struct Iso {
    f: File,
    size: u64,
    block: u64,
    root: IsoRecord,
}

#[derive(Debug, Clone)]
struct IsoRecord {
    name: String,
    lba: u64,
    len: u64,
    dir: bool,
}

/// The largest directory the reader follows (a config drive has a few files).
const MAX_DIR: u64 = 1 << 20;

impl Iso {
    fn open(f: File, size: u64) -> Result<Iso, String> {
        let mut pvd = [0u8; 2048];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut pvd, 16 * 2048).map_err(|e| format!("reading its volume descriptor: {e}"))?;
        if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
            return Err("no primary volume descriptor at 32 KiB".into());
        }
        let block = u16::from_le_bytes([pvd[128], pvd[129]]) as u64;
        if !matches!(block, 512 | 1024 | 2048) {
            return Err(format!("logical block size {block}"));
        }
        let root = parse_record(&pvd[156..190]).ok_or("a broken root directory record")?;
        Ok(Iso { f, size, block, root })
    }

    fn read_extent(&self, r: &IsoRecord, max: u64) -> Result<Vec<u8>, String> {
        let at = r.lba.checked_mul(self.block).filter(|a| a.saturating_add(r.len) <= self.size);
        let at = at.ok_or_else(|| format!("{}: its extent lies outside the image", r.name))?;
        let mut b = vec![0u8; r.len.min(max) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&self.f, &mut b, at).map_err(|e| format!("reading {}: {e}", r.name))?;
        Ok(b)
    }

    fn entries(&self, dir: &IsoRecord) -> Result<Vec<IsoRecord>, String> {
        let data = self.read_extent(dir, MAX_DIR)?;
        let mut out = Vec::new();
        let mut i = 0usize;
        while i < data.len() {
            let len = data[i] as usize;
            if len == 0 {
                // Records never cross a block: go on at the next one.
                i = (i / self.block as usize + 1) * self.block as usize;
                continue;
            }
            let Some(rec) = data.get(i..i + len) else { break };
            if let Some(r) = parse_record(rec) {
                if r.name != "." && r.name != ".." {
                    out.push(r);
                }
            }
            i += len;
        }
        Ok(out)
    }

    fn find(&self, path: &str) -> Result<Option<IsoRecord>, String> {
        let mut cur = self.root.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !cur.dir {
                return Ok(None);
            }
            match self.entries(&cur)?.into_iter().find(|e| e.name == part) {
                Some(e) => cur = e,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }
}

/// One directory record: its Rock Ridge name (`NM`) if it has one, else
/// the ISO name without `;1` and a trailing dot; `.`/`..` for the two
/// special entries.
fn parse_record(r: &[u8]) -> Option<IsoRecord> {
    if r.len() < 34 {
        return None;
    }
    let lba = u32::from_le_bytes(r[2..6].try_into().ok()?) as u64;
    let len = u32::from_le_bytes(r[10..14].try_into().ok()?) as u64;
    let dir = r[25] & 2 != 0;
    let n = r[32] as usize;
    let id = r.get(33..33 + n)?;
    let iso_name = match id {
        [0] => ".".to_string(),
        [1] => "..".to_string(),
        _ => {
            let s = String::from_utf8_lossy(id);
            let s = s.split(';').next().unwrap_or_default();
            s.strip_suffix('.').unwrap_or(s).to_string()
        }
    };
    // The system use area: SUSP entries (signature, length, version, data).
    let mut su = 33 + n + (1 - n % 2);
    let mut nm = Vec::new();
    while su + 4 <= r.len() {
        let l = r[su + 2] as usize;
        if l < 4 || su + l > r.len() {
            break;
        }
        if &r[su..su + 2] == b"NM" && l >= 5 && r[su + 4] & 0b110 == 0 {
            nm.extend_from_slice(&r[su + 5..su + l]);
        }
        su += l;
    }
    let name = if nm.is_empty() || matches!(iso_name.as_str(), "." | "..") { iso_name } else { String::from_utf8_lossy(&nm).into_owned() };
    Some(IsoRecord { name, lba, len, dir })
}

impl DriveFs for Iso {
    fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
        match self.find(path)? {
            Some(r) if !r.dir => Ok(Some(self.read_extent(&r, max + 1)?)),
            _ => Ok(None),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        match self.find(dir)? {
            Some(d) if d.dir => Ok(self.entries(&d)?.into_iter().filter(|e| !e.dir).map(|e| e.name).collect()),
            _ => Ok(Vec::new()),
        }
    }
}

const LATEST: &str = "openstack/latest";

/// Read a config drive (see the module docs).
pub fn inspect(path: &Path) -> Result<ConfigDriveReport, crate::Error> {
    let shown = path.display().to_string();
    let f = File::open(path).map_err(|e| crate::Error::io(format!("opening the config drive {shown}"), e))?;
    let size = f.metadata().map_err(|e| crate::Error::io(format!("reading {shown}"), e))?.len();
    let probed = probe(&f, 0, size).map_err(|e| crate::Error::io(format!("reading {shown}"), e))?;
    let not_a_drive = |why: String| {
        crate::Error::Other(format!(
            "{shown} is not a config drive: {why}; a config drive is a whole-device vfat or ISO 9660 filesystem labelled config-2 (`mkfs.vfat -n config-2`, `genisoimage -J -r -V config-2`)"
        ))
    };
    let label = probed.label.clone().map(|l| l.trim().to_string());
    let drive: Box<dyn DriveFs + '_> = match probed.kind.as_str() {
        "vfat" => {
            let part = ReadOnlyPart { f: &f, offset: 0, len: size, pos: 0 };
            Box::new(Fat(fatfs::FileSystem::new(part, fatfs::FsOptions::new()).map_err(|e| not_a_drive(format!("its FAT: {e}")))?))
        }
        "iso9660" => {
            let f2 = f.try_clone().map_err(|e| crate::Error::io(format!("reading {shown}"), e))?;
            Box::new(Iso::open(f2, size).map_err(|e| not_a_drive(format!("its ISO 9660: {e}")))?)
        }
        other => return Err(not_a_drive(format!("it holds {other}"))),
    };
    let mut problems = Vec::new();
    if !label.as_deref().is_some_and(|l| l.eq_ignore_ascii_case("config-2")) {
        problems.push(format!(
            "the label is {:?}, not config-2: the agent does not take this drive for a config drive",
            label.as_deref().unwrap_or("")
        ));
    }
    let mut files = drive.list(LATEST).unwrap_or_else(|e| {
        problems.push(e);
        Vec::new()
    });
    files.sort();
    if files.is_empty() {
        problems.push(format!("no files under {LATEST}/"));
    }
    let mut read = |name: &str, max: u64| -> Option<Vec<u8>> {
        match drive.read(&format!("{LATEST}/{name}"), max) {
            Ok(Some(b)) if b.len() as u64 > max => {
                problems.push(format!("{LATEST}/{name}: over the agent's limit of {max} bytes: the agent ignores it"));
                None
            }
            Ok(b) => b,
            Err(e) => {
                problems.push(e);
                None
            }
        }
    };
    let meta = read("meta_data.json", MAX_DOCUMENT);
    let net = read("network_data.json", MAX_DOCUMENT);
    let ud = read("user_data", MAX_USER_DATA);
    let mut json = |name: &str, b: Option<Vec<u8>>| -> Option<serde_json::Value> {
        let b = b?;
        match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(v) if v.is_object() => Some(v),
            Ok(_) => {
                problems.push(format!("{LATEST}/{name}: not a JSON object"));
                None
            }
            Err(e) => {
                problems.push(format!("{LATEST}/{name}: not valid JSON: {e}"));
                None
            }
        }
    };
    let meta_data = json("meta_data.json", meta).map(|v| {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        MetaData {
            uuid: s("uuid"),
            name: s("name"),
            hostname: s("hostname"),
            public_keys: v.get("public_keys").and_then(|k| k.as_object()).map_or(0, |k| k.len()),
        }
    });
    let network_data = json("network_data.json", net).map(|v| {
        let links = v.get("links").and_then(|l| l.as_array()).map_or(0, Vec::len);
        let networks = v
            .get("networks")
            .and_then(|n| n.as_array())
            .map(|ns| {
                ns.iter()
                    .map(|n| {
                        let s = |k: &str| n.get(k).and_then(|x| x.as_str()).unwrap_or("");
                        let addr = match (s("ip_address"), s("netmask")) {
                            ("", _) => String::new(),
                            (a, "") => format!(" {a}"),
                            (a, m) => format!(" {a}/{m}"),
                        };
                        format!("{}{addr} on {}", s("type"), s("link"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        NetworkData { links, networks }
    });
    let user_data = ud.map(|b| user_data(&b));
    Ok(ConfigDriveReport { drive: shown, filesystem: probed.kind, label, files, meta_data, network_data, user_data, problems })
}

/// The kind of `user_data` and the agent's verdict on it.
pub fn user_data(b: &[u8]) -> UserData {
    use provision::userdata::Kind;
    let kind = provision::userdata::detect(b);
    let mut u = UserData {
        kind: kind.name().to_string(),
        bytes: b.len() as u64,
        sha256: hex::encode(Sha256::digest(b)),
        valid: None,
        version: None,
        errors: Vec::new(),
        warnings: Vec::new(),
        summary: Vec::new(),
    };
    match kind {
        Kind::Ignition => match provision::ignition::check(b) {
            Ok(p) => {
                let c = &p.config;
                u.valid = Some(true);
                u.version = Some(c.version.clone());
                u.warnings = p.warnings.iter().map(|d| d.to_string()).collect();
                let n = |what: &str, k: usize| (k > 0).then(|| format!("{k} {what}"));
                u.summary = [
                    n("file(s)", c.storage.files.len()),
                    n("directory(ies)", c.storage.directories.len()),
                    n("link(s)", c.storage.links.len()),
                    n("filesystem(s)", c.storage.filesystems.len()),
                    n("unit(s)", c.systemd.units.len()),
                    n("user(s)", c.passwd.users.len()),
                    n("group(s)", c.passwd.groups.len()),
                ]
                .into_iter()
                .flatten()
                .collect();
            }
            Err(e) => {
                u.valid = Some(false);
                u.errors = e.errors().map(|d| d.to_string()).collect();
                u.warnings =
                    e.diagnostics.iter().filter(|d| d.severity != provision::ignition::Severity::Error).map(|d| d.to_string()).collect();
            }
        },
        Kind::CloudConfig => match provision::cloudconfig::parse(b) {
            Ok(c) => {
                use provision::cloudconfig::Severity;
                u.errors = c.diagnostics.iter().filter(|d| d.severity == Severity::Error).map(|d| d.to_string()).collect();
                u.warnings = c.diagnostics.iter().filter(|d| d.severity != Severity::Error).map(|d| d.to_string()).collect();
                u.valid = Some(u.errors.is_empty());
                let n = |what: &str, k: usize| (k > 0).then(|| format!("{k} {what}"));
                u.summary = [
                    c.hostname.as_ref().map(|h| format!("hostname {h}")),
                    n("file(s)", c.write_files.len()),
                    n("user(s)", c.users.len()),
                    n("unit(s)", c.units.len()),
                    n("etcd setting(s)", c.etcd.len()),
                    n("bootcmd command(s)", c.bootcmd.len()),
                    n("runcmd command(s)", c.runcmd.len()),
                    n("authorized key(s)", c.ssh_authorized_keys.len()),
                ]
                .into_iter()
                .flatten()
                .collect();
            }
            Err(e) => {
                u.valid = Some(false);
                u.errors = vec![e.to_string()];
            }
        },
        Kind::Script => {
            let line = b.split(|&c| c == b'\n').next().unwrap_or_default();
            u.summary = vec![format!("runs once on the first boot: {}", String::from_utf8_lossy(line).trim())];
        }
        Kind::Empty => u.summary = vec!["nothing to do".into()],
        Kind::Unknown(_) => u.summary = vec!["ignored by the agent".into()],
    }
    u
}

impl ConfigDriveReport {
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "config drive {}: {}, label {:?}", self.drive, self.filesystem, self.label.as_deref().unwrap_or(""));
        let _ = writeln!(s, "  {LATEST}/: {}", if self.files.is_empty() { "(none)".to_string() } else { self.files.join(" ") });
        if let Some(m) = &self.meta_data {
            let o = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "  meta_data.json: uuid {}, name {}, hostname {}, {} public key(s)",
                o(&m.uuid),
                o(&m.name),
                o(&m.hostname),
                m.public_keys
            );
        }
        if let Some(n) = &self.network_data {
            let _ = writeln!(s, "  network_data.json: {} link(s); {}", n.links, n.networks.join("; "));
        }
        if let Some(u) = &self.user_data {
            let verdict = match u.valid {
                Some(true) => "valid",
                Some(false) => "INVALID",
                None => "not checked",
            };
            let version = u.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
            let _ = writeln!(s, "  user_data: {}{version}, {} bytes, sha256 {}, {verdict}", u.kind, u.bytes, u.sha256);
            if !u.summary.is_empty() {
                let _ = writeln!(s, "    {}", u.summary.join(", "));
            }
            for e in &u.errors {
                let _ = writeln!(s, "    error: {e}");
            }
            for w in &u.warnings {
                let _ = writeln!(s, "    warning: {w}");
            }
        }
        for p in &self.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_kinds_and_verdicts() {
        let u = user_data(br#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,x"}}]}}"#);
        assert_eq!((u.kind.as_str(), u.valid, u.version.as_deref()), ("ignition", Some(true), Some("3.3.0")));
        assert_eq!(u.summary, ["1 file(s)"]);
        let u = user_data(br#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"relative"}]}}"#);
        assert_eq!(u.valid, Some(false));
        assert!(u.errors.iter().any(|e| e.contains("storage.files[0].path")), "{:?}", u.errors);
        let u = user_data(b"#cloud-config\nhostname: node01\nwrite_files: 5\n");
        assert_eq!((u.kind.as_str(), u.valid), ("cloud-config", Some(false)));
        assert!(u.summary.contains(&"hostname node01".to_string()), "{:?}", u.summary);
        assert!(u.errors.iter().any(|e| e.starts_with("write_files")), "{:?}", u.errors);
        let u = user_data(b"#cloud-config\nusers: [\n");
        assert_eq!(u.valid, Some(false));
        assert!(u.errors[0].contains("not valid YAML"), "{:?}", u.errors);
        let u = user_data(b"#!/bin/sh\necho hi\n");
        assert_eq!((u.kind.as_str(), u.valid), ("script", None));
        assert_eq!(u.summary, ["runs once on the first boot: #!/bin/sh"]);
        assert_eq!(user_data(b"").kind, "empty");
        assert_eq!(u.sha256, hex::encode(Sha256::digest(b"#!/bin/sh\necho hi\n")));
    }
}
