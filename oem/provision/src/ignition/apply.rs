//! The `files` stage of Ignition 2.14 on a directory root
//! (`internal/exec/stages/files`), in its order:
//!
//! 1. groups, then users (created as `groupadd`/`useradd` would, updated
//!    as `usermod`, removed for `shouldExist: false`), each user's
//!    password, then SSH keys ([`crate::passwd`]);
//! 2. directories, files and symbolic links, shallowest path first, then
//!    hard links. Parent components that are symlinks are resolved inside
//!    the root (Ignition's `JoinPath`); `overwrite: true` removes what is
//!    there first; otherwise an existing path is an error, except a
//!    regular file when no contents are given (kept, appended to) and a
//!    directory (kept, its mode and owner set); missing parents are 0755
//!    root:root; files default to 0644, directories to 0755; the owner
//!    defaults to that of what is there (root for new entries);
//! 3. units: drop-ins and contents under `/etc/systemd/system`, masks as
//!    symlinks to `/dev/null`, `enabled` as lines of
//!    `/etc/systemd/system-preset/20-ignition.preset` that systemd applies
//!    on first boot (our images ship `/etc/machine-id` = `uninitialized`);
//!    `enabled: false` also removes existing enablement symlinks, as
//!    Ignition's `systemctl --root disable` does.
//!
//! Files are written to a temp name in their directory and renamed; a
//! failed step leaves no temp file behind and returns the JSON path of the
//! entry. `storage.filesystems` are not applied here.
//!
//! On purpose unlike Ignition: preset lines are written in config order
//! (Ignition's come out of a Go map, in random order); no
//! `/etc/.ignition-result.json`, no SELinux relabelling.

use super::content::decode_resource;
use super::parse::{at, clean_path};
use super::*;
use crate::passwd::{self, GroupSpec, Outcome, UserSpec};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`apply`] needs besides the config.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Today as days since 1970-01-01: the `lastchg` of new and changed
    /// passwords in `/etc/shadow`.
    pub day: i64,
}

/// One thing done: what, to which path (or user/group), from which JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub action: String,
    pub target: String,
    pub from: String,
}

/// Everything [`apply`] did, in order, and the config's warnings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub steps: Vec<Step>,
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    fn step(&mut self, action: &str, target: impl Into<String>, from: &str) {
        self.steps.push(Step { action: action.into(), target: target.into(), from: from.into() });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the config cannot be applied: {0}")]
    Config(#[from] ConfigError),
    #[error("{from}: {message} (at {path}); done before: {done} steps")]
    Step { from: String, path: String, message: String, done: usize },
}

struct Ctx<'a> {
    root: &'a Path,
    report: Report,
}

impl Ctx<'_> {
    fn fail(&self, from: &str, path: &str, message: impl std::fmt::Display) -> ApplyError {
        ApplyError::Step { from: from.into(), path: path.into(), message: message.to_string(), done: self.report.steps.len() }
    }

    /// Ignition's `JoinPath`: `p` inside the root, symlinks among the
    /// parent components resolved relative to the root (one level each,
    /// as Ignition does); the last component is not followed.
    fn join(&self, p: &str) -> PathBuf {
        let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
        let Some((last, parents)) = comps.split_last() else { return self.root.to_path_buf() };
        let mut real = String::from("/");
        for c in parents {
            let tmp = clean_path(&format!("{real}/{c}"));
            let host = passwd::join(self.root, &tmp);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => match fs::read_link(&host) {
                    Ok(t) => {
                        let t = t.to_string_lossy().into_owned();
                        real = if t.starts_with('/') {
                            clean_path(&t)
                        } else {
                            let dir = tmp.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d }).to_string();
                            clean_path(&format!("{dir}/{t}"))
                        };
                    }
                    Err(_) => real = tmp,
                },
                _ => real = tmp,
            }
        }
        passwd::join(self.root, &format!("{real}/{last}"))
    }

    /// The path shown in errors and the report: relative to the root.
    fn show(&self, p: &Path) -> String {
        match p.strip_prefix(self.root) {
            Ok(r) => format!("/{}", r.display()),
            Err(_) => p.display().to_string(),
        }
    }
}

