//! Users, groups and SSH keys written into a root directory's
//! `/etc/{passwd,group,shadow,gshadow,subuid,subgid}` the way Debian's
//! shadow 4.13 `useradd --root`, `usermod --root`, `groupadd --root`,
//! `userdel --root` and `groupdel --root` write them.
//!
//! ## Why this is written by hand
//! Ignition and cloud-init run the shadow binaries. The agent is PID 1 of
//! an initramfs that has no shadow binaries (and must not spawn processes),
//! and no Rust crate edits a *root's* shadow files: the crates that exist
//! read the host's databases through NSS or parse single lines. So this
//! module re-implements the part of shadow that first-boot provisioning
//! uses, and the conformance test (`tests/tests/ignition_conformance.rs`)
//! compares its output with the real tools, run by the real Ignition, byte
//! for byte.
//!
//! ## What it does as shadow does (measured against shadow 4.13)
//! * Settings come from the root, as `--root` makes the tools chroot
//!   first: `/etc/login.defs` (`UID_MIN/MAX`, `GID_MIN/MAX`,
//!   `SYS_UID_MIN/MAX`, `SYS_GID_MIN/MAX`, `USERGROUPS_ENAB`, `UMASK`,
//!   `HOME_MODE`, `PASS_*`, `SUB_*`, `MAIL_DIR`) and `/etc/default/useradd`
//!   (`GROUP`, `HOME`, `SHELL`, `SKEL`, `INACTIVE`, `EXPIRE`,
//!   `CREATE_MAIL_SPOOL`).
//! * New ids: regular accounts take the highest used id in
//!   `[UID_MIN, UID_MAX]` plus one (else the lowest free one); system
//!   accounts take the lowest used id in `[SYS_UID_MIN, SYS_UID_MAX]` minus
//!   one (else the highest free one). A user's own group prefers the gid
//!   equal to the uid when that gid is free and inside the group range.
//! * New entries are appended; `shadow` gets `*` (or the hash),
//!   `lastchg` = the day number passed in (what `SOURCE_DATE_EPOCH` does
//!   to shadow), `PASS_MIN_DAYS:PASS_MAX_DAYS:PASS_WARN_AGE` for regular
//!   accounts and empty aging fields for system ones; the user's own group
//!   gets `!` in `gshadow`, a group added by [`ensure_group`] gets its hash
//!   or `*`.
//! * Supplementary groups: the name is appended to the member list in
//!   `group` and `gshadow`; for an existing user the list is *replaced* as
//!   `usermod --groups` does (removed from groups not listed).
//! * Regular accounts with an id in `[UID_MIN, UID_MAX]` get a subordinate
//!   id range in `/etc/subuid` and `/etc/subgid` (first free
//!   `SUB_UID_COUNT` block at or above `SUB_UID_MIN`) when those files exist.
//! * A new home is created with `HOME_MODE` (or `0777 & ~UMASK`), missing
//!   parents 0755 root:root, and `/etc/skel` copied into it (modes and
//!   times kept, owned by the user). An existing home is left as it is.
//! * `lastlog`/`faillog` are not touched: shadow 4.13's `useradd` only
//!   resets them for a uid that is not in `passwd` yet, which it never is
//!   at that point (measured: both files stay empty).
//!
//! ## What it does differently, on purpose
//! * No `/etc/.pwd.lock` and no `passwd-`/`group-`/… backup files: this
//!   runs once, on a root nobody else is editing, and each file is
//!   replaced atomically (temp file in `/etc`, fsync, rename) keeping its
//!   mode and owner. The conformance test drops the backups on the oracle
//!   side.
//! * SSH keys go to `~/.ssh/authorized_keys`, not Ignition's default
//!   `~/.ssh/authorized_keys.d/ignition`: Debian's sshd reads only
//!   `authorized_keys`. This is what Ignition itself does when built with
//!   `IGNITION_WRITE_AUTHORIZED_KEYS_FRAGMENT=false` (the oracle is run so).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What went wrong, with the file or the name it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },
    #[error("user {0:?} does not exist")]
    NoSuchUser(String),
    #[error("group {0:?} does not exist (create it first, or leave it out)")]
    NoSuchGroup(String),
    #[error("group {0:?} exists already; to put a user into it, give it as the primary group")]
    GroupExists(String),
    #[error("uid {0} is already used by user {1:?}; pick another uid or leave it out")]
    UidTaken(u32, String),
    #[error("gid {0} is already used by group {1:?}; pick another gid or leave it out")]
    GidTaken(u32, String),
    #[error("group {gid} is the existing group {name:?}, not {wanted:?}")]
    GidMismatch { gid: u32, name: String, wanted: String },
    #[error("no free {what} left in {min}..={max} (see /etc/login.defs)")]
    NoFreeId { what: &'static str, min: u32, max: u32 },
    #[error("{0:?} is not a valid user or group name (letters, digits, '.', '_', '-', not starting with '-', at most 32 bytes, no ':' or white space)")]
    BadName(String),
    #[error("{field} {value:?} must not contain ':' or a newline")]
    BadField { field: &'static str, value: String },
    #[error("group {group:?} is the primary group of user {user:?}; cannot remove it")]
    GroupInUse { group: String, user: String },
    #[error("moving home {from} to {to}: {to} exists already")]
    HomeExists { from: String, to: String },
}

pub type Result<T> = std::result::Result<T, PasswdError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PasswdError + '_ {
    move |source| PasswdError::Io { path: path.to_path_buf(), source }
}

/// A group to create (as `groupadd --root`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub gid: Option<u32>,
    /// The `gshadow` password; `None` (or empty) writes `*`.
    pub password_hash: Option<String>,
    pub system: bool,
}

