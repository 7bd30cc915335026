//! A [`CloudConfig`] turned into a [`Plan`] (pure data) and applied to a
//! root directory.
//!
//! # What goes where
//!
//! * Paths are paths of the booted system. Those under `/run` go to
//!   [`ApplyOptions::run_dir`] (in the initramfs that is the agent's own
//!   `/run`, which is moved onto the root at switch_root; the root's `/run`
//!   directory is hidden by that mount), all others under `root`.
//! * Every path is resolved inside its root: `..` stops at the root and
//!   symlinks are followed as the booted system would follow them (an
//!   absolute target starts again at the root), so nothing is ever written
//!   outside it.
//! * Files are written to a temp file in the same directory, given their
//!   owner, mode and content, synced and renamed over the target (a symlink
//!   at the target is replaced, not followed). Missing parents are created
//!   0755 root:root. Default mode 0644, default owner root:root; names are
//!   looked up in the root's `/etc/passwd` and `/etc/group` (after `users`
//!   are created), numbers are taken as they are. An unknown owner fails
//!   that file, which is then not written.
//! * `append: true` (cloud-init) writes the old content plus the new one,
//!   atomically too; a missing file is created.
//!
//! # Units
//!
//! `coreos.units[]` as coreos-cloudinit placed them: `/etc/systemd/system`
//! (`/run/systemd/system` with `runtime: true`), and `/etc/systemd/network`
//! (`/run/…`) for `.network`, `.netdev` and `.link` files. A unit without
//! `content` is not written (it names a unit of the image); drop-ins go to
//! `NAME.d/`.
//!
//! **`enable` creates the symlinks** that `systemctl enable` would:
//! `TARGET.wants/NAME` (`WantedBy=`), `TARGET.requires/NAME`
//! (`RequiredBy=`) and `Alias=` links, pointing at the unit file, read from
//! the root (`/etc/systemd/system`, `/run/systemd/system`,
//! `/usr/lib/systemd/system`, `/lib/systemd/system`, in systemd's order),
//! under `/etc` or, with `runtime: true`, under `/run` (coreos-cloudinit
//! called `EnableUnitFiles(runtime)`). Not a preset file: systemd applies
//! presets only on the very first boot (machine-id uninitialized), and
//! cloud-config is applied on every boot, so a unit enabled by a later
//! user_data would never be. A unit without `[Install]` is reported and not
//! enabled, as `systemctl enable` does.
//!
//! `mask` replaces the unit path with a symlink to `/dev/null`;
//! a runtime unit that is not masked is unmasked (a `/dev/null` link or
//! empty file at its `/run` path removed), as coreos-cloudinit did.
//!
//! # What is left to a running system
//!
//! A unit's `command` cannot run before systemd does. [`Report::after_boot`]
//! holds argument vectors, in order: `systemctl COMMAND NAME` for each unit
//! (document order, as coreos-cloudinit ran them after its daemon-reload),
//! then the `runcmd` script (`/bin/sh -c SCRIPT`, first boot only). The
//! agent runs them in a oneshot unit ordered after `multi-user.target`'s
//! dependencies. [`Report::boot_commands`] holds the `bootcmd` script, to
//! run on every boot before the services start. Both scripts are built as
//! cloud-init builds them (`util.shellify`: a string is a line of the
//! script, a list is one command with every word single-quoted), so `cd`
//! and variables carry from one line to the next as they do there.
//! coreos-cloudinit restarted systemd-networkd after writing network files;
//! here they are written before networkd starts, and
//! [`Report::network_changed`] says whether any were written for an agent
//! that applies a config on a running system.

use super::{CloudConfig, Command, Diagnostic, Severity, User};
use serde::Serialize;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// How a config is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// The user that gets the top-level `ssh_authorized_keys` (coreos-cloudinit: `core`).
    pub oem_user: String,
    /// The unit that gets `coreos.etcd2` as a drop-in. Debian's `etcd.service`;
    /// the image sets `etcd2.service` up as an alias of it.
    pub etcd_unit: String,
    /// The first boot of this instance: per-instance steps run only then.
    pub first_boot: bool,
    /// Where the booted system's `/run` is now; `None` is `ROOT/run`.
    pub run_dir: Option<PathBuf>,
    /// The host name for `manage_etc_hosts` when the document sets none
    /// (from the metadata); without it, the root's `/etc/hostname`.
    pub hostname: Option<String>,
    /// Today as days since 1970-01-01: shadow's `lastchg` for new users.
    pub day: i64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            oem_user: "core".into(),
            etcd_unit: "etcd.service".into(),
            first_boot: true,
            run_dir: None,
            hostname: None,
            day: today(),
        }
    }
}