fn uid_of(root: &Path, o: &Owner, default: u32, what: &str) -> Result<u32, String> {
    if let Some(id) = o.id {
        return u32::try_from(id).map_err(|_| format!("{what} id {id} is out of range (0–4294967295)"));
    }
    match o.name.as_deref().filter(|n| !n.is_empty()) {
        None => Ok(default),
        Some(n) if what == "user" => match passwd::lookup_user(root, n) {
            Ok(Some(u)) => Ok(u.uid),
            Ok(None) => Err(format!("no such user {n:?} in the root's /etc/passwd")),
            Err(e) => Err(e.to_string()),
        },
        Some(n) => match passwd::lookup_group(root, n) {
            Ok(Some(g)) => Ok(g.gid),
            Ok(None) => Err(format!("no such group {n:?} in the root's /etc/group")),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// `mkdir -p` of the parents of `p` with 0755 (Ignition's `MkdirForFile`).
fn mkdir_parents(p: &Path) -> std::io::Result<()> {
    match p.parent() {
        Some(parent) => mkdir_all(parent),
        None => Ok(()),
    }
}

fn mkdir_all(p: &Path) -> std::io::Result<()> {
    if fs::metadata(p).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        mkdir_all(parent)?;
    }
    match fs::create_dir(p) {
        Ok(()) => fs::set_permissions(p, fs::Permissions::from_mode(0o755)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && fs::metadata(p).is_ok_and(|m| m.is_dir()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Write `data` to `p` (0644, root) through a temp file in its directory.
fn write_file(p: &Path, data: &[u8]) -> std::io::Result<()> {
    mkdir_parents(p)?;
    passwd::write_atomic(p, data, 0o644, None).map_err(|e| match e {
        passwd::PasswdError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}

fn remove_all(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Ignition's `SetPermissions`: the mode if given, then the owner (by
/// default the one of what is there, following symlinks).
fn set_permissions(root: &Path, p: &Path, mode: Option<i64>, node: &Node) -> Result<(), String> {
    if let Some(m) = mode {
        fs::set_permissions(p, fs::Permissions::from_mode(m as u32 & 0o7777)).map_err(|e| format!("changing the mode: {e}"))?;
    }
    let (du, dg) = fs::metadata(p).map_or((0, 0), |m| (m.uid(), m.gid()));
    let uid = uid_of(root, &node.user, du, "user")?;
    let gid = uid_of(root, &node.group, dg, "group")?;
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| format!("changing the owner to {uid}:{gid}: {e}"))?;
    if let Some(m) = mode {
        // chown clears setuid/setgid: set the mode again.
        if m & 0o6000 != 0 {
            fs::set_permissions(p, fs::Permissions::from_mode(m as u32 & 0o7777)).map_err(|e| format!("changing the mode: {e}"))?;
        }
    }
    Ok(())
}

/// Apply `cfg` to the directory `root` (see the module docs). The config
/// is checked first ([`check`]'s rules); nothing is written if it fails.
pub fn apply(root: &Path, cfg: &Config, opts: &ApplyOptions) -> Result<Report, ApplyError> {
    let mut diags = Vec::new();
    validate::validate(cfg, &mut diags);
    validate::unsupported(cfg, &mut diags);
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(ConfigError { diagnostics: diags }.into());
    }
    let mut cx = Ctx { root, report: Report { steps: Vec::new(), warnings: diags } };
    passwd_stage(&mut cx, cfg, opts)?;
    entries_stage(&mut cx, cfg)?;
    units_stage(&mut cx, cfg)?;
    Ok(cx.report)
}

fn id32(v: Option<i64>, what: &str) -> Result<Option<u32>, String> {
    v.map(|i| u32::try_from(i).map_err(|_| format!("{what} {i} is out of range (0–4294967295)"))).transpose()
}

fn passwd_stage(cx: &mut Ctx, cfg: &Config, opts: &ApplyOptions) -> Result<(), ApplyError> {
    let root = cx.root;
    for g in &cfg.passwd.groups {
        if g.should_exist == Some(false) {
            let out = passwd::remove_group(root, &g.name).map_err(|e| cx.fail(&g.origin, &g.name, e))?;
            if out == Outcome::Removed {
                cx.report.step("group-removed", &g.name, &g.origin);
            }
            continue;
        }
        // Ignition runs groupadd, which fails on an existing group.
        if passwd::lookup_group(root, &g.name).map_err(|e| cx.fail(&g.origin, &g.name, e))?.is_some() {
            return Err(cx.fail(
                &g.origin,
                &g.name,
                format!("group {:?} exists already in the root (Ignition's groupadd fails here too)", g.name),
            ));
        }
        let gid = id32(g.gid, "gid").map_err(|e| cx.fail(&at(&g.origin, "gid"), &g.name, e))?;
        let spec = GroupSpec { name: g.name.clone(), gid, password_hash: g.password_hash.clone(), system: g.system == Some(true) };
        passwd::ensure_group(root, &spec).map_err(|e| cx.fail(&g.origin, &g.name, e))?;
        cx.report.step("group-created", &g.name, &g.origin);
    }
    for u in &cfg.passwd.users {
        if u.should_exist == Some(false) {
            let out = passwd::remove_user(root, &u.name).map_err(|e| cx.fail(&u.origin, &u.name, e))?;
            if out == Outcome::Removed {
                cx.report.step("user-removed", &u.name, &u.origin);
            }
            continue;
        }
        let uid = id32(u.uid, "uid").map_err(|e| cx.fail(&at(&u.origin, "uid"), &u.name, e))?;
        let spec = UserSpec {
            name: u.name.clone(),
            uid,
            password_hash: u.password_hash.clone(),
            gecos: u.gecos.clone().filter(|s| !s.is_empty()),
            home_dir: u.home_dir.clone().filter(|s| !s.is_empty()),
            create_home: u.no_create_home != Some(true),
            primary_group: u.primary_group.clone().filter(|s| !s.is_empty()),
            groups: u.groups.clone(),
            no_user_group: u.no_user_group == Some(true),
            no_log_init: u.no_log_init == Some(true),
            shell: u.shell.clone().filter(|s| !s.is_empty()),
            system: u.system == Some(true),
        };
        let out = passwd::ensure_user(root, &spec, opts.day).map_err(|e| cx.fail(&u.origin, &u.name, e))?;
        let action = match out {
            Outcome::Created { .. } => "user-created",
            Outcome::Updated { .. } => "user-updated",
            _ => "user-unchanged",
        };
        cx.report.step(action, &u.name, &u.origin);
        if !u.ssh_authorized_keys.is_empty() {
            let p = passwd::set_authorized_keys(root, &u.name, &u.ssh_authorized_keys)
                .map_err(|e| cx.fail(&at(&u.origin, "sshAuthorizedKeys"), &u.name, e))?;
            let shown = cx.show(&p);
            cx.report.step("ssh-keys-written", shown, &at(&u.origin, "sshAuthorizedKeys"));
        }
    }
    Ok(())
}

enum Entry<'a> {
    Dir(&'a Directory),
    File(&'a File, Vec<u8>, Vec<Vec<u8>>),
    Link(&'a Link),
}

impl Entry<'_> {
    fn node(&self) -> &Node {
        match self {
            Entry::Dir(d) => &d.node,
            Entry::File(f, ..) => &f.node,
            Entry::Link(l) => &l.node,
        }
    }
}

fn depth(p: &str) -> usize {
    clean_path(p).split('/').filter(|c| !c.is_empty()).count()
}

fn entries_stage(cx: &mut Ctx, cfg: &Config) -> Result<(), ApplyError> {
    let st = &cfg.storage;
    let mut entries: Vec<(PathBuf, Entry)> = Vec::new();
    let mut hard: Vec<(PathBuf, Entry)> = Vec::new();
    let mut seen: std::collections::BTreeMap<PathBuf, String> = Default::default();
    let mut resolve = |cx: &Ctx, n: &Node| -> Result<PathBuf, ApplyError> {
        let p = cx.join(&n.path);
        if let Some(other) = seen.insert(p.clone(), n.path.clone()) {
            return Err(cx.fail(&n.origin, &n.path, format!("resolves to {} after symlink chasing, as {other:?} does", cx.show(&p))));
        }
        Ok(p)
    };
    for d in &st.directories {
        entries.push((resolve(cx, &d.node)?, Entry::Dir(d)));
    }
    for f in &st.files {
        // Decoded up front (check() did it too): a bad source fails before anything is written.
        let body = match f.contents.source {
            Some(_) => decode_resource(&f.contents).map_err(|e| cx.fail(&at(&f.contents.origin, "source"), &f.node.path, e))?,
            None => Vec::new(),
        };
        let mut appends = Vec::new();
        for a in &f.append {
            appends.push(decode_resource(a).map_err(|e| cx.fail(&at(&a.origin, "source"), &f.node.path, e))?);
        }
        entries.push((resolve(cx, &f.node)?, Entry::File(f, body, appends)));
    }
    for l in &st.links {
        let e = (resolve(cx, &l.node)?, Entry::Link(l));
        if l.hard == Some(true) {
            hard.push(e);
        } else {
            entries.push(e);
        }
    }
    entries.sort_by_key(|(_, e)| depth(&e.node().path));
    entries.extend(hard);
    for (p, e) in &entries {
        let node = e.node();
        let shown = cx.show(p);
        if node.overwrite == Some(true) {
            remove_all(p).map_err(|err| cx.fail(&node.origin, &shown, format!("removing what is there (overwrite: true): {err}")))?;
        }
        let r = match e {
            Entry::Dir(d) => create_dir(cx, p, d),
            Entry::File(f, body, appends) => create_file(cx, p, f, body, appends),
            Entry::Link(l) => create_link(cx, p, l),
        };
        match r {
            Ok(action) => cx.report.step(action, shown, &node.origin),
            Err(m) => return Err(cx.fail(&node.origin, &shown, m)),
        }
    }
    Ok(())
}

fn create_dir(cx: &Ctx, p: &Path, d: &Directory) -> Result<&'static str, String> {
    let action = match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            mkdir_all(p).map_err(|e| format!("creating the directory: {e}"))?;
            "directory-created"
        }
        Err(e) => return Err(format!("stat: {e}")),
        Ok(m) if !m.is_dir() => return Err("a non-directory exists there already and overwrite is false".into()),
        Ok(_) => "directory-updated",
    };
    set_permissions(cx.root, p, d.mode, &d.node)?;
    Ok(action)
}

fn create_file(cx: &Ctx, p: &Path, f: &File, body: &[u8], appends: &[Vec<u8>]) -> Result<&'static str, String> {
    let mut has_source = f.contents.source.is_some();
    let action = match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            has_source = true;
            "file-written"
        }
        Err(e) => return Err(format!("stat: {e}")),
        Ok(m) if !m.file_type().is_file() => return Err("a non regular file exists there already and overwrite is false".into()),
        Ok(_) if has_source => return Err("a file exists there already and overwrite is false".into()),
        Ok(_) => "file-kept",
    };
    if has_source {
        write_file(p, body).map_err(|e| format!("writing the file: {e}"))?;
    }
    for a in appends {
        let mut fh = fs::OpenOptions::new().append(true).create(true).open(p).map_err(|e| format!("appending: {e}"))?;
        fh.write_all(a).map_err(|e| format!("appending: {e}"))?;
    }
    set_permissions(cx.root, p, f.mode, &f.node)?;
    Ok(if action == "file-kept" && !appends.is_empty() { "file-appended" } else { action })
}

fn create_link(cx: &Ctx, p: &Path, l: &Link) -> Result<&'static str, String> {
    let target = l.target.as_deref().unwrap_or("");
    let hard = l.hard == Some(true);
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("stat: {e}")),
        Ok(m) if hard => {
            let t = cx.join(target);
            let tm = fs::symlink_metadata(&t).map_err(|e| format!("the hard link's target {target:?} does not exist: {e}"))?;
            if (tm.dev(), tm.ino()) != (m.dev(), m.ino()) {
                return Err("a file already exists at that path but is not the target and overwrite is false".into());
            }
            return Ok("hard-link-exists");
        }
        Ok(m) if m.file_type().is_symlink() => {
            let cur = fs::read_link(p).map_err(|e| format!("reading the link: {e}"))?;
            if clean_path(&cur.to_string_lossy()) != clean_path(target) {
                return Err(format!("a symlink exists at that path but points to {}, not {target} and overwrite is false", cur.display()));
            }
            return Ok("symlink-exists");
        }
        Ok(_) => return Err("a non-symlink already exists at that path and overwrite is false".into()),
    }
    mkdir_parents(p).map_err(|e| format!("creating leading directories: {e}"))?;
    if hard {
        let t = cx.join(target);
        fs::hard_link(&t, p).map_err(|e| format!("creating the hard link to {target}: {e}"))?;
        return Ok("hard-link-created");
    }
    std::os::unix::fs::symlink(target, p).map_err(|e| format!("creating the symlink: {e}"))?;
    set_permissions(cx.root, p, None, &l.node)?;
    Ok("symlink-created")
}