/// A user to create (as `useradd --root`) or to update (as `usermod --root`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub uid: Option<u32>,
    /// `None`: `*` for a new user, unchanged for an existing one.
    /// `Some("")` writes `*` too, as Ignition does.
    pub password_hash: Option<String>,
    pub gecos: Option<String>,
    /// Default: `HOME` from `/etc/default/useradd` (`/home`) + `/NAME`.
    /// For an existing user, a different home is moved (`usermod -m`).
    pub home_dir: Option<String>,
    /// Create the home (and copy `/etc/skel`), as `useradd --create-home`.
    pub create_home: bool,
    /// Primary group by name or number; default: the user's own group
    /// (`USERGROUPS_ENAB yes`) or `GROUP` from `/etc/default/useradd`.
    pub primary_group: Option<String>,
    /// Supplementary groups (names or numbers). For an existing user a
    /// non-empty list replaces the current one; empty leaves it alone.
    pub groups: Vec<String>,
    /// Do not create the user's own group.
    pub no_user_group: bool,
    /// Accepted for `useradd --no-log-init`; shadow 4.13 never touches
    /// `lastlog`/`faillog` for a new user anyway (see the module docs).
    pub no_log_init: bool,
    pub shell: Option<String>,
    pub system: bool,
}

/// What [`ensure_user`]/[`ensure_group`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Created with this uid or gid.
    Created { id: u32 },
    /// Existed; these fields were changed.
    Updated { id: u32, changed: Vec<String> },
    /// Existed and nothing needed changing.
    Unchanged { id: u32 },
    /// Removed (for `shouldExist: false`).
    Removed,
    /// Did not exist and should not: nothing done.
    Absent,
}

/// An entry of the root's `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PwEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// An entry of the root's `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// `/etc/login.defs` and `/etc/default/useradd` of a root.
#[derive(Debug, Clone, Default)]
pub struct Defs {
    login: BTreeMap<String, String>,
    useradd: BTreeMap<String, String>,
}

impl Defs {
    /// Read both files under `root` (missing files mean shadow's defaults).
    pub fn load(root: &Path) -> Result<Defs> {
        let mut d = Defs::default();
        let p = root.join("etc/login.defs");
        if let Some(text) = read_opt(&p)? {
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut it = line.splitn(2, |c: char| c.is_ascii_whitespace());
                let (Some(k), Some(v)) = (it.next(), it.next()) else { continue };
                let v = v.trim();
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                d.login.insert(k.to_string(), v.to_string());
            }
        }
        let p = root.join("etc/default/useradd");
        if let Some(text) = read_opt(&p)? {
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with('#') {
                    continue;
                }
                if let Some((k, v)) = line.split_once('=') {
                    let v = v.trim();
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                    d.useradd.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        Ok(d)
    }

    /// A number from `login.defs`, parsed as `strtol(…, 0)` does (`0x`
    /// hex, leading `0` octal).
    pub fn num(&self, key: &str, default: i64) -> i64 {
        self.login.get(key).and_then(|v| parse_c_long(v)).unwrap_or(default)
    }

    pub fn bool(&self, key: &str, default: bool) -> bool {
        self.login.get(key).map_or(default, |v| v.eq_ignore_ascii_case("yes"))
    }

    fn login_str(&self, key: &str) -> Option<&str> {
        self.login.get(key).map(String::as_str)
    }

    fn useradd_str(&self, key: &str) -> Option<&str> {
        self.useradd.get(key).map(String::as_str)
    }

    fn id_range(&self, what: &str, system: bool) -> (u32, u32) {
        let min = self.num(&format!("{what}_MIN"), 1000).clamp(0, u32::MAX as i64) as u32;
        let max = self.num(&format!("{what}_MAX"), 60000).clamp(0, u32::MAX as i64) as u32;
        if system {
            let smin = self.num(&format!("SYS_{what}_MIN"), 101).clamp(0, u32::MAX as i64) as u32;
            let smax = self.num(&format!("SYS_{what}_MAX"), min as i64 - 1).clamp(0, u32::MAX as i64) as u32;
            (smin, smax)
        } else {
            (min, max)
        }
    }
}

fn parse_c_long(v: &str) -> Option<i64> {
    let v = v.trim();
    let (neg, v) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if v.len() > 1 && v.starts_with('0') {
        i64::from_str_radix(&v[1..], 8).ok()?
    } else {
        v.parse().ok()?
    };
    Some(if neg { -n } else { n })
}

fn read_opt(p: &Path) -> Result<Option<String>> {
    match fs::read(p) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(p)(e)),
    }
}

/// One colon-separated database file, kept line by line so that lines we
/// do not understand (comments, NIS `+` lines) are written back unchanged.
#[derive(Debug)]
struct Table {
    path: PathBuf,
    lines: Vec<String>,
    exists: bool,
    changed: bool,
}

impl Table {
    fn load(path: PathBuf) -> Result<Table> {
        let text = read_opt(&path)?;
        let exists = text.is_some();
        let lines = text.unwrap_or_default().lines().map(str::to_string).collect();
        Ok(Table { path, lines, exists, changed: false })
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.lines.iter().position(|l| l.split(':').next() == Some(name))
    }

    fn fields(&self, i: usize) -> Vec<String> {
        self.lines[i].split(':').map(str::to_string).collect()
    }

    fn set(&mut self, i: usize, fields: &[String]) {
        let line = fields.join(":");
        if self.lines[i] != line {
            self.lines[i] = line;
            self.changed = true;
        }
    }

    fn push(&mut self, fields: &[String]) {
        self.lines.push(fields.join(":"));
        self.changed = true;
    }

    fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|l| l.split(':').next() != Some(name));
        let removed = self.lines.len() != before;
        self.changed |= removed;
        removed
    }

    /// Replace the file atomically, keeping its mode and owner (new files:
    /// 0644 root:root, or 0640 root:shadow-group for the shadow files).
    fn commit(&mut self, new_mode: u32, new_gid: u32) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        let mut text = self.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let (mode, uid, gid) = match fs::metadata(&self.path) {
            Ok(m) => (m.mode() & 0o7777, m.uid(), m.gid()),
            Err(_) => (new_mode, 0, new_gid),
        };
        write_atomic(&self.path, text.as_bytes(), mode, Some((uid, gid)))?;
        self.exists = true;
        self.changed = false;
        Ok(())
    }
}

