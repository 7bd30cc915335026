//! Configure the guest from the cloud (OpenStack): network, hostname, SSH
//! keys, user data.
//!
//! Sources, in order; each one that is missing or bad is logged with the
//! reason and the next is used, so the machine stays reachable:
//!
//! 1. a **config drive**: a block device whose filesystem (vfat or iso9660)
//!    is labelled `config-2`, mounted read-only: `openstack/latest/`
//!    `meta_data.json`, `network_data.json`, `user_data`;
//! 2. the **metadata service** `http://169.254.169.254/openstack/latest/…`,
//!    reached after DHCPv4 on the first Ethernet link;
//! 3. the OEM configuration's network (layers 00–40, [`crate::oem`]; the
//!    shape of `network_data.json`, where `"link": "*"` means every NIC
//!    without a network of its own, [`net::every`]);
//! 4. DHCPv4 on the first Ethernet link.
//!
//! What the cloud said becomes OEM layer 50 (`hostname`,
//! `ssh_authorized_keys`, `network`); [`apply_identity`] then sets the
//! hostname and SSH keys from the effective configuration.
//!
//! `agent.cloud=off` on the kernel command line (or `"cloud": false` in the
//! OEM configuration) skips the network and layer 50. The parsing here (meta_data.json, oem.json,
//! /etc/passwd, HTTP responses, ISO 9660 labels) is pure and unit-tested.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::MountFlags;
use serde::Deserialize;

use crate::net::{self, netlink::Rtnl, Applied};
use crate::{log, probe};

pub const OEM_JSON: &str = "/etc/agent/oem.json";
pub const USER_DATA: &str = "/run/agent/user_data";
/// The limits, shared with the builder's `inspect --config-drive`.
pub use provision::userdata::{MAX_DOCUMENT, MAX_USER_DATA};
/// Where [`USER_DATA`] came from (`config drive` or `metadata service`).
pub const USER_DATA_SOURCE: &str = "/run/agent/user_data.source";
const DRIVE_MOUNT: &str = "/run/agent/config-drive";
const METADATA: &str = "169.254.169.254:80";
/// One metadata request (connect, ask, the whole answer) gets at most
/// this long: the 2 s read timeout alone would let a service that drips a
/// byte a second (a slow loris) hold the boot for as long as it likes.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// All requests to the metadata service together, retries included, get
/// at most this long; what is not fetched by then is logged and skipped.
const METADATA_BUDGET: Duration = Duration::from_secs(20);

// ------------------------------------------------------------ pure parsing

/// What the agent uses from `meta_data.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaData {
    pub uuid: Option<String>,
    /// `hostname`, else `name`.
    pub hostname: Option<String>,
    /// `public_keys` values, in key-name order.
    pub keys: Vec<String>,
}

pub fn parse_meta_data(json: &str) -> Result<MetaData, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not valid meta_data JSON: {e}"))?;
    let o = v.as_object().ok_or("meta_data.json is not a JSON object")?;
    let s = |k: &str| o.get(k).and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let mut keys = Vec::new();
    match o.get("public_keys") {
        // serde_json's map is sorted by key name: a stable order.
        Some(serde_json::Value::Object(m)) => keys.extend(m.values().filter_map(|v| v.as_str()).map(|k| k.trim().to_string())),
        Some(serde_json::Value::Array(a)) => keys.extend(a.iter().filter_map(|v| v.as_str()).map(|k| k.trim().to_string())),
        Some(serde_json::Value::Null) | None => {}
        Some(_) => return Err("meta_data.json public_keys is neither an object nor an array".into()),
    }
    keys.retain(|k| !k.is_empty());
    Ok(MetaData { uuid: s("uuid"), hostname: s("hostname").or_else(|| s("name")), keys })
}

/// `/etc/agent/oem.json`, as far as the agent reads it.
#[derive(Debug, Default, Deserialize)]
pub struct Oem {
    #[serde(default)]
    pub user: Option<String>,
    /// Same shape as network_data.json.
    #[serde(default)]
    pub network: Option<serde_json::Value>,
    #[serde(default)]
    pub cloud: Option<bool>,
    /// Which cloud sources the platform has (`config-drive`,
    /// `metadata-service`); absent = both, as on the VPC.
    #[serde(default)]
    pub metadata: Option<MetadataCfg>,
}

/// `oem.json` `"metadata"`.
#[derive(Debug, Default, Deserialize)]
pub struct MetadataCfg {
    #[serde(default)]
    pub sources: Option<Vec<String>>,
}

impl Oem {
    /// The fields the agent reads from the effective OEM configuration. A
    /// field of the wrong type is left out, with a warning naming it (a
    /// command-line `oem.user=1000` is a JSON number: numbers are taken as
    /// their text for `user`).
    pub fn from_value(v: &serde_json::Value) -> (Oem, Vec<String>) {
        let mut warn = Vec::new();
        let field = |k: &str| -> Option<serde_json::Value> { v.get(k).cloned() };
        let mut o = Oem::default();
        match field("user") {
            Some(serde_json::Value::String(u)) => o.user = Some(u),
            Some(serde_json::Value::Number(n)) => o.user = Some(n.to_string()),
            Some(other) => warn.push(format!("\"user\" {other} is not a string")),
            None => {}
        }
        match field("network") {
            Some(n @ serde_json::Value::Object(_)) => o.network = Some(n),
            Some(other) => warn.push(format!("\"network\" {other} is not an object")),
            None => {}
        }
        match field("cloud") {
            Some(serde_json::Value::Bool(b)) => o.cloud = Some(b),
            Some(other) => warn.push(format!("\"cloud\" {other} is not true or false")),
            None => {}
        }
        if let Some(m) = field("metadata") {
            match serde_json::from_value::<MetadataCfg>(m) {
                Ok(m) => o.metadata = Some(m),
                Err(e) => warn.push(format!("\"metadata\": {e}")),
            }
        }
        (o, warn)
    }