/// Days since 1970-01-01 by the clock (0 if the clock is before 1970).
pub fn today() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Frequency {
    /// On every boot (coreos-cloudinit's rule for everything).
    PerBoot,
    /// On the first boot of the instance only (cloud-init's rule for
    /// `runcmd`; here also for appending `write_files`).
    PerInstance,
}

/// How often a top-level key (or `write_files.append`) is applied.
pub fn frequency(key: &str) -> Frequency {
    match key {
        "runcmd" | "write_files.append" => Frequency::PerInstance,
        _ => Frequency::PerBoot,
    }
}

/// One thing to do to the root.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// `/etc/hostname`.
    Hostname { name: String },
    /// Create the user if missing; else set its password (if given).
    User { user: User },
    /// Add the keys missing from the user's `~/.ssh/authorized_keys`.
    AuthorizeKeys { user: String, keys: Vec<String> },
    /// Write a file (path in the booted system).
    WriteFile {
        path: String,
        #[serde(skip)]
        content: Vec<u8>,
        size: usize,
        mode: u32,
        owner: Option<String>,
        append: bool,
    },
    /// `/etc/hosts` for this host name (`None`: the root's `/etc/hostname`).
    EtcHosts { hostname: Option<String> },
    /// A symlink to `/dev/null`.
    Mask { path: String },
    /// Remove a `/dev/null` symlink or empty file.
    Unmask { path: String },
    /// `systemctl enable` (or `--runtime`), offline.
    Enable { unit: String, runtime: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedAction {
    /// Where it comes from in the document (`coreos.units[1]`).
    pub source: String,
    pub frequency: Frequency,
    pub action: Action,
}

/// Everything [`apply`] will do, computed without touching any file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub hostname: Option<String>,
    pub actions: Vec<PlannedAction>,
    /// `bootcmd`: argument vectors to run early on every boot.
    pub boot_commands: Vec<Vec<String>>,
    /// Unit commands (every boot), then `runcmd` (first boot only).
    pub after_boot: Vec<Vec<String>>,
    /// Whether networkd files are written.
    pub network_changed: bool,
}

/// What became of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    Done(String),
    Skipped(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub source: String,
    pub action: String,
    pub frequency: Frequency,
    pub outcome: Outcome,
}

/// What [`apply`] did, for the log and `/run/agent/provisioning.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub first_boot: bool,
    /// The host name to set with `sethostname`.
    pub hostname: Option<String>,
    pub steps: Vec<Step>,
    /// From [`super::parse`]: what was wrong or ignored in the document.
    pub diagnostics: Vec<Diagnostic>,
    pub boot_commands: Vec<Vec<String>>,
    pub after_boot: Vec<Vec<String>>,
    pub network_changed: bool,
}

impl Report {
    /// Whether every step worked and the document had no errors.
    pub fn ok(&self) -> bool {
        !self.steps.iter().any(|s| matches!(s.outcome, Outcome::Failed(_)))
            && !self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// Pretty JSON for `/run/agent/provisioning.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    /// One line per diagnostic and step, for the console.
    pub fn log_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.diagnostics.iter().map(|d| format!("cloud-config: {d}")).collect();
        for s in &self.steps {
            let (what, detail) = match &s.outcome {
                Outcome::Done(d) => ("done", d),
                Outcome::Skipped(d) => ("skipped", d),
                Outcome::Failed(d) => ("FAILED", d),
            };
            out.push(format!("cloud-config: {}: {} {what}: {detail}", s.source, s.action));
        }
        out
    }
}