/// Write `data` to `path` through a temp file in the same directory
/// (fsync, chown, chmod, rename); the temp file is removed on any error.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.provision-tmp"));
    let _ = fs::remove_file(&tmp);
    let res = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        if let Some((u, g)) = owner {
            std::os::unix::fs::fchown(&f, Some(u), Some(g))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    Ok(())
}

/// The root's account databases, loaded once, changed in memory and
/// committed file by file.
struct Db {
    root: PathBuf,
    defs: Defs,
    passwd: Table,
    group: Table,
    shadow: Table,
    gshadow: Table,
    subuid: Table,
    subgid: Table,
}

impl Db {
    fn load(root: &Path) -> Result<Db> {
        let etc = root.join("etc");
        Ok(Db {
            root: root.to_path_buf(),
            defs: Defs::load(root)?,
            passwd: Table::load(etc.join("passwd"))?,
            group: Table::load(etc.join("group"))?,
            shadow: Table::load(etc.join("shadow"))?,
            gshadow: Table::load(etc.join("gshadow"))?,
            subuid: Table::load(etc.join("subuid"))?,
            subgid: Table::load(etc.join("subgid"))?,
        })
    }

    fn commit(&mut self) -> Result<()> {
        let shadow_gid = self.group_by_name("shadow").map_or(0, |g| g.gid);
        fs::create_dir_all(self.root.join("etc")).map_err(io(&self.root.join("etc")))?;
        self.group.commit(0o644, 0)?;
        self.gshadow.commit(0o640, shadow_gid)?;
        self.passwd.commit(0o644, 0)?;
        self.shadow.commit(0o640, shadow_gid)?;
        self.subuid.commit(0o644, 0)?;
        self.subgid.commit(0o644, 0)?;
        Ok(())
    }

    fn users(&self) -> impl Iterator<Item = PwEntry> + '_ {
        self.passwd.lines.iter().filter_map(|l| parse_pw(l))
    }

    fn groups(&self) -> impl Iterator<Item = GrEntry> + '_ {
        self.group.lines.iter().filter_map(|l| parse_gr(l))
    }

    fn user_by_name(&self, name: &str) -> Option<PwEntry> {
        self.users().find(|u| u.name == name)
    }

    fn group_by_name(&self, name: &str) -> Option<GrEntry> {
        self.groups().find(|g| g.name == name)
    }

    /// A group given by name or by number, as shadow's `getgr_nam_gid`.
    fn group_by_name_or_gid(&self, s: &str) -> Option<GrEntry> {
        if let Ok(gid) = s.parse::<u32>() {
            return self.groups().find(|g| g.gid == gid);
        }
        self.group_by_name(s)
    }

    fn new_id(&self, used: &[u32], what: &'static str, system: bool, preferred: Option<u32>) -> Result<u32> {
        let (min, max) = self.defs.id_range(what, system);
        if min > max {
            return Err(PasswdError::NoFreeId { what: if what == "UID" { "uid" } else { "gid" }, min, max });
        }
        if let Some(p) = preferred {
            if (min..=max).contains(&p) && !used.contains(&p) {
                return Ok(p);
            }
        }
        let in_range: Vec<u32> = used.iter().copied().filter(|i| (min..=max).contains(i)).collect();
        let err = || PasswdError::NoFreeId { what: if what == "UID" { "uid" } else { "gid" }, min, max };
        if system {
            let lowest = in_range.iter().copied().min().map_or(max as u64 + 1, u64::from);
            if lowest > min as u64 {
                let id = (lowest - 1) as u32;
                if !used.contains(&id) {
                    return Ok(id);
                }
            }
            (min..=max).rev().find(|i| !used.contains(i)).ok_or_else(err)
        } else {
            let highest = in_range.iter().copied().max().map_or(min as i64 - 1, i64::from);
            if highest < max as i64 {
                let id = (highest + 1) as u32;
                if !used.contains(&id) {
                    return Ok(id);
                }
            }
            (min..=max).find(|i| !used.contains(i)).ok_or_else(err)
        }
    }

    fn used_uids(&self) -> Vec<u32> {
        self.users().map(|u| u.uid).collect()
    }

    fn used_gids(&self) -> Vec<u32> {
        self.groups().map(|g| g.gid).collect()
    }

    fn add_group_entry(&mut self, name: &str, gid: u32, gshadow_pw: &str) {
        let has_gshadow = self.gshadow.exists;
        let pw = if has_gshadow { "x" } else { gshadow_pw };
        self.group.push(&[name.into(), pw.into(), gid.to_string(), String::new()]);
        if has_gshadow {
            self.gshadow.push(&[name.into(), gshadow_pw.into(), String::new(), String::new()]);
        }
    }

    /// Put `user` into (`add`) or out of the member lists of `group` in
    /// `group` and `gshadow`.
    fn set_member(&mut self, group: &str, user: &str, add: bool) {
        if let Some(i) = self.group.find(group) {
            let mut f = self.group.fields(i);
            if f.len() >= 4 {
                f[3] = edit_list(&f[3], user, add);
                self.group.set(i, &f);
            }
        }
        if let Some(i) = self.gshadow.find(group) {
            let mut f = self.gshadow.fields(i);
            if f.len() >= 4 {
                f[3] = edit_list(&f[3], user, add);
                self.gshadow.set(i, &f);
            }
        }
    }

    /// `/etc/subuid` and `/etc/subgid` ranges for a new regular user.
    fn add_subids(&mut self, name: &str) -> Result<()> {
        for (which, key) in [(0, "UID"), (1, "GID")] {
            let table = if which == 0 { &self.subuid } else { &self.subgid };
            if !table.exists {
                continue;
            }
            let min = self.defs.num(&format!("SUB_{key}_MIN"), 100_000).max(0) as u64;
            let max = self.defs.num(&format!("SUB_{key}_MAX"), 600_100_000).max(0) as u64;
            let count = self.defs.num(&format!("SUB_{key}_COUNT"), 65536).max(0) as u64;
            if count == 0 {
                continue;
            }
            let mut ranges: Vec<(u64, u64)> = table
                .lines
                .iter()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() == 3).then(|| Some((f[1].parse().ok()?, f[2].parse().ok()?))).flatten()
                })
                .collect();
            ranges.sort();
            let mut start = min;
            for (s, c) in ranges {
                if s + c <= start {
                    continue;
                }
                if s >= start + count {
                    break;
                }
                start = s + c;
            }
            if start + count - 1 > max {
                return Err(PasswdError::NoFreeId { what: "subordinate id range", min: min as u32, max: max as u32 });
            }
            let table = if which == 0 { &mut self.subuid } else { &mut self.subgid };
            table.push(&[name.into(), start.to_string(), count.to_string()]);
        }
        Ok(())
    }
}