const PRESET: &str = "/etc/systemd/system-preset/20-ignition.preset";

fn units_stage(cx: &mut Ctx, cfg: &Config) -> Result<(), ApplyError> {
    // (unit or template, enabled, instances), in config order.
    let mut presets: Vec<(String, bool, Vec<String>)> = Vec::new();
    for u in &cfg.systemd.units {
        for d in &u.dropins {
            let Some(c) = &d.contents else { continue };
            let p = cx.join(&format!("/etc/systemd/system/{}.d/{}", u.name, d.name));
            let shown = cx.show(&p);
            write_file(&p, c.as_bytes()).map_err(|e| cx.fail(&d.origin, &shown, format!("writing the drop-in: {e}")))?;
            cx.report.step("dropin-written", shown, &d.origin);
        }
        if let Some(c) = u.contents.as_deref().filter(|c| !c.is_empty()) {
            let p = cx.join(&format!("/etc/systemd/system/{}", u.name));
            let shown = cx.show(&p);
            write_file(&p, c.as_bytes()).map_err(|e| cx.fail(&at(&u.origin, "contents"), &shown, format!("writing the unit: {e}")))?;
            cx.report.step("unit-written", shown, &u.origin);
        }
        if let Some(en) = u.enabled {
            if let (Some(at_i), Some(dot)) = (u.name.find('@'), u.name.rfind('.')) {
                if dot > at_i {
                    let template = format!("{}{}", &u.name[..=at_i], &u.name[dot..]);
                    let inst = u.name[at_i + 1..dot].to_string();
                    match presets.iter_mut().find(|(t, e, i)| *t == template && *e == en && !i.is_empty()) {
                        Some(p) => p.2.push(inst),
                        None => presets.push((template, en, vec![inst])),
                    }
                }
            } else {
                presets.retain(|(t, e, _)| !(*t == u.name && *e == en));
                presets.push((u.name.clone(), en, Vec::new()));
            }
        }
        match u.mask {
            Some(true) => {
                let p = cx.join(&format!("/etc/systemd/system/{}", u.name));
                let shown = cx.show(&p);
                let r = mkdir_parents(&p).and_then(|_| remove_all(&p)).and_then(|_| std::os::unix::fs::symlink("/dev/null", &p));
                r.map_err(|e| cx.fail(&at(&u.origin, "mask"), &shown, format!("masking: {e}")))?;
                cx.report.step("unit-masked", shown, &u.origin);
            }
            Some(false) => {
                let p = cx.join(&format!("/etc/systemd/system/{}", u.name));
                if fs::read_link(&p).is_ok_and(|t| t == Path::new("/dev/null")) {
                    let shown = cx.show(&p);
                    fs::remove_file(&p).map_err(|e| cx.fail(&at(&u.origin, "mask"), &shown, format!("unmasking: {e}")))?;
                    cx.report.step("unit-unmasked", shown, &u.origin);
                }
            }
            None => {}
        }
    }
    if presets.is_empty() {
        return Ok(());
    }
    let p = cx.join(PRESET);
    let shown = cx.show(&p);
    let mut text = fs::read(&p).unwrap_or_default();
    for (unit, en, inst) in &presets {
        let what = if inst.is_empty() { unit.clone() } else { format!("{unit} {}", inst.join(" ")) };
        if !en {
            disable_symlinks(cx, unit);
        }
        text.extend_from_slice(format!("{} {what}\n", if *en { "enable" } else { "disable" }).as_bytes());
        let from =
            cfg.systemd.units.iter().find(|u| u.name == *unit || inst.iter().any(|i| u.name == unit.replacen("@.", &format!("@{i}."), 1)));
        cx.report.step(
            if *en { "preset-enable" } else { "preset-disable" },
            what.clone(),
            from.map_or("systemd.units", |u| u.origin.as_str()),
        );
    }
    write_file(&p, &text).map_err(|e| cx.fail("systemd.units", &shown, format!("writing the preset file: {e}")))?;
    Ok(())
}

/// What `systemctl --root disable UNIT` removes: symlinks named UNIT in
/// `/etc/systemd/system/*.{wants,requires,upholds}/`, and aliases (other
/// symlinks in `/etc/systemd/system` that point to a file named UNIT).
fn disable_symlinks(cx: &Ctx, unit: &str) {
    let dir = cx.join("/etc/systemd/system/x");
    let Some(dir) = dir.parent() else { return };
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        if m.is_dir() && [".wants", ".requires", ".upholds"].iter().any(|s| name.ends_with(s)) {
            let q = p.join(unit);
            if fs::symlink_metadata(&q).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = fs::remove_file(&q);
            }
        } else if m.file_type().is_symlink() && name != unit {
            if let Ok(t) = fs::read_link(&p) {
                if t.file_name().is_some_and(|f| f == unit) {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }
}