/// The `/etc/hosts` written for `manage_etc_hosts`. coreos-cloudinit wrote
/// the single line `127.0.0.1 HOSTNAME`; the two `localhost` lines are
/// added because Debian's `nsswitch.conf` has no `myhostname` (on Flatcar,
/// `localhost` resolved without them). cloud-init's Debian template differs:
/// `127.0.1.1 FQDN HOSTNAME`, `ff02::1`/`ff02::2` lines and a header comment.
pub fn etc_hosts(hostname: &str) -> String {
    format!("127.0.0.1 {hostname}\n127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
}

/// cloud-init's `util.shellify`.
fn shellify(cmds: &[Command]) -> String {
    let mut s = String::from("#!/bin/sh\n");
    for c in cmds {
        match c {
            Command::Shell(line) => s += line,
            Command::Argv(words) => {
                let quoted: Vec<String> = words.iter().map(|w| format!("'{}'", w.replace('\'', "'\\''"))).collect();
                s += &quoted.join(" ");
            }
        }
        s.push('\n');
    }
    s
}

fn systemd_quote(v: &str) -> String {
    // Environment="…": backslash and quote escaped; `%` is a specifier.
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%")
}

/// The etcd drop-in (coreos-cloudinit's `serviceContents`).
pub fn etcd_dropin(env: &std::collections::BTreeMap<String, String>) -> String {
    let mut s = String::from("[Service]\n");
    for (k, v) in env {
        s += &format!("Environment=\"{k}={}\"\n", systemd_quote(v));
    }
    s
}

/// Compute everything [`apply`] will do (no file is read or written).
pub fn plan(cfg: &CloudConfig, opts: &ApplyOptions) -> Plan {
    let mut p = Plan { hostname: cfg.hostname.clone(), ..Default::default() };
    let mut add = |source: &str, frequency, action| p.actions.push(PlannedAction { source: source.to_string(), frequency, action });
    if let Some(name) = &cfg.hostname {
        add("hostname", Frequency::PerBoot, Action::Hostname { name: name.clone() });
    }
    for u in &cfg.users {
        add(&u.source, Frequency::PerBoot, Action::User { user: u.clone() });
        if !u.ssh_authorized_keys.is_empty() {
            add(
                &format!("{}.ssh_authorized_keys", u.source),
                Frequency::PerBoot,
                Action::AuthorizeKeys { user: u.name.clone(), keys: u.ssh_authorized_keys.clone() },
            );
        }
    }
    let sudo: Vec<&User> = cfg.users.iter().filter(|u| !u.sudo.is_empty()).collect();
    if !sudo.is_empty() {
        let mut s = String::from("# Written from #cloud-config users[].sudo on every boot\n");
        for u in sudo {
            s += &format!("\n# User rules for {}\n", u.name);
            for rule in &u.sudo {
                s += &format!("{} {}\n", u.name, rule.replace('\n', " "));
            }
        }
        let size = s.len();
        add(
            "users[].sudo",
            Frequency::PerBoot,
            Action::WriteFile {
                path: "/etc/sudoers.d/90-cloud-init-users".into(),
                content: s.into_bytes(),
                size,
                mode: 0o440,
                owner: None,
                append: false,
            },
        );
    }
    if !cfg.ssh_authorized_keys.is_empty() {
        add(
            "ssh_authorized_keys",
            Frequency::PerBoot,
            Action::AuthorizeKeys { user: opts.oem_user.clone(), keys: cfg.ssh_authorized_keys.clone() },
        );
    }
    for f in &cfg.write_files {
        let frequency = if f.append { frequency("write_files.append") } else { Frequency::PerBoot };
        add(
            &f.source,
            frequency,
            Action::WriteFile {
                path: f.path.clone(),
                content: f.content.clone(),
                size: f.content.len(),
                mode: f.permissions.unwrap_or(0o644),
                owner: f.owner.clone(),
                append: f.append,
            },
        );
    }
    if cfg.manage_etc_hosts {
        add("manage_etc_hosts", Frequency::PerBoot, Action::EtcHosts { hostname: cfg.hostname.clone().or_else(|| opts.hostname.clone()) });
    }
    let mut network = false;
    for u in &cfg.units {
        let group = if u.is_network() { "network" } else { "system" };
        let base = if u.runtime { "/run" } else { "/etc" };
        let dir = format!("{base}/systemd/{group}");
        let file = |path: String, content: &str| Action::WriteFile {
            path,
            content: content.as_bytes().to_vec(),
            size: content.len(),
            mode: 0o644,
            owner: None,
            append: false,
        };
        if let Some(c) = &u.content {
            add(&format!("{}.content", u.source), Frequency::PerBoot, file(format!("{dir}/{}", u.name), c));
            network |= u.is_network();
        }
        for (i, d) in u.drop_ins.iter().enumerate() {
            add(&format!("{}.drop_ins[{i}]", u.source), Frequency::PerBoot, file(format!("{dir}/{}.d/{}", u.name, d.name), &d.content));
            network |= u.is_network();
        }
        if u.mask {
            add(&format!("{}.mask", u.source), Frequency::PerBoot, Action::Mask { path: format!("{dir}/{}", u.name) });
        } else if u.runtime {
            add(&format!("{}.runtime", u.source), Frequency::PerBoot, Action::Unmask { path: format!("{dir}/{}", u.name) });
        }
        if u.enable && !u.is_network() {
            add(&format!("{}.enable", u.source), Frequency::PerBoot, Action::Enable { unit: u.name.clone(), runtime: u.runtime });
        }
        if let Some(c) = u.command {
            p.after_boot.push(vec!["systemctl".into(), c.as_str().into(), u.name.clone()]);
        }
    }
    if !cfg.etcd.is_empty() {
        let content = etcd_dropin(&cfg.etcd);
        let size = content.len();
        add(
            "coreos.etcd2",
            Frequency::PerBoot,
            Action::WriteFile {
                path: format!("/run/systemd/system/{}.d/20-cloudinit.conf", opts.etcd_unit),
                content: content.into_bytes(),
                size,
                mode: 0o644,
                owner: None,
                append: false,
            },
        );
    }
    p.network_changed = network;
    if !cfg.bootcmd.is_empty() {
        p.boot_commands.push(vec!["/bin/sh".into(), "-c".into(), shellify(&cfg.bootcmd)]);
    }
    if !cfg.runcmd.is_empty() && opts.first_boot {
        p.after_boot.push(vec!["/bin/sh".into(), "-c".into(), shellify(&cfg.runcmd)]);
    }
    p
}

/// Apply `cfg` to the root directory `root` (`/sysroot` in the initramfs,
/// `/` after boot). Never fails as a whole and never panics: each step's
/// outcome is in the [`Report`], with the document's diagnostics.
pub fn apply(root: &Path, cfg: &CloudConfig, opts: &ApplyOptions) -> Report {
    let plan = plan(cfg, opts);
    let run_dir = opts.run_dir.clone().unwrap_or_else(|| root.join("run"));
    let fs = Fs { root: root.to_path_buf(), run: run_dir, day: opts.day };
    let mut report = Report {
        first_boot: opts.first_boot,
        hostname: plan.hostname.clone(),
        diagnostics: cfg.diagnostics.clone(),
        boot_commands: plan.boot_commands.clone(),
        after_boot: plan.after_boot.clone(),
        network_changed: plan.network_changed,
        steps: Vec::new(),
    };
    if !cfg.runcmd.is_empty() && !opts.first_boot {
        report.steps.push(Step {
            source: "runcmd".into(),
            action: "run the runcmd script after boot".into(),
            frequency: Frequency::PerInstance,
            outcome: Outcome::Skipped("per instance: first boot only".into()),
        });
    }
    for pa in &plan.actions {
        let action = describe(&pa.action);
        let outcome = if pa.frequency == Frequency::PerInstance && !opts.first_boot {
            Outcome::Skipped("per instance: first boot only".into())
        } else {
            match fs.run(&pa.action) {
                Ok(d) => Outcome::Done(d),
                Err(e) => Outcome::Failed(e),
            }
        };
        if let (Action::EtcHosts { .. }, Outcome::Done(_)) = (&pa.action, &outcome) {
            report.hostname = report.hostname.clone().or_else(|| read_hostname(&fs).ok());
        }
        report.steps.push(Step { source: pa.source.clone(), action, frequency: pa.frequency, outcome });
    }
    report
}

fn describe(a: &Action) -> String {
    match a {
        Action::Hostname { name } => format!("set host name {name}"),
        Action::User { user } => format!("user {}", user.name),
        Action::AuthorizeKeys { user, keys } => format!("authorize {} SSH key(s) for {user}", keys.len()),
        Action::WriteFile { path, append: true, .. } => format!("append to {path}"),
        Action::WriteFile { path, .. } => format!("write {path}"),
        Action::EtcHosts { .. } => "write /etc/hosts".into(),
        Action::Mask { path } => format!("mask {path}"),
        Action::Unmask { path } => format!("unmask {path}"),
        Action::Enable { unit, runtime: false } => format!("enable {unit}"),
        Action::Enable { unit, runtime: true } => format!("enable --runtime {unit}"),
    }
}

fn read_hostname(fs: &Fs) -> Result<String, String> {
    let p = fs.resolve("/etc/hostname", false).map_err(|e| format!("/etc/hostname: {e}"))?;
    let s = fs::read_to_string(p.0.join(&p.1)).map_err(|e| format!("/etc/hostname: {e}"))?;
    let name = s.lines().next().unwrap_or_default().trim().to_string();
    if name.is_empty() {
        return Err("/etc/hostname is empty".into());
    }
    Ok(name)
}

/// The roots paths are resolved in.
pub(crate) struct Fs {
    pub root: PathBuf,
    pub run: PathBuf,
    pub day: i64,
}

/// Most symlinks followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

impl Fs {
    /// The host directory a path of the booted system lives under, and the
    /// path below it.
    fn base_of<'a>(&'a self, guest: &'a str) -> (&'a Path, &'a str) {
        let rel = guest.trim_start_matches('/');
        if rel == "run" {
            return (&self.run, "");
        }
        match rel.strip_prefix("run/") {
            Some(rest) => (&self.run, rest),
            None => (&self.root, rel),
        }
    }

    /// Resolve the parent of `guest` inside its root (see the module
    /// docs); with `create`, missing directories are made 0755. Returns
    /// the host parent directory and the file name.
    pub fn resolve(&self, guest: &str, create: bool) -> io::Result<(PathBuf, OsString)> {
        let (base, rel) = self.base_of(guest);
        // Lexically clean first, as Go's path.Join did in coreos-cloudinit.
        let mut parts: Vec<&str> = Vec::new();
        for c in rel.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        let Some(name) = parts.pop() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{guest:?} names no file")));
        };
        if create && !base.exists() {
            // `/run` of a root that has none yet (a directory tree, not a booted system).
            fs::create_dir_all(base)?;
        }
        let mut todo: VecDeque<String> = parts.iter().map(|s| s.to_string()).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if c.is_empty() || c == "." {
                continue;
            }
            if c == ".." {
                cur.pop();
                continue;
            }
            let here: PathBuf = base.join(cur.iter().collect::<PathBuf>()).join(&c);
            match fs::symlink_metadata(&here) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io::Error::other(format!("{guest}: too many levels of symbolic links")));
                    }
                    let target = fs::read_link(&here)?;
                    let t = target.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        cur.clear();
                    }
                    for (i, part) in t.split('/').enumerate() {
                        todo.insert(i, part.to_string());
                    }
                }
                Ok(m) if m.is_dir() => cur.push(c),
                Ok(_) => return Err(io::Error::other(format!("{guest}: {} is not a directory", here.display()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&here).or_else(|e| if e.kind() == io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })?;
                    fs::set_permissions(&here, fs::Permissions::from_mode(0o755))?;
                    cur.push(c);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((base.join(cur.iter().collect::<PathBuf>()), OsString::from(name)))
    }

    fn run(&self, a: &Action) -> Result<String, String> {
        match a {
            Action::Hostname { name } => {
                self.write("/etc/hostname", format!("{name}\n").as_bytes(), 0o644, (0, 0), false)?;
                Ok(format!("/etc/hostname = {name}"))
            }
            Action::User { user } => super::users::ensure_user(&self.root, user, self.day),
            Action::AuthorizeKeys { user, keys } => super::users::authorize_keys(&self.root, user, keys),
            Action::WriteFile { path, content, mode, owner, append, .. } => {
                let ids = match owner {
                    Some(o) => owner_ids(&self.root, o)?,
                    None => (0, 0),
                };
                self.write(path, content, *mode, ids, *append)?;
                Ok(format!("{path}: {} bytes, mode {mode:04o}, owner {}:{}", content.len(), ids.0, ids.1))
            }
            Action::EtcHosts { hostname } => {
                let name = match hostname {
                    Some(h) => h.clone(),
                    None => read_hostname(self).map_err(|e| format!("no host name for /etc/hosts: {e}"))?,
                };
                self.write("/etc/hosts", etc_hosts(&name).as_bytes(), 0o644, (0, 0), false)?;
                Ok(format!("/etc/hosts for {name}"))
            }
            Action::Mask { path } => {
                self.symlink(path, "/dev/null")?;
                Ok(format!("{path} -> /dev/null"))
            }
            Action::Unmask { path } => {
                let (dir, name) = self
                    .resolve(path, false)
                    .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok((PathBuf::new(), OsString::new())) } else { Err(e) })
                    .map_err(|e| format!("{path}: {e}"))?;
                if name.is_empty() {
                    return Ok("not masked".into());
                }
                let host = dir.join(name);
                let masked = match fs::symlink_metadata(&host) {
                    Ok(m) if m.file_type().is_symlink() => fs::read_link(&host).is_ok_and(|t| t == Path::new("/dev/null")),
                    Ok(m) => m.is_file() && m.len() == 0,
                    Err(_) => false,
                };
                if masked {
                    fs::remove_file(&host).map_err(|e| format!("{path}: {e}"))?;
                    return Ok(format!("{path} unmasked"));
                }
                Ok("not masked".into())
            }
            Action::Enable { unit, runtime } => self.enable(unit, *runtime),
        }
    }

    /// Write `content` to the guest path atomically (temp file + rename).
    pub fn write(&self, guest: &str, content: &[u8], mode: u32, (uid, gid): (u32, u32), append: bool) -> Result<(), String> {
        let err = |e: io::Error| format!("{guest}: {e}");
        let (dir, name) = self.resolve(guest, true).map_err(err)?;
        let target = dir.join(&name);
        let mut data = Vec::new();
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(format!("{guest}: is a directory")),
            Ok(m) if append && m.is_file() => data = fs::read(&target).map_err(err)?,
            _ => {}
        }
        data.extend_from_slice(content);
        let mut tmp = None;
        for i in 0..1000u32 {
            let mut t = OsString::from(".");
            t.push(&name);
            t.push(format!(".cloudconfig-{}-{i}", std::process::id()));
            let p = dir.join(t);
            match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(&p)
            {
                Ok(f) => {
                    tmp = Some((p, f));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e)),
            }
        }
        let Some((tmp_path, mut f)) = tmp else { return Err(format!("{guest}: no free temp name")) };
        let result = (|| -> io::Result<()> {
            f.write_all(&data)?;
            let m = f.metadata()?;
            if m.uid() != uid || m.gid() != gid {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
            // After chown, which clears set-id bits.
            f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
            f.sync_all()?;
            fs::rename(&tmp_path, &target)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp_path);
            return Err(err(e));
        }
        Ok(())
    }

    /// `guest` becomes a symlink to `target` (whatever was there replaced,
    /// unless it is a directory).
    fn symlink(&self, guest: &str, target: &str) -> Result<(), String> {
        let err = |e: io::Error| format!("{guest}: {e}");
        let (dir, name) = self.resolve(guest, true).map_err(err)?;
        let host = dir.join(&name);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() && fs::read_link(&host).is_ok_and(|t| t == Path::new(target)) => return Ok(()),
            Ok(m) if m.is_dir() => return Err(format!("{guest}: is a directory")),
            Ok(_) => fs::remove_file(&host).map_err(err)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(target, &host).map_err(err)
    }

    /// `systemctl enable` without systemd: see the module docs.
    fn enable(&self, unit: &str, runtime: bool) -> Result<String, String> {
        let mut done = Vec::new();
        let mut todo = vec![unit.to_string()];
        let mut seen = Vec::new();
        while let Some(u) = todo.pop() {
            if seen.contains(&u) || seen.len() > 32 {
                continue;
            }
            seen.push(u.clone());
            let (file, text) = self.find_unit(&u)?;
            let install = install_section(&text);
            let base = if runtime { "/run/systemd/system" } else { "/etc/systemd/system" };
            let mut links = Vec::new();
            for (key, value) in &install {
                let dir_suffix = match key.as_str() {
                    "WantedBy" => ".wants",
                    "RequiredBy" => ".requires",
                    "UpheldBy" => ".upholds",
                    "Alias" => "",
                    "Also" => {
                        todo.extend(value.split_whitespace().map(String::from));
                        continue;
                    }
                    _ => continue,
                };
                for target in value.split_whitespace() {
                    if target.contains('%') || target.contains('/') {
                        return Err(format!("{u}: {key}={target} (specifiers are not expanded here); not enabled"));
                    }
                    links.push(if dir_suffix.is_empty() { format!("{base}/{target}") } else { format!("{base}/{target}{dir_suffix}/{u}") });
                }
            }
            if links.is_empty() && u == unit && !install.iter().any(|(k, _)| k == "Also") {
                return Ok(format!(
                    "{u} ({file}) has no [Install] WantedBy=, RequiredBy= or Alias=: nothing to enable, as systemctl enable says"
                ));
            }
            for l in &links {
                self.symlink(l, &file)?;
                done.push(format!("{l} -> {file}"));
            }
        }
        Ok(done.join(", "))
    }

    /// The unit file the booted system would load for `unit`: its path
    /// there and its text.
    fn find_unit(&self, unit: &str) -> Result<(String, String), String> {
        let mut names = vec![unit.to_string()];
        if let Some((prefix, suffix)) = template_of(unit) {
            names.push(format!("{prefix}@{suffix}"));
        }
        for name in &names {
            for dir in ["/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"] {
                let guest = format!("{dir}/{name}");
                let Ok((d, n)) = self.resolve(&guest, false) else { continue };
                let host = d.join(n);
                if let Ok(text) = fs::read_to_string(&host) {
                    return Ok((guest, text));
                }
            }
        }
        Err(format!("{unit}: no such unit file in the root (/etc, /run, /usr/lib, /lib systemd/system); not enabled"))
    }
}