fn edit_list(list: &str, user: &str, add: bool) -> String {
    let mut v: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
    let present = v.contains(&user);
    if add && !present {
        v.push(user);
    } else if !add && present {
        v.retain(|m| *m != user);
    }
    v.join(",")
}

fn parse_pw(line: &str) -> Option<PwEntry> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(PwEntry {
        name: f[0].into(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        gecos: f[4].into(),
        home: f[5].into(),
        shell: f[6].into(),
    })
}

fn parse_gr(line: &str) -> Option<GrEntry> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 4 {
        return None;
    }
    Some(GrEntry {
        name: f[0].into(),
        gid: f[2].parse().ok()?,
        members: f[3].split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
    })
}

/// shadow's `is_valid_user_name` as Debian builds it (relaxed: anything
/// but `:`, `,`, white space, a leading `-`, `.`/`..` and names that are
/// all digits; at most 32 bytes).
fn check_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 32
        || name.starts_with('-')
        || name == "."
        || name == ".."
        || name.bytes().all(|b| b.is_ascii_digit())
        || name.bytes().any(|b| b == b':' || b == b',' || b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/');
    if bad {
        return Err(PasswdError::BadName(name.into()));
    }
    Ok(())
}

fn check_field(field: &'static str, value: &str) -> Result<()> {
    if value.contains([':', '\n', '\r']) {
        return Err(PasswdError::BadField { field, value: value.into() });
    }
    Ok(())
}

/// The user `name` in the root's `/etc/passwd`.
pub fn lookup_user(root: &Path, name: &str) -> Result<Option<PwEntry>> {
    let t = Table::load(root.join("etc/passwd"))?;
    Ok(t.lines.iter().filter_map(|l| parse_pw(l)).find(|u| u.name == name))
}

/// The group `name` in the root's `/etc/group`.
pub fn lookup_group(root: &Path, name: &str) -> Result<Option<GrEntry>> {
    let t = Table::load(root.join("etc/group"))?;
    Ok(t.lines.iter().filter_map(|l| parse_gr(l)).find(|g| g.name == name))
}

/// Create the group as `groupadd --root ROOT [--gid G] --password P
/// [--system] NAME` does. An existing group with the same name (and the
/// same gid, if one is given) is left as it is: [`Outcome::Unchanged`].
/// (Ignition fails there, because `groupadd` does; its applier checks
/// first.)
pub fn ensure_group(root: &Path, spec: &GroupSpec) -> Result<Outcome> {
    check_name(&spec.name)?;
    let pw = spec.password_hash.as_deref().filter(|p| !p.is_empty()).unwrap_or("*");
    check_field("passwordHash", pw)?;
    let mut db = Db::load(root)?;
    if let Some(g) = db.group_by_name(&spec.name) {
        if let Some(gid) = spec.gid {
            if gid != g.gid {
                return Err(PasswdError::GidMismatch { gid: g.gid, name: g.name, wanted: format!("gid {gid}") });
            }
        }
        return Ok(Outcome::Unchanged { id: g.gid });
    }
    let gid = match spec.gid {
        Some(gid) => {
            if let Some(other) = db.groups().find(|g| g.gid == gid) {
                return Err(PasswdError::GidTaken(gid, other.name));
            }
            gid
        }
        None => db.new_id(&db.used_gids(), "GID", spec.system, None)?,
    };
    db.add_group_entry(&spec.name, gid, pw);
    db.commit()?;
    Ok(Outcome::Created { id: gid })
}

/// Remove the group as `groupdel --root` does (refused while it is some
/// user's primary group).
pub fn remove_group(root: &Path, name: &str) -> Result<Outcome> {
    let mut db = Db::load(root)?;
    let Some(g) = db.group_by_name(name) else { return Ok(Outcome::Absent) };
    if let Some(u) = db.users().find(|u| u.gid == g.gid) {
        return Err(PasswdError::GroupInUse { group: name.into(), user: u.name });
    }
    db.group.remove(name);
    db.gshadow.remove(name);
    db.commit()?;
    Ok(Outcome::Removed)
}

/// Create the user as `useradd --root` does, or update an existing one as
/// `usermod --root` does (see [`UserSpec`] for which fields change what).
/// `day` is the day number (days since 1970-01-01) written as the
/// password's last change.
pub fn ensure_user(root: &Path, spec: &UserSpec, day: i64) -> Result<Outcome> {
    check_name(&spec.name)?;
    for (field, v) in [
        ("passwordHash", &spec.password_hash),
        ("gecos", &spec.gecos),
        ("homeDir", &spec.home_dir),
        ("shell", &spec.shell),
        ("primaryGroup", &spec.primary_group),
    ] {
        if let Some(v) = v {
            check_field(field, v)?;
        }
    }
    for g in &spec.groups {
        check_field("groups", g)?;
        if g.contains(',') {
            return Err(PasswdError::BadField { field: "groups", value: g.clone() });
        }
    }
    let mut db = Db::load(root)?;
    match db.user_by_name(&spec.name) {
        Some(old) => modify_user(&mut db, old, spec, day),
        None => add_user(&mut db, spec, day),
    }
}