    /// Whether the platform has the cloud source `name`.
    pub fn uses(&self, name: &str) -> bool {
        match self.metadata.as_ref().and_then(|m| m.sources.as_ref()) {
            Some(s) => s.iter().any(|x| x == name),
            None => true,
        }
    }

    /// The OEM configuration's network, if it has any network in it (static,
    /// DHCP, `"link": "*"`); `None` leaves the step-4 DHCP on the first link.
    pub fn oem_network(&self) -> Option<&serde_json::Value> {
        let n = self.network.as_ref()?;
        n.get("networks").and_then(|v| v.as_array()).is_some_and(|v| !v.is_empty()).then_some(n)
    }
}

pub fn parse_oem(json: &str) -> Result<Oem, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("{OEM_JSON}: {e}"))?;
    match Oem::from_value(&v) {
        (o, w) if w.is_empty() => Ok(o),
        (_, w) => Err(format!("{OEM_JSON}: {}", w.join("; "))),
    }
}

/// A user's (uid, gid, home) from `/etc/passwd` text.
pub fn passwd_lookup(passwd: &str, user: &str) -> Option<(u32, u32, String)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?, f[5].to_string())))?
    })
}

/// An HTTP/1.x response: (status, body).
pub fn parse_http_response(b: &[u8]) -> Result<(u16, &[u8]), String> {
    let end = b.windows(4).position(|w| w == b"\r\n\r\n").ok_or("HTTP response without end of headers")?;
    let head = String::from_utf8_lossy(&b[..end]);
    let status = head.lines().next().unwrap_or("");
    let mut parts = status.split_whitespace();
    if !parts.next().unwrap_or("").starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {status:?}"));
    }
    let code = parts.next().and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad status line {status:?}"))?;
    Ok((code, &b[end + 4..]))
}

/// The total length of a response whose headers are complete and carry a
/// `Content-Length`; `None` otherwise (then the body ends at EOF).
pub fn complete_len(b: &[u8]) -> Option<usize> {
    let end = b.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&b[..end]);
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
    })?;
    Some(end + 4 + len)
}

/// The volume label of an ISO 9660 filesystem (primary volume descriptor at
/// 32 KiB), if `b` holds one.
pub fn iso9660_label(b: &[u8]) -> Option<String> {
    let pvd = b.get(0x8000..0x8000 + 72)?;
    (pvd[0] == 1 && &pvd[1..6] == b"CD001").then(|| String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string())
}

/// (fstype, label) of a config drive candidate from its first bytes.
pub fn config_drive_fs(b: &[u8]) -> Option<&'static str> {
    if let Some(l) = iso9660_label(b) {
        return l.eq_ignore_ascii_case("config-2").then_some("iso9660");
    }
    let i = probe::probe(b)?;
    (i.fstype == "vfat" && i.label.eq_ignore_ascii_case("config-2")).then_some("vfat")
}

// ----------------------------------------------------------------- sources

/// The files of a config drive (`openstack/latest/…`).
#[derive(Default)]
struct Sources {
    meta_data: Option<String>,
    network_data: Option<String>,
}