/// `foo@bar.service` → (`foo`, `.service`); `None` for non-instances.
fn template_of(unit: &str) -> Option<(&str, &str)> {
    let at = unit.find('@')?;
    let dot = unit.rfind('.')?;
    (dot > at + 1).then(|| (&unit[..at], &unit[dot..]))
}

/// `[Install]` entries (key, value), continuation lines joined.
fn install_section(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_install = false;
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if !pending.is_empty() || line.ends_with('\\') {
            pending.push_str(line.trim_end_matches('\\'));
            pending.push(' ');
            if line.ends_with('\\') {
                continue;
            }
        }
        let full = if pending.is_empty() { line.to_string() } else { std::mem::take(&mut pending) };
        let l = full.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        if !in_install || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// `owner` (`user`, `user:group`, names or numbers) as ids, looked up in
/// the root's `/etc/passwd` and `/etc/group`. A user without a group keeps
/// group root, as `chown user` (coreos-cloudinit) and cloud-init do.
fn owner_ids(root: &Path, owner: &str) -> Result<(u32, u32), String> {
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u.trim(), Some(g.trim())),
        None => (owner.trim(), None),
    };
    let uid = if user.is_empty() {
        0
    } else {
        lookup(root, "etc/passwd", user).ok_or_else(|| format!("owner {owner}: no user {user:?} in the root's /etc/passwd"))?
    };
    let gid = match group {
        Some(g) if !g.is_empty() => {
            lookup(root, "etc/group", g).ok_or_else(|| format!("owner {owner}: no group {g:?} in the root's /etc/group"))?
        }
        _ => 0,
    };
    Ok((uid, gid))
}

/// Field 3 of the line named `name` in a passwd-style file; a number is
/// taken as it is when no such name exists.
pub(crate) fn lookup(root: &Path, file: &str, name: &str) -> Option<u32> {
    let text = fs::read_to_string(root.join(file)).unwrap_or_default();
    for line in text.lines() {
        let mut f = line.split(':');
        if f.next() == Some(name) {
            return f.nth(1).and_then(|id| id.parse().ok());
        }
    }
    name.parse().ok()
}