fn add_user(db: &mut Db, spec: &UserSpec, day: i64) -> Result<Outcome> {
    let name = spec.name.as_str();
    // Groups named must exist.
    let primary = match &spec.primary_group {
        Some(g) => Some(db.group_by_name_or_gid(g).ok_or_else(|| PasswdError::NoSuchGroup(g.clone()))?),
        None => None,
    };
    let mut supplementary = Vec::new();
    for g in &spec.groups {
        let e = db.group_by_name_or_gid(g).ok_or_else(|| PasswdError::NoSuchGroup(g.clone()))?;
        if !supplementary.iter().any(|s: &GrEntry| s.name == e.name) {
            supplementary.push(e);
        }
    }
    let user_group = primary.is_none() && !spec.no_user_group && db.defs.bool("USERGROUPS_ENAB", false);
    if user_group && db.group_by_name(name).is_some() {
        return Err(PasswdError::GroupExists(name.into()));
    }
    let uid = match spec.uid {
        Some(uid) => {
            if let Some(other) = db.users().find(|u| u.uid == uid) {
                return Err(PasswdError::UidTaken(uid, other.name));
            }
            uid
        }
        None => db.new_id(&db.used_uids(), "UID", spec.system, None)?,
    };
    let gid = if user_group {
        let gid = db.new_id(&db.used_gids(), "GID", spec.system, Some(uid))?;
        db.add_group_entry(name, gid, "!");
        gid
    } else if let Some(p) = &primary {
        p.gid
    } else {
        let g = db.defs.useradd_str("GROUP").unwrap_or("100").to_string();
        match db.group_by_name_or_gid(&g) {
            Some(e) => e.gid,
            None => g.parse().unwrap_or(100),
        }
    };
    let home_base = db.defs.useradd_str("HOME").unwrap_or("/home").to_string();
    let home = spec.home_dir.clone().unwrap_or_else(|| format!("{}/{name}", home_base.trim_end_matches('/')));
    let shell = spec.shell.clone().unwrap_or_else(|| db.defs.useradd_str("SHELL").unwrap_or("").to_string());
    let gecos = spec.gecos.clone().unwrap_or_default();
    db.passwd.push(&[name.into(), "x".into(), uid.to_string(), gid.to_string(), gecos, home.clone(), shell]);
    let pw = spec.password_hash.as_deref().filter(|p| !p.is_empty()).unwrap_or("*").to_string();
    let lastchg = if day == 0 { -1 } else { day };
    let opt = |v: i64| if v < 0 { String::new() } else { v.to_string() };
    let aging = if spec.system {
        vec![String::new(); 5]
    } else {
        let inactive = db.defs.useradd_str("INACTIVE").and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
        vec![
            opt(db.defs.num("PASS_MIN_DAYS", -1)),
            opt(db.defs.num("PASS_MAX_DAYS", -1)),
            opt(db.defs.num("PASS_WARN_AGE", -1)),
            opt(inactive),
            String::new(),
        ]
    };
    let mut sp = vec![name.to_string(), pw, opt(lastchg)];
    sp.extend(aging);
    sp.push(String::new());
    db.shadow.push(&sp);
    for g in &supplementary {
        db.set_member(&g.name, name, true);
    }
    let (umin, umax) = db.defs.id_range("UID", false);
    if !spec.system && (umin..=umax).contains(&uid) {
        db.add_subids(name)?;
    }
    db.commit()?;
    if spec.create_home {
        create_home(db, &home, uid, gid)?;
    }
    if db.defs.useradd_str("CREATE_MAIL_SPOOL").is_some_and(|v| v.eq_ignore_ascii_case("yes")) {
        let dir = db.defs.login_str("MAIL_DIR").unwrap_or("/var/mail").to_string();
        let p = join(&db.root, &format!("{}/{name}", dir.trim_end_matches('/')));
        if p.parent().is_some_and(Path::is_dir) && !p.exists() {
            let mail_gid = db.group_by_name("mail").map_or(gid, |g| g.gid);
            write_atomic(&p, b"", 0o660, Some((uid, mail_gid)))?;
        }
    }
    Ok(Outcome::Created { id: uid })
}