fn read_head(p: &Path, len: usize) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(p)?;
    let mut b = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read(&mut b[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    b.truncate(got);
    Ok(b)
}

/// `/dev/NAME` of a block device, made with mknod if devtmpfs has not.
fn block_node(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from("/dev").join(name);
    if p.exists() {
        return Some(p);
    }
    let dev = fs::read_to_string(format!("/sys/class/block/{name}/dev")).ok()?;
    let (ma, mi) = dev.trim().split_once(':')?;
    let d = rustix::fs::makedev(ma.parse().ok()?, mi.parse().ok()?);
    rustix::fs::mknodat(rustix::fs::CWD, &p, rustix::fs::FileType::BlockDevice, rustix::fs::Mode::from_raw_mode(0o600), d).ok()?;
    Some(p)
}

fn find_config_drive() -> Option<(PathBuf, &'static str)> {
    let mut names: Vec<String> =
        fs::read_dir("/sys/class/block").ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for n in names {
        let size: u64 = fs::read_to_string(format!("/sys/class/block/{n}/size")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if size == 0 || n.starts_with("loop") || n.starts_with("ram") {
            continue;
        }
        let Some(node) = block_node(&n) else { continue };
        let Ok(head) = read_head(&node, probe::PROBE_LEN) else { continue };
        if let Some(fs) = config_drive_fs(&head) {
            return Some((node, fs));
        }
    }
    None
}

/// Mount the config drive, copy what the agent needs, unmount it.
fn read_config_drive(dev: &Path, fstype: &str) -> Result<Sources, String> {
    fs::create_dir_all(DRIVE_MOUNT).map_err(|e| format!("creating {DRIVE_MOUNT}: {e}"))?;
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    // vfat's default iocharset may be one whose nls module is not loaded
    // (Debian: ascii); utf8 is the one the recipe is told to list.
    let datas: &[&str] = if fstype == "vfat" { &["", "iocharset=utf8"] } else { &[""] };
    let mut r = Err(rustix::io::Errno::INVAL);
    for d in datas {
        let c = std::ffi::CString::new(*d).expect("no NUL");
        r = rustix::mount::mount(dev, DRIVE_MOUNT, fstype, flags, Some(c.as_c_str()));
        if r.is_ok() {
            break;
        }
    }
    r.map_err(|e| {
        format!(
            "mounting {} ({fstype}) on {DRIVE_MOUNT}: {} (the recipe's kernel.modules need {})",
            dev.display(),
            io::Error::from(e),
            if fstype == "vfat" { "vfat, nls_cp437 and nls_utf8" } else { "isofs" }
        )
    })?;
    let dir = Path::new(DRIVE_MOUNT).join("openstack/latest");
    let read = |f: &str| match read_limited(&dir.join(f), MAX_DOCUMENT) {
        Ok(b) => b.map(|b| String::from_utf8_lossy(&b).into_owned()),
        Err(e) => {
            log!("cloud: config drive: openstack/latest/{f}: {e}; ignored");
            None
        }
    };
    let s = Sources { meta_data: read("meta_data.json"), network_data: read("network_data.json") };
    match read_limited(&dir.join("user_data"), MAX_USER_DATA) {
        Ok(Some(ud)) => save_user_data(&ud, "config drive"),
        Ok(None) => {}
        Err(e) => log!("cloud: config drive: openstack/latest/user_data: {e}; ignored"),
    }
    let _ = rustix::mount::unmount(DRIVE_MOUNT, rustix::mount::UnmountFlags::DETACH);
    Ok(s)
}

/// A file's bytes if it exists and is at most `max` bytes long; `Err`
/// names the size when it is larger (read no further than `max + 1`).
fn read_limited(p: &Path, max: usize) -> Result<Option<Vec<u8>>, String> {
    let f = match fs::File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut b = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut b).map_err(|e| e.to_string())?;
    if b.len() > max {
        let size = fs::metadata(p).map(|m| m.len()).unwrap_or(b.len() as u64);
        return Err(format!("{size} bytes, over the limit of {max} bytes"));
    }
    Ok(Some(b))
}

fn save_user_data(ud: &[u8], source: &str) {
    let _ = fs::create_dir_all("/run/agent");
    let r = fs::write(USER_DATA, ud)
        .and_then(|_| fs::set_permissions(USER_DATA, fs::Permissions::from_mode(0o600)))
        .and_then(|_| fs::write(USER_DATA_SOURCE, source));
    match r {
        Ok(()) => log!("cloud: user_data from the {source} saved to {USER_DATA} ({} bytes)", ud.len()),
        Err(e) => log!("cloud: saving {USER_DATA} failed: {e}"),
    }
}

/// One HTTP/1.0 GET; (status, body). Each read waits at most `timeout`,
/// and the whole exchange must end by `deadline`.
fn http_get(addr: &str, path: &str, timeout: Duration, deadline: Instant, max_body: usize) -> Result<(u16, Vec<u8>), String> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let left = |what: &str| {
        let l = deadline.saturating_duration_since(Instant::now());
        if l.is_zero() {
            Err(format!("{what} {addr} for {path}: no complete answer within the deadline"))
        } else {
            Ok(l.min(timeout))
        }
    };
    let mut s = TcpStream::connect_timeout(&sa, left("connecting to")?).map_err(|e| format!("connecting to {addr}: {e}"))?;
    // Each read sets its own timeout below; the request is sent within what is left.
    s.set_write_timeout(Some(left("sending to")?)).map_err(|e| e.to_string())?;
    let host = addr.split(':').next().unwrap_or(addr);
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: guest-agent\r\nAccept: */*\r\n\r\n")
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    // Read until the body is complete (Content-Length) or the server closes.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(want) = complete_len(&buf) {
            if buf.len() >= want {
                buf.truncate(want);
                break;
            }
        }
        s.set_read_timeout(Some(left("reading from")?)).map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            // The body plus room for the status line and headers.
            Ok(n) if buf.len() + n <= max_body + (64 << 10) => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err(format!("response from {addr} for {path} is larger than the limit of {max_body} bytes")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A read that timed out at the deadline is the deadline's doing.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) && Instant::now() >= deadline => {
                left("reading from")?;
            }
            Err(e) => return Err(format!("reading from {addr}: {e}")),
        }
    }
    let (code, body) = parse_http_response(&buf)?;
    if body.len() > max_body {
        return Err(format!("response from {addr} for {path} is larger than the limit of {max_body} bytes"));
    }
    Ok((code, body.to_vec()))
}

/// GET with retries (the service may come up late); `Ok(None)` for a 404.
/// Nothing is asked after `budget` (the end of the metadata service's
/// time, [`METADATA_BUDGET`]).
fn metadata_get(path: &str, budget: Instant) -> Result<Option<String>, String> {
    Ok(metadata_get_bytes(path, MAX_DOCUMENT, budget)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// [`metadata_get`] as bytes (user_data may be anything).
fn metadata_get_bytes(path: &str, max_body: usize, budget: Instant) -> Result<Option<Vec<u8>>, String> {
    let mut last = String::new();
    for attempt in 1..=3 {
        if Instant::now() >= budget {
            last = format!(
                "{}{}the metadata service's {} s are spent",
                last,
                if last.is_empty() { "" } else { "; " },
                METADATA_BUDGET.as_secs()
            );
            break;
        }
        let deadline = (Instant::now() + REQUEST_DEADLINE).min(budget);
        match http_get(METADATA, path, Duration::from_secs(2), deadline, max_body) {
            Ok((200, body)) => return Ok(Some(body)),
            Ok((404, _)) => return Ok(None),
            Ok((code, _)) => last = format!("HTTP {code}"),
            Err(e) => last = e,
        }
        crate::debug!("cloud: GET {path} attempt {attempt}: {last}");
        if attempt < 3 {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Err(format!("GET http://{METADATA}{path}: {last}"))
}

// ---------------------------------------------------------------- applying

fn boottime() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn cloud_disabled(oem: &Oem) -> bool {
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline.split_whitespace().any(|w| matches!(w, "agent.cloud=off" | "agent.cloud=0")) || oem.cloud == Some(false)
}

fn write_file(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn set_hostname(root: &Path, name: &str) {
    let name: String = name.chars().take(64).collect();
    match rustix::system::sethostname(name.as_bytes()) {
        Ok(()) => log!("cloud: hostname set to {name}"),
        Err(e) => log!("cloud: sethostname {name:?} failed: {}", io::Error::from(e)),
    }
    let p = root.join("etc/hostname");
    if let Err(e) = write_file(&p, &format!("{name}\n"), 0o644) {
        log!("cloud: writing {} failed: {e}", p.display());
    }
}

/// Install `keys` as `~USER/.ssh/authorized_keys` under `root` (the file
/// is replaced). USER's uid, gid and home come from `root`'s `/etc/passwd`:
///
/// * USER is there: a missing home is made (0700, USER's), `.ssh` is made
///   or fixed (0700, USER's), the file is 0600 and USER's, as sshd's
///   `StrictModes` wants and so that sshd, reading it as USER, can;
/// * the root has a passwd without USER: nothing is written (the agent
///   does not create users: the recipe or Ignition does; a root-owned
///   `/home/USER` would only be in the way and sshd could not read it);
/// * the root has no passwd at all (a busybox initramfs appliance):
///   `/root` for root, else `/home/USER`, owned by uid 0, as before.
///
/// A key with a control character (a newline would make it two lines) is
/// left out. Returns what was done, for the log, or why nothing was.
pub fn install_keys(root: &Path, user: &str, keys: &[String]) -> Result<String, String> {
    let passwd_path = root.join("etc/passwd");
    let passwd = match fs::read_to_string(&passwd_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", passwd_path.display())),
    };
    let (uid, gid, home, known) = match (passwd.as_deref().and_then(|p| passwd_lookup(p, user)), &passwd) {
        (Some((u, g, h)), _) => (u, g, h, true),
        (None, _) if user == "root" => (0, 0, "/root".to_string(), false),
        (None, Some(_)) => {
            return Err(format!(
                "user {user} is not in {}: the agent does not create users (the recipe or Ignition does); no keys installed",
                passwd_path.display()
            ))
        }
        (None, None) => (0, 0, format!("/home/{user}"), false),
    };
    let mut lines = String::new();
    let mut skipped = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if k.chars().any(char::is_control) {
            skipped.push(i);
        } else {
            lines.push_str(k);
            lines.push('\n');
        }
    }
    if !skipped.is_empty() {
        log!("cloud: ssh_authorized_keys {skipped:?} contain control characters (a newline?): left out");
    }
    // The home comes from the root's passwd, which user_data may have
    // written (Ignition's homeDir): it must not lead out of the root.
    if Path::new(&home).components().any(|c| c == std::path::Component::ParentDir) {
        return Err(format!("the home {home:?} of {user} in {} climbs out of the root (`..`): no keys installed", passwd_path.display()));
    }
    let home_dir = root.join(home.trim_start_matches('/'));
    let dir = home_dir.join(".ssh");
    let file = dir.join("authorized_keys");
    let io_err = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
    let mut made_home = false;
    if known && !home_dir.exists() {
        if let Some(parent) = home_dir.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
        }
        fs::create_dir(&home_dir)
            .and_then(|_| fs::set_permissions(&home_dir, fs::Permissions::from_mode(0o700)))
            .and_then(|_| chown(&home_dir, Some(uid), Some(gid)))
            .map_err(|e| io_err("creating the home", &home_dir, e))?;
        made_home = true;
    }
    fs::create_dir_all(&dir)
        .and_then(|_| fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)))
        .and_then(|_| chown(&dir, Some(uid), Some(gid)))
        .map_err(|e| io_err("creating", &dir, e))?;
    write_file(&file, &lines, 0o600).and_then(|_| chown(&file, Some(uid), Some(gid))).map_err(|e| io_err("writing", &file, e))?;
    Ok(format!(
        "{} SSH key(s) for {user} in {} (uid {uid}, gid {gid}{}{})",
        keys.len() - skipped.len(),
        file.display(),
        if known { "" } else { ", no passwd entry" },
        if made_home { ", home made" } else { "" }
    ))
}

/// Try one network_data source: expand `"link": "*"`, parse and apply,
/// logging the outcome.
fn try_network(nl: &mut Rtnl, what: &str, json: &str, leased: &[String]) -> Option<Applied> {
    let expanded = match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) if net::every::has_every_link(&v) => {
            let nics: Vec<net::every::Nic> =
                net::apply::ether_interfaces(Duration::from_millis(200)).into_iter().filter_map(|i| Some((i.name, i.mac?))).collect();
            let e = net::every::expand(&v, &nics);
            let names: Vec<&str> = nics.iter().map(|n| n.0.as_str()).collect();
            log!("cloud: {what}: \"link\": \"*\" on {}", if names.is_empty() { "no NIC".to_string() } else { names.join(", ") });
            e.to_string()
        }
        _ => json.to_string(),
    };
    let cfg = match net::parse(&expanded) {
        Ok(c) if c.links.is_empty() && c.networks.is_empty() => {
            log!("cloud: {what}: nothing to configure (no NIC for \"link\": \"*\")");
            return None;
        }
        Ok(c) => c,
        Err(e) => {
            log!("cloud: {what}: bad network_data, ignored: {e}");
            return None;
        }
    };
    match net::apply(nl, &cfg, leased) {
        Ok(a) => Some(a),
        Err(e) => {
            log!("cloud: {what}: applying network_data failed: {e}");
            None
        }
    }
}

/// The whole cloud step. `root` is where resolv.conf goes: `/` in appliance
/// mode, `/sysroot` before a root switch. `cfg` is the effective OEM
/// configuration (layers 00–40); what the cloud says is merged over it as
/// layer 50. Returns what the network step configured and from which
/// source, for the hand-over to the root's networkd; `None` when nothing
/// was.
pub fn run(root: &Path, cfg: &mut crate::oem::Effective) -> Option<(Applied, &'static str)> {
    let t = Instant::now();
    let (oem, warnings) = Oem::from_value(cfg.config());
    for w in warnings {
        log!("cloud: OEM configuration: {w}; ignored");
    }
    if cloud_disabled(&oem) {
        log!("cloud: disabled (agent.cloud=off or oem.json \"cloud\": false)");
        return None;
    }
    let mut nl = match Rtnl::open() {
        Ok(n) => n,
        Err(e) => {
            log!("cloud: FAILED to open rtnetlink: {e}; no network configuration");
            return None;
        }
    };
    net::apply::loopback_up(&mut nl);
    let mut meta: Option<MetaData> = None;
    let mut applied: Option<(Applied, &'static str)> = None;
    // The lease taken to reach the metadata service: what the network is
    // when nothing later replaces it.
    let mut bootstrap: Option<Applied> = None;
    // The cloud's network_data.json that was applied: layer 50's "network".
    let mut cloud_net: Option<String> = None;
    let mut leased: Vec<String> = Vec::new();

    // 1. Config drive.
    let drive = if oem.uses("config-drive") {
        find_config_drive()
    } else {
        log!("cloud: this platform has no config drive");
        None
    };
    match drive {
        Some((dev, fstype)) => {
            log!("cloud: config drive {} ({fstype})", dev.display());
            match read_config_drive(&dev, fstype) {
                Ok(s) => {
                    match s.meta_data.as_deref().map(parse_meta_data) {
                        Some(Ok(m)) => {
                            log!(
                                "cloud: config drive meta_data: uuid {}, hostname {:?}, {} key(s)",
                                m.uuid.as_deref().unwrap_or("-"),
                                m.hostname.as_deref().unwrap_or("-"),
                                m.keys.len()
                            );
                            meta = Some(m);
                        }
                        Some(Err(e)) => log!("cloud: config drive: bad meta_data.json, ignored: {e}"),
                        None => log!("cloud: config drive has no openstack/latest/meta_data.json"),
                    }
                    match &s.network_data {
                        Some(j) => {
                            applied = try_network(&mut nl, "config drive", j, &leased).map(|a| (a, "config drive"));
                            cloud_net = applied.as_ref().map(|_| j.clone());
                        }
                        None => log!("cloud: config drive has no openstack/latest/network_data.json"),
                    }
                }
                Err(e) => log!("cloud: config drive unusable: {e}"),
            }
        }
        None if oem.uses("config-drive") => log!("cloud: no config drive (no block device labelled config-2)"),
        None => {}
    }

    // NIC drivers register their interfaces while their module loads; the
    // short wait only covers asynchronous probing.
    let ether = net::apply::ether_interfaces(Duration::from_millis(200));
    if ether.is_empty() && applied.is_none() {
        log!("cloud: no Ethernet interface: skipping the metadata service and DHCP");
    }

    // 2. Metadata service, over DHCP on the first link.
    if (applied.is_none() || meta.is_none()) && !ether.is_empty() && oem.uses("metadata-service") {
        match net::dhcp_first_link(&mut nl) {
            Ok(a) => {
                log!("cloud: DHCP for the metadata service: {}", a.summary.join("; "));
                leased = a.dhcp.clone();
                bootstrap = Some(a.clone());
                let base = "/openstack/latest";
                let budget = Instant::now() + METADATA_BUDGET;
                if meta.is_none() {
                    match metadata_get(&format!("{base}/meta_data.json"), budget) {
                        Ok(Some(j)) => match parse_meta_data(&j) {
                            Ok(m) => {
                                log!(
                                    "cloud: metadata service meta_data: uuid {}, hostname {:?}, {} key(s)",
                                    m.uuid.as_deref().unwrap_or("-"),
                                    m.hostname.as_deref().unwrap_or("-"),
                                    m.keys.len()
                                );
                                meta = Some(m);
                            }
                            Err(e) => log!("cloud: metadata service: bad meta_data.json, ignored: {e}"),
                        },
                        Ok(None) => log!("cloud: metadata service has no meta_data.json (404)"),
                        Err(e) => log!("cloud: metadata service unreachable: {e}"),
                    }
                }
                // user_data, unless a config drive gave it (a 404 is "none").
                if meta.is_some() && !Path::new(USER_DATA).exists() {
                    match metadata_get_bytes(&format!("{base}/user_data"), MAX_USER_DATA, budget) {
                        Ok(Some(ud)) => save_user_data(&ud, "metadata service"),
                        Ok(None) => log!("cloud: metadata service has no user_data (404)"),
                        Err(e) => log!("cloud: metadata service: user_data: {e}"),
                    }
                }
                // Only ask for network_data if the service answered at all.
                if applied.is_none() && meta.is_some() {
                    match metadata_get(&format!("{base}/network_data.json"), budget) {
                        Ok(Some(j)) => {
                            applied = try_network(&mut nl, "metadata service", &j, &leased).map(|a| (a, "metadata service"));
                            cloud_net = applied.as_ref().map(|_| j);
                        }
                        Ok(None) => log!("cloud: metadata service has no network_data.json (404)"),
                        Err(e) => log!("cloud: metadata service: {e}"),
                    }
                }
                // Without better data the lease is the step-4 result,
                // unless the OEM configuration has a network (then step 3
                // keeps this lease where it asks for DHCP on this link).
                if applied.is_none() && oem.oem_network().is_none() {
                    applied = Some((a, "DHCP"));
                }
            }
            Err(e) => log!("cloud: DHCP on the first link failed: {e}"),
        }
    }

    // 3. The OEM configuration's network.
    if applied.is_none() {
        if let Some(n) = oem.oem_network() {
            applied = try_network(&mut nl, "OEM network", &n.to_string(), &leased).map(|a| (a, "OEM network"));
        }
    }

    // 4. DHCP on the first link.
    if applied.is_none() && !ether.is_empty() && leased.is_empty() {
        match net::dhcp_first_link(&mut nl) {
            Ok(a) => applied = Some((a, "DHCP")),
            Err(e) => log!("cloud: DHCP on the first link failed: {e}"),
        }
    }

    match &applied {
        Some((a, from)) => {
            let p = root.join("etc/resolv.conf");
            let managed = fs::read_link(&p).ok();
            if let (false, Some(target)) = (a.dns.is_empty(), &managed) {
                // systemd-resolved's stub (or another resolver) owns it; with
                // networkd the name servers reach it from the .network files.
                log!("cloud: {} is a symlink to {}: left to the root's resolver", p.display(), target.display());
            } else if !a.dns.is_empty() {
                match write_file(&p, &net::resolv_conf(&a.dns), 0o644) {
                    Ok(()) => log!("cloud: {} name server(s) in {}", a.dns.len().min(3), p.display()),
                    Err(e) => log!("cloud: writing {} failed: {e}", p.display()),
                }
            }
            log!(
                "network configured from {from}: {} ({:.3} s since kernel start, {} ms in the agent)",
                a.summary.join("; "),
                boottime(),
                t.elapsed().as_millis()
            );
        }
        None if !leased.is_empty() => log!("network configured from DHCP ({:.3} s since kernel start)", boottime()),
        None if ether.is_empty() => log!("cloud: no network interfaces, nothing to configure ({:.3} s since kernel start)", boottime()),
        None => log!("cloud: FAILED to configure the network from any source ({:.3} s since kernel start)", boottime()),
    }

    if let Some(l50) = layer50(meta.as_ref(), cloud_net.as_deref()) {
        cfg.layers.push("50-metadata", l50);
        cfg.write();
    }
    applied.or_else(|| bootstrap.map(|a| (a, "DHCP")))
}

/// Layer 50: what the cloud said, in the OEM configuration's keys: the
/// meta_data's `hostname` and `ssh_authorized_keys`, and the
/// network_data.json that was applied as `network`. `None` when it said
/// nothing.
pub fn layer50(meta: Option<&MetaData>, network_data: Option<&str>) -> Option<serde_json::Value> {
    let mut l50 = serde_json::Map::new();
    if let Some(m) = meta {
        if let Some(h) = &m.hostname {
            l50.insert("hostname".into(), h.clone().into());
        }
        if !m.keys.is_empty() {
            l50.insert("ssh_authorized_keys".into(), m.keys.clone().into());
        }
    }
    if let Some(v) = network_data.and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()) {
        l50.insert("network".into(), v);
    }
    (!l50.is_empty()).then_some(serde_json::Value::Object(l50))
}

/// What [`apply_identity`] sets, from the effective OEM configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `hostname`, trimmed; `None` when absent, empty or not a scalar.
    pub hostname: Option<String>,
    /// `ssh_authorized_keys`: the non-empty strings, trimmed.
    pub keys: Vec<String>,
    /// Whose keys they are: `user`, default `root`.
    pub user: String,
    /// Lines for the log: where each value came from, what was ignored.
    pub notes: Vec<String>,
}

/// The hostname and SSH keys of the effective OEM configuration (after
/// layer 50). Pure: [`apply_identity`] does the system calls.
pub fn identity(cfg: &crate::oem::Effective) -> Identity {
    let c = cfg.config();
    let by = |k: &str| cfg.layers.set_by(k).join(", ");
    let mut id = Identity::default();
    match c.get("hostname") {
        Some(h @ (serde_json::Value::String(_) | serde_json::Value::Number(_))) => {
            let h = crate::oem::scalar_text(h);
            if !h.trim().is_empty() {
                id.notes.push(format!("oem: hostname {h} (from {})", by("hostname")));
                id.hostname = Some(h.trim().to_string());
            }
        }
        Some(other) => id.notes.push(format!("oem: \"hostname\" {other} is not a string; ignored")),
        None => {}
    }
    id.keys = c
        .get("ssh_authorized_keys")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|k| k.as_str()).map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect())
        .unwrap_or_default();
    let (oem, _) = Oem::from_value(c);
    id.user = oem.user.unwrap_or_else(|| "root".into());
    if !id.keys.is_empty() {
        id.notes.push(format!("oem: {} SSH key(s) (from {})", id.keys.len(), by("ssh_authorized_keys")));
    }
    id
}

/// Hostname and SSH keys from the effective OEM configuration ([`identity`]):
/// `hostname` → `sethostname` and `ROOT/etc/hostname`;
/// `ssh_authorized_keys` → `~USER/.ssh/authorized_keys`, USER from `user`
/// (default `root`). Absent keys change nothing.
pub fn apply_identity(root: &Path, cfg: &crate::oem::Effective) {
    let id = identity(cfg);
    for n in &id.notes {
        log!("{n}");
    }
    if let Some(h) = &id.hostname {
        set_hostname(root, h);
    }
    if !id.keys.is_empty() {
        match install_keys(root, &id.user, &id.keys) {
            Ok(what) => log!("cloud: {what}"),
            Err(e) => log!("cloud: SSH keys not installed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback that answers each connection with `answer`,
    /// written in pieces of `piece` bytes `gap` apart; its address.
    fn server(answer: Vec<u8>, piece: usize, gap: Duration) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut req = [0u8; 1024];
                    let _ = c.read(&mut req);
                    for p in answer.chunks(piece) {
                        if c.write_all(p).is_err() {
                            return;
                        }
                        std::thread::sleep(gap);
                    }
                });
            }
        });
        addr
    }

    fn ok_answer(body: &[u8]) -> Vec<u8> {
        let mut a = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        a.extend_from_slice(body);
        a
    }

    #[test]
    fn a_slow_loris_is_cut_off_at_the_deadline() {
        // One byte every 100 ms, each within the 2 s read timeout: without
        // the deadline the whole answer (about 5 s) would come back.
        let addr = server(ok_answer(b"{}"), 1, Duration::from_millis(100));
        let e = http_get(&addr, "/x", Duration::from_secs(2), Instant::now() + Duration::from_millis(700), 1 << 20).unwrap_err();
        assert!(e.contains("no complete answer within the deadline") && e.contains("/x"), "{e}");
        // The same server, with time enough: the answer.
        let (code, body) = http_get(&addr, "/x", Duration::from_secs(2), Instant::now() + Duration::from_secs(60), 1 << 20).unwrap();
        assert_eq!((code, body.as_slice()), (200, &b"{}"[..]));
    }

    #[test]
    fn an_answer_past_the_limit_is_refused_while_reading() {
        // 8 MiB announced and sent to a reader that takes 1 MiB.
        let addr = server(ok_answer(&vec![b'x'; 8 << 20]), 1 << 16, Duration::ZERO);
        let e = http_get(&addr, "/big", Duration::from_secs(2), Instant::now() + Duration::from_secs(60), 1 << 20).unwrap_err();
        assert!(e.contains("larger than the limit of 1048576 bytes"), "{e}");
        let (code, body) = http_get(&addr, "/big", Duration::from_secs(2), Instant::now() + Duration::from_secs(60), 8 << 20).unwrap();
        assert_eq!((code, body.len()), (200, 8 << 20));
    }

    #[test]
    fn documents_are_read_up_to_their_limit_and_refused_past_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("user_data");
        assert_eq!(read_limited(&p, 8), Ok(None), "absent");
        fs::write(&p, b"12345678").unwrap();
        assert_eq!(read_limited(&p, 8), Ok(Some(b"12345678".to_vec())), "at the limit");
        fs::write(&p, b"123456789").unwrap();
        let e = read_limited(&p, 8).unwrap_err();
        assert!(e.contains("9 bytes, over the limit of 8 bytes"), "{e}");
    }

    #[test]
    fn meta_data() {
        let m = parse_meta_data(
            r#"{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "name": "vm", "hostname": "vpc-test-host",
                "public_keys": {"b": "ssh-ed25519 BBBB b@x", "a": "ssh-ed25519 AAAA a@x\n"}, "launch_index": 0}"#,
        )
        .unwrap();
        assert_eq!(m.uuid.as_deref(), Some("83679162-1378-4288-a2d4-70e13ec132aa"));
        assert_eq!(m.hostname.as_deref(), Some("vpc-test-host"));
        assert_eq!(m.keys, ["ssh-ed25519 AAAA a@x", "ssh-ed25519 BBBB b@x"]);
        let m = parse_meta_data(r#"{"name": "only-name"}"#).unwrap();
        assert_eq!((m.hostname.as_deref(), m.keys.len()), (Some("only-name"), 0));
        assert!(parse_meta_data("[1]").is_err());
        assert!(parse_meta_data("{").unwrap_err().contains("not valid meta_data JSON"));
        assert!(parse_meta_data(r#"{"public_keys": 3}"#).is_err());
    }

    #[test]
    fn platform_sources_and_dhcp_everywhere() {
        let o = parse_oem(r#"{"metadata":{"sources":[]},"network":{"links":[],"networks":[{"id":"d","type":"ipv4_dhcp","link":"*"}]}}"#)
            .unwrap();
        assert!(!o.uses("config-drive") && !o.uses("metadata-service"));
        assert!(o.oem_network().is_some(), "DHCP on every link is the OEM network");
        let o =
            parse_oem(r#"{"network":{"links":[{"id":"a"}],"networks":[{"id":"n","type":"ipv4","link":"a","ip_address":"10.0.0.2/8"}]}}"#)
                .unwrap();
        assert!(o.uses("config-drive") && o.oem_network().is_some());
        // The built-in defaults' empty network leaves the first-link DHCP.
        assert!(parse_oem(r#"{"network":{"links":[],"networks":[],"services":[]}}"#).unwrap().oem_network().is_none());
    }

    #[test]
    fn oem_fields_of_the_wrong_type_are_left_out() {
        let (o, w) = Oem::from_value(&serde_json::json!({"user": 1000, "network": "dhcp", "cloud": "no", "metadata": {"sources": "x"}}));
        assert_eq!(o.user.as_deref(), Some("1000"));
        assert!(o.network.is_none() && o.cloud.is_none() && o.metadata.is_none());
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("network") && w[1].contains("cloud") && w[2].contains("metadata"), "{w:?}");
    }

    #[test]
    fn oem_and_passwd() {
        let o = parse_oem(r#"{"user": "admin", "network": {"links": []}}"#).unwrap();
        assert_eq!(o.user.as_deref(), Some("admin"));
        assert!(o.network.is_some());
        assert!(parse_oem("{}").unwrap().user.is_none());
        let pw = "root:x:0:0:root:/root:/bin/sh\nadmin:x:1000:1001:Admin:/home/admin:/bin/sh\nbad:line\n";
        assert_eq!(passwd_lookup(pw, "admin"), Some((1000, 1001, "/home/admin".into())));
        assert_eq!(passwd_lookup(pw, "root"), Some((0, 0, "/root".into())));
        assert_eq!(passwd_lookup(pw, "nobody"), None);
    }

    /// (mode & 0o7777, uid, gid) of a path.
    fn owner_mode(p: &Path) -> (u32, u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(p).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    }

    #[test]
    fn keys_go_to_the_users_home_with_its_ids_and_sshds_modes() {
        // As root the files are given to 1000:1001; otherwise (chown to
        // another uid needs root) to the test's own ids.
        let (uid, gid) = if rustix::process::getuid().is_root() {
            (1000, 1001)
        } else {
            (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw())
        };
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("home/core/.ssh")).unwrap();
        fs::set_permissions(root.join("home/core/.ssh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            root.join("etc/passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/sh\ncore:x:{uid}:{gid}:Core:/home/core:/bin/bash\nfresh:x:{uid}:{gid}::/home/fresh:/bin/sh\n"
            ),
        )
        .unwrap();
        let keys = vec![
            "ssh-ed25519 AAAA a@x".to_string(),
            "ssh-ed25519 BBBB b@x\ncommand=\"evil\" ssh-rsa CCCC".to_string(),
            "ssh-rsa DDDD d@x".to_string(),
        ];
        let what = install_keys(root, "core", &keys).unwrap();
        assert!(what.starts_with("2 SSH key(s) for core in ") && what.ends_with(&format!("(uid {uid}, gid {gid})")), "{what}");
        let file = root.join("home/core/.ssh/authorized_keys");
        assert_eq!(fs::read_to_string(&file).unwrap(), "ssh-ed25519 AAAA a@x\nssh-rsa DDDD d@x\n", "the key with a newline is left out");
        assert_eq!(owner_mode(&file), (0o600, uid, gid));
        assert_eq!(owner_mode(&root.join("home/core/.ssh")), (0o700, uid, gid), "an existing .ssh is fixed");
        // Written again: replaced, not appended.
        install_keys(root, "core", &keys[..1]).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "ssh-ed25519 AAAA a@x\n");

        // A user whose home does not exist yet: made, the user's, 0700.
        let what = install_keys(root, "fresh", &keys[..1]).unwrap();
        assert!(what.contains("home made"), "{what}");
        assert_eq!(owner_mode(&root.join("home/fresh")), (0o700, uid, gid));
        assert_eq!(owner_mode(&root.join("home/fresh/.ssh/authorized_keys")), (0o600, uid, gid));

        // root: /root, uid 0 (only checked as root).
        if uid == 1000 {
            install_keys(root, "root", &keys[..1]).unwrap();
            assert_eq!(owner_mode(&root.join("root/.ssh/authorized_keys")), (0o600, 0, 0));
        }

        // A user the root does not have: nothing written, the reason given.
        let e = install_keys(root, "admin", &keys).unwrap_err();
        assert!(e.contains("user admin is not in") && e.contains("does not create users"), "{e}");
        assert!(!root.join("home/admin").exists());
    }

    /// Found by fuzz/ (target `meta_data`): a home in the root's passwd
    /// (which user_data may have written) with `..` had the keys written
    /// outside the root. Nothing is written; the reason is given.
    #[test]
    fn a_home_that_climbs_out_of_the_root_gets_no_keys() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "core:x:0:0::/../../x:/bin/sh\nrel:x:0:0::home/../..:/bin/sh\n").unwrap();
        for user in ["core", "rel"] {
            let e = install_keys(&root, user, &["ssh-ed25519 AAAA a@x".to_string()]).unwrap_err();
            assert!(e.contains("climbs out of the root") && e.contains(user), "{e}");
        }
        assert!(!t.path().join("x").exists() && !t.path().join(".ssh").exists());
    }

    #[test]
    fn keys_without_a_passwd_go_where_they_always_did() {
        // A busybox initramfs appliance has no /etc/passwd.
        let t = tempfile::tempdir().unwrap();
        let what = install_keys(t.path(), "core", &["ssh-ed25519 AAAA a@x".to_string()]).unwrap();
        assert!(what.contains("no passwd entry"), "{what}");
        assert_eq!(fs::read_to_string(t.path().join("home/core/.ssh/authorized_keys")).unwrap(), "ssh-ed25519 AAAA a@x\n");
        install_keys(t.path(), "root", &["ssh-ed25519 AAAA a@x".to_string()]).unwrap();
        assert_eq!(owner_mode(&t.path().join("root/.ssh")).0, 0o700);
        assert_eq!(owner_mode(&t.path().join("root/.ssh/authorized_keys")).0, 0o600);
    }

    #[test]
    fn http() {
        let (c, b) = parse_http_response(b"HTTP/1.0 200 OK\r\nContent-Type: x\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!((c, b), (200, &b"{\"a\":1}"[..]));
        assert_eq!(parse_http_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap().0, 404);
        assert!(parse_http_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_http_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert_eq!(complete_len(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nab"), Some(41));
        assert_eq!(complete_len(b"HTTP/1.0 200 OK\r\n\r\nab"), None);
        assert_eq!(complete_len(b"HTTP/1.0 200 OK\r\nContent-Length: 3"), None);
    }

    #[test]
    fn config_drive_labels() {
        let mut iso = vec![0u8; probe::PROBE_LEN];
        iso[0x8000] = 1;
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        iso[0x8000 + 40..0x8000 + 72].copy_from_slice(format!("{:<32}", "config-2").as_bytes());
        assert_eq!(iso9660_label(&iso).as_deref(), Some("config-2"));
        assert_eq!(config_drive_fs(&iso), Some("iso9660"));
        iso[0x8000 + 40..0x8000 + 48].copy_from_slice(b"CDROM   ");
        assert_eq!(config_drive_fs(&iso), None);

        let mut fat = vec![0u8; 512];
        fat[510] = 0x55;
        fat[511] = 0xAA;
        fat[0x36..0x3E].copy_from_slice(b"FAT12   ");
        fat[0x26] = 0x29;
        fat[0x2B..0x36].copy_from_slice(b"CONFIG-2   ");
        assert_eq!(config_drive_fs(&fat), Some("vfat"));
        fat[0x2B..0x36].copy_from_slice(b"ESP        ");
        assert_eq!(config_drive_fs(&fat), None);
        assert_eq!(config_drive_fs(&[]), None);
    }
}