fn modify_user(db: &mut Db, old: PwEntry, spec: &UserSpec, day: i64) -> Result<Outcome> {
    let name = old.name.clone();
    let mut changed = Vec::new();
    let i = db.passwd.find(&name).ok_or_else(|| PasswdError::NoSuchUser(name.clone()))?;
    let mut f = db.passwd.fields(i);
    let mut new_uid = old.uid;
    let mut new_gid = old.gid;
    if let Some(uid) = spec.uid {
        if uid != old.uid {
            if let Some(other) = db.users().find(|u| u.uid == uid) {
                return Err(PasswdError::UidTaken(uid, other.name));
            }
            f[2] = uid.to_string();
            new_uid = uid;
            changed.push("uid".to_string());
        }
    }
    if let Some(g) = &spec.primary_group {
        let e = db.group_by_name_or_gid(g).ok_or_else(|| PasswdError::NoSuchGroup(g.clone()))?;
        if e.gid != old.gid {
            f[3] = e.gid.to_string();
            new_gid = e.gid;
            changed.push("primaryGroup".to_string());
        }
    }
    if let Some(c) = &spec.gecos {
        if *c != old.gecos {
            f[4] = c.clone();
            changed.push("gecos".to_string());
        }
    }
    let mut move_home = None;
    if let Some(h) = &spec.home_dir {
        if *h != old.home {
            f[5] = h.clone();
            move_home = Some((old.home.clone(), h.clone()));
            changed.push("homeDir".to_string());
        }
    }
    if let Some(s) = &spec.shell {
        if *s != old.shell {
            f[6] = s.clone();
            changed.push("shell".to_string());
        }
    }
    db.passwd.set(i, &f);
    if let Some(pw) = &spec.password_hash {
        let pw = if pw.is_empty() { "*" } else { pw.as_str() };
        let lastchg = if day == 0 { String::new() } else { day.to_string() };
        match db.shadow.find(&name) {
            Some(j) => {
                let mut sf = db.shadow.fields(j);
                if sf.len() >= 3 {
                    sf[1] = pw.to_string();
                    sf[2] = lastchg;
                    db.shadow.set(j, &sf);
                }
            }
            None if db.shadow.exists => {
                db.shadow.push(&[
                    name.clone(),
                    pw.into(),
                    lastchg,
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
            None => {
                f[1] = pw.to_string();
                db.passwd.set(i, &f);
            }
        }
        changed.push("passwordHash".to_string());
    }
    if !spec.groups.is_empty() {
        let mut wanted = Vec::new();
        for g in &spec.groups {
            let e = db.group_by_name_or_gid(g).ok_or_else(|| PasswdError::NoSuchGroup(g.clone()))?;
            wanted.push(e.name);
        }
        let all: Vec<GrEntry> = db.groups().collect();
        let mut any = false;
        for g in all {
            let is = g.members.contains(&name);
            let want = wanted.contains(&g.name);
            if is != want {
                any = true;
            }
            db.set_member(&g.name, &name, want);
        }
        // gshadow lists can differ from group lists: make them agree too.
        if any {
            changed.push("groups".to_string());
        }
    }
    db.commit()?;
    if let Some((from, to)) = move_home {
        let src = join(&db.root, &from);
        let dst = join(&db.root, &to);
        if src.is_dir() {
            if fs::symlink_metadata(&dst).is_ok() {
                return Err(PasswdError::HomeExists { from, to });
            }
            if let Some(p) = dst.parent() {
                fs::create_dir_all(p).map_err(io(p))?;
            }
            fs::rename(&src, &dst).map_err(io(&dst))?;
        }
    }
    if new_uid != old.uid || new_gid != old.gid {
        let home = join(&db.root, &f[5]);
        if home.is_dir() {
            chown_tree(&home, old.uid, new_uid, old.gid, new_gid)?;
        }
    }
    Ok(if changed.is_empty() { Outcome::Unchanged { id: new_uid } } else { Outcome::Updated { id: new_uid, changed } })
}

/// `usermod -u/-g`: files in the home owned by the old ids get the new ones.
fn chown_tree(p: &Path, old_uid: u32, new_uid: u32, old_gid: u32, new_gid: u32) -> Result<()> {
    let m = fs::symlink_metadata(p).map_err(io(p))?;
    let uid = (m.uid() == old_uid).then_some(new_uid);
    let gid = (m.gid() == old_gid).then_some(new_gid);
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(p, uid, gid).map_err(io(p))?;
        if !m.file_type().is_symlink() {
            // chown clears setuid/setgid bits: put the mode back.
            fs::set_permissions(p, fs::Permissions::from_mode(m.mode() & 0o7777)).map_err(io(p))?;
        }
    }
    if m.is_dir() {
        for e in fs::read_dir(p).map_err(io(p))? {
            let e = e.map_err(io(p))?;
            chown_tree(&e.path(), old_uid, new_uid, old_gid, new_gid)?;
        }
    }
    Ok(())
}

/// Remove the user as `userdel --remove --root` does: entries, group
/// memberships, the user's own group (if nobody else uses it), the home
/// and the mail spool.
pub fn remove_user(root: &Path, name: &str) -> Result<Outcome> {
    let mut db = Db::load(root)?;
    let Some(u) = db.user_by_name(name) else { return Ok(Outcome::Absent) };
    db.passwd.remove(name);
    db.shadow.remove(name);
    db.subuid.remove(name);
    db.subgid.remove(name);
    let groups: Vec<GrEntry> = db.groups().collect();
    for g in &groups {
        db.set_member(&g.name, name, false);
    }
    if db.defs.bool("USERGROUPS_ENAB", false) {
        if let Some(g) = db.group_by_name(name) {
            let others = g.members.iter().any(|m| m != name) || db.users().any(|o| o.gid == g.gid);
            if g.gid == u.gid && !others {
                db.group.remove(name);
                db.gshadow.remove(name);
            }
        }
    }
    db.commit()?;
    let home = join(&db.root, &u.home);
    if u.home.starts_with('/') && u.home != "/" && home.is_dir() {
        fs::remove_dir_all(&home).map_err(io(&home))?;
    }
    let dir = db.defs.login_str("MAIL_DIR").unwrap_or("/var/mail").to_string();
    let _ = fs::remove_file(join(&db.root, &format!("{dir}/{name}")));
    Ok(Outcome::Removed)
}

/// `root` joined with an absolute path inside it (`..` dropped).
pub(crate) fn join(root: &Path, p: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            continue;
        }
        out.push(c);
    }
    out
}

fn create_home(db: &Db, home: &str, uid: u32, gid: u32) -> Result<()> {
    let p = join(&db.root, home);
    if fs::symlink_metadata(&p).is_ok() {
        return Ok(());
    }
    // Missing parents: 0755 root:root, as useradd makes them.
    let mut cur = db.root.clone();
    let comps: Vec<&str> = home.split('/').filter(|c| !c.is_empty() && *c != "." && *c != "..").collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        if fs::symlink_metadata(&cur).is_err() {
            fs::create_dir(&cur).map_err(io(&cur))?;
            fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).map_err(io(&cur))?;
            std::os::unix::fs::lchown(&cur, Some(0), Some(0)).map_err(io(&cur))?;
        }
    }
    let umask = db.defs.num("UMASK", 0o22) as u32 & 0o777;
    let mode = db.defs.num("HOME_MODE", (0o777 & !umask) as i64) as u32 & 0o7777;
    fs::create_dir(&p).map_err(io(&p))?;
    std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(io(&p))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io(&p))?;
    let skel = db.defs.useradd_str("SKEL").unwrap_or("/etc/skel").to_string();
    let skel = join(&db.root, &skel);
    if skel.is_dir() {
        copy_tree(&skel, &p, uid, gid)?;
    }
    Ok(())
}

/// Copy the skeleton's entries into `dst` owned by uid:gid, modes and
/// modification times kept (as shadow's `copy_tree`).
fn copy_tree(src: &Path, dst: &Path, uid: u32, gid: u32) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src).map_err(io(src))?.collect::<std::io::Result<_>>().map_err(io(src))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s).map_err(io(&s))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&d).map_err(io(&d))?;
            copy_tree(&s, &d, uid, gid)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&s).map_err(io(&s))?;
            std::os::unix::fs::symlink(&t, &d).map_err(io(&d))?;
        } else if ft.is_file() {
            fs::copy(&s, &d).map_err(io(&d))?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&d, Some(uid), Some(gid)).map_err(io(&d))?;
        if !ft.is_symlink() {
            fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o7777)).map_err(io(&d))?;
            if let Ok(mtime) = m.modified() {
                let f = fs::File::open(&d).map_err(io(&d))?;
                let _ = f.set_times(fs::FileTimes::new().set_modified(mtime).set_accessed(m.accessed().unwrap_or(mtime)));
            }
        }
    }
    Ok(())
}

/// Write `keys` (one per line, newline-terminated) to the user's
/// `~/.ssh/authorized_keys`, replacing what was there, as Ignition does
/// with `IGNITION_WRITE_AUTHORIZED_KEYS_FRAGMENT=false`: missing
/// directories (the home too) are created 0700 owned by the user; an
/// existing file keeps its mode and owner, a new one is 0600 owned by the
/// user. Written through a temp file + rename.
pub fn set_authorized_keys(root: &Path, user: &str, keys: &[String]) -> Result<PathBuf> {
    let u = lookup_user(root, user)?.ok_or_else(|| PasswdError::NoSuchUser(user.into()))?;
    let home = join(root, &u.home);
    let ssh = home.join(".ssh");
    let mut cur = root.to_path_buf();
    for c in Path::new(&u.home).join(".ssh").components() {
        if let std::path::Component::Normal(c) = c {
            cur.push(c);
            if fs::symlink_metadata(&cur).is_err() {
                fs::create_dir(&cur).map_err(io(&cur))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o700)).map_err(io(&cur))?;
                std::os::unix::fs::lchown(&cur, Some(u.uid), Some(u.gid)).map_err(io(&cur))?;
            }
        }
    }
    let file = ssh.join("authorized_keys");
    let mut text = keys.join("\n");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let (mode, owner) = match fs::metadata(&file) {
        Ok(m) => (m.mode() & 0o7777, (m.uid(), m.gid())),
        Err(_) => (0o600, (u.uid, u.gid)),
    };
    write_atomic(&file, text.as_bytes(), mode, Some(owner))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc/default")).unwrap();
        for (p, c) in files {
            let p = t.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, c).unwrap();
        }
        t
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:\nusers:x:100:\nnogroup:x:65534:\n";
    const SHADOW: &str = "root:*:20000:0:99999:7:::\nnobody:*:20000:0:99999:7:::\n";
    const GSHADOW: &str = "root:*::\nsudo:*::\nusers:*::\nnogroup:*::\n";
    const DEFS: &str = "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nUSERGROUPS_ENAB yes\nPASS_MIN_DAYS 0\nPASS_MAX_DAYS\t99999\nPASS_WARN_AGE 7\nUMASK 022\n";

    fn debianish() -> tempfile::TempDir {
        root_with(&[
            ("etc/passwd", PASSWD),
            ("etc/group", GROUP),
            ("etc/shadow", SHADOW),
            ("etc/gshadow", GSHADOW),
            ("etc/login.defs", DEFS),
            ("etc/default/useradd", "SHELL=/bin/sh\n"),
            ("etc/subuid", ""),
            ("etc/subgid", ""),
            ("etc/skel/.profile", "# profile\n"),
        ])
    }

    fn read(t: &tempfile::TempDir, p: &str) -> String {
        fs::read_to_string(t.path().join(p)).unwrap()
    }

    /// chown needs root; the tests that create owned homes skip otherwise.
    fn am_root() -> bool {
        fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    #[test]
    fn new_regular_user_with_groups_and_home() {
        if !am_root() {
            eprintln!("skipped: needs root (chown)");
            return;
        }
        let t = debianish();
        let spec = UserSpec {
            name: "core".into(),
            gecos: Some("Core".into()),
            groups: vec!["sudo".into()],
            create_home: true,
            shell: Some("/bin/bash".into()),
            ..Default::default()
        };
        assert_eq!(ensure_user(t.path(), &spec, 19675).unwrap(), Outcome::Created { id: 1000 });
        assert!(read(&t, "etc/passwd").ends_with("core:x:1000:1000:Core:/home/core:/bin/bash\n"));
        assert!(read(&t, "etc/shadow").ends_with("core:*:19675:0:99999:7:::\n"));
        assert!(read(&t, "etc/group").contains("sudo:x:27:core\n"));
        assert!(read(&t, "etc/group").ends_with("core:x:1000:\n"));
        assert!(read(&t, "etc/gshadow").contains("sudo:*::core\n"));
        assert!(read(&t, "etc/gshadow").ends_with("core:!::\n"));
        assert_eq!(read(&t, "etc/subuid"), "core:100000:65536\n");
        assert_eq!(read(&t, "etc/subgid"), "core:100000:65536\n");
        let h = fs::metadata(t.path().join("home/core")).unwrap();
        assert_eq!((h.mode() & 0o7777, h.uid(), h.gid()), (0o755, 1000, 1000));
        assert_eq!(read(&t, "home/core/.profile"), "# profile\n");
        // Second regular user: the next uid, the next subordinate block.
        ensure_user(t.path(), &UserSpec { name: "b".into(), ..Default::default() }, 1).unwrap();
        assert!(read(&t, "etc/passwd").ends_with("b:x:1001:1001::/home/b:/bin/sh\n"));
        assert_eq!(read(&t, "etc/subuid"), "core:100000:65536\nb:165536:65536\n");
        assert!(!t.path().join("home/b").exists());
    }

    #[test]
    fn system_users_count_down_and_skip_subids() {
        let t = debianish();
        let s = UserSpec { name: "svc".into(), system: true, uid: Some(1500), ..Default::default() };
        assert_eq!(ensure_user(t.path(), &s, 5).unwrap(), Outcome::Created { id: 1500 });
        // gid 1500 is outside the system group range: allocated from the top.
        assert!(read(&t, "etc/passwd").ends_with("svc:x:1500:999::/home/svc:/bin/sh\n"));
        assert!(read(&t, "etc/shadow").ends_with("svc:*:5::::::\n"));
        let s2 = UserSpec { name: "s2".into(), system: true, password_hash: Some("$6$x".into()), ..Default::default() };
        assert_eq!(ensure_user(t.path(), &s2, 5).unwrap(), Outcome::Created { id: 999 });
        assert!(read(&t, "etc/group").ends_with("svc:x:999:\ns2:x:998:\n"));
        assert!(read(&t, "etc/shadow").ends_with("s2:$6$x:5::::::\n"));
        assert_eq!(read(&t, "etc/subuid"), "");
    }

    #[test]
    fn groups_and_errors() {
        let t = debianish();
        let g = GroupSpec { name: "app".into(), gid: Some(2000), ..Default::default() };
        assert_eq!(ensure_group(t.path(), &g).unwrap(), Outcome::Created { id: 2000 });
        assert_eq!(ensure_group(t.path(), &g).unwrap(), Outcome::Unchanged { id: 2000 });
        assert!(read(&t, "etc/gshadow").ends_with("app:*::\n"));
        let dup = GroupSpec { name: "other".into(), gid: Some(27), ..Default::default() };
        assert!(matches!(ensure_group(t.path(), &dup), Err(PasswdError::GidTaken(27, _))));
        let sys = GroupSpec { name: "sg".into(), system: true, ..Default::default() };
        assert_eq!(ensure_group(t.path(), &sys).unwrap(), Outcome::Created { id: 999 });
        let ng = GroupSpec { name: "ng".into(), ..Default::default() };
        assert_eq!(ensure_group(t.path(), &ng).unwrap(), Outcome::Created { id: 2001 });
        let u = UserSpec { name: "x".into(), groups: vec!["nosuch".into()], ..Default::default() };
        assert!(matches!(ensure_user(t.path(), &u, 1), Err(PasswdError::NoSuchGroup(_))));
        let u = UserSpec { name: "app".into(), ..Default::default() };
        assert!(matches!(ensure_user(t.path(), &u, 1), Err(PasswdError::GroupExists(_))));
        let u = UserSpec { name: "bad:name".into(), ..Default::default() };
        assert!(matches!(ensure_user(t.path(), &u, 1), Err(PasswdError::BadName(_))));
        let u = UserSpec { name: "y".into(), uid: Some(0), ..Default::default() };
        assert!(matches!(ensure_user(t.path(), &u, 1), Err(PasswdError::UidTaken(0, _))));
        // Nothing half-written: no user x or y.
        assert!(!read(&t, "etc/passwd").contains("\nx:") && !read(&t, "etc/passwd").contains("\ny:"));
        assert_eq!(remove_group(t.path(), "ng").unwrap(), Outcome::Removed);
        assert!(!read(&t, "etc/group").contains("ng:"));
    }

    #[test]
    fn usermod_replaces_groups_and_password() {
        let t = debianish();
        let u = UserSpec { name: "core".into(), groups: vec!["sudo".into(), "users".into()], ..Default::default() };
        ensure_user(t.path(), &u, 1).unwrap();
        assert!(read(&t, "etc/group").contains("users:x:100:core\n"));
        let m = UserSpec { name: "core".into(), groups: vec!["users".into()], password_hash: Some("H".into()), ..Default::default() };
        let out = ensure_user(t.path(), &m, 77).unwrap();
        assert_eq!(out, Outcome::Updated { id: 1000, changed: vec!["passwordHash".into(), "groups".into()] });
        assert!(read(&t, "etc/group").contains("sudo:x:27:\n"));
        assert!(read(&t, "etc/gshadow").contains("sudo:*::\n"));
        assert!(read(&t, "etc/shadow").contains("core:H:77:0:99999:7:::\n"));
        let same = UserSpec { name: "root".into(), ..Default::default() };
        assert_eq!(ensure_user(t.path(), &same, 77).unwrap(), Outcome::Unchanged { id: 0 });
        assert_eq!(remove_user(t.path(), "core").unwrap(), Outcome::Removed);
        assert!(!read(&t, "etc/group").contains("core"));
        assert!(!read(&t, "etc/subuid").contains("core"));
    }

    #[test]
    fn authorized_keys_file() {
        if !am_root() {
            eprintln!("skipped: needs root (chown)");
            return;
        }
        let t = debianish();
        ensure_user(t.path(), &UserSpec { name: "core".into(), ..Default::default() }, 1).unwrap();
        let p = set_authorized_keys(t.path(), "core", &["ssh-ed25519 AAAA a".into(), "ssh-rsa BBBB b".into()]).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "ssh-ed25519 AAAA a\nssh-rsa BBBB b\n");
        for (path, mode) in [(p.clone(), 0o600), (p.parent().unwrap().to_path_buf(), 0o700), (t.path().join("home/core"), 0o700)] {
            let m = fs::metadata(path).unwrap();
            assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (mode, 1000, 1000));
        }
        assert!(matches!(set_authorized_keys(t.path(), "nobody2", &[]), Err(PasswdError::NoSuchUser(_))));
    }

    #[test]
    fn login_defs_numbers() {
        assert_eq!(parse_c_long("022"), Some(0o22));
        assert_eq!(parse_c_long("0x10"), Some(16));
        assert_eq!(parse_c_long("1000"), Some(1000));
        assert_eq!(parse_c_long("-1"), Some(-1));
        assert_eq!(parse_c_long("x"), None);
    }
}
