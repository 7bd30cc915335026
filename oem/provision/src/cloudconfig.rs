//! CoreOS-dialect `#cloud-config`, as coreos-cloudinit (CoreOS Container
//! Linux, then Flatcar) read it, plus cloud-init's `runcmd` and `bootcmd`:
//! parsed into a [`CloudConfig`] and applied to a root directory by
//! [`apply`].
//!
//! # Reading
//!
//! [`parse`] never panics and rarely refuses a document, as coreos-cloudinit
//! did: a document that is not YAML is a [`SyntaxError`] with its line and
//! column, and nothing is applied. Anything else that is wrong (an unknown
//! key, a value of the wrong type, a unit with an unknown command) becomes a
//! [`Diagnostic`] naming its path in the document
//! (`coreos.units[1].commnd: unknown key`) and the rest is applied.
//!
//! YAML is read as YAML 1.1 readers (Go's yaml in coreos-cloudinit, PyYAML in
//! cloud-init) read the scalars that matter here: `yes`/`no`/`on`/`off` are
//! booleans, an unquoted `0644` is octal. Mapping keys are matched with `-`
//! and `_` taken as the same (coreos-cloudinit normalised keys that way, so
//! the seed's `advertise-client-urls` and cloud-init's
//! `ssh-authorized-keys` both work). `!!binary` scalars are decoded, `<<`
//! merge keys and aliases resolved (with a size limit). Only the first
//! document of a stream is read.
//!
//! ## Why `saphyr-parser`
//!
//! `serde_yaml` is archived and unmaintained. Of the maintained readers,
//! `serde_yaml_ng`/`serde_norway` are serde front ends over `unsafe-libyaml`
//! (a C-to-Rust translation): a typed serde model would also stop at the
//! first wrong field, where coreos-cloudinit logs it and goes on.
//! `saphyr-parser` is the event parser of the saphyr project (the successor
//! of `yaml-rust`/`yaml-rust2`, by the same maintainers, released 2025):
//! safe Rust, YAML 1.2 test-suite compliant, two small dependencies
//! (`arraydeque`, `thiserror`), and its events carry the style of each
//! scalar and its position. [`yaml`] builds a small tree from them, so
//! the reader here keeps the raw text of scalars (needed for YAML 1.1
//! octal/booleans, which a YAML 1.2 `Yaml` value has already lost) and the
//! line/column of every node for diagnostics.
//!
//! # The fields
//!
//! | key | what is done | when |
//! |---|---|---|
//! | `hostname` | `/etc/hostname`; returned in [`Report::hostname`] for `sethostname`. Cut at the first `.` and to 63 bytes (as Flatcar's coreos-cloudinit; cloud-init on Debian also writes the short name) | every boot |
//! | `ssh_authorized_keys` | added to the OEM user's (`core`, [`ApplyOptions::oem_user`]) `~/.ssh/authorized_keys` | every boot |
//! | `users[]` | created if missing (`useradd` semantics); an existing user only gets its `passwd` and keys, as coreos-cloudinit | every boot |
//! | `write_files[]` | written atomically, default 0644 root:root | every boot; with `append: true`, first boot only |
//! | `manage_etc_hosts` | `/etc/hosts` (see [`etc_hosts`]) | every boot |
//! | `coreos.units[]` | unit files, drop-ins, `.wants` symlinks, masks; `command` returned for after boot | every boot |
//! | `coreos.etcd2`, `coreos.etcd` | drop-in `20-cloudinit.conf` of [`ApplyOptions::etcd_unit`] under `/run` | every boot |
//! | `bootcmd` | returned in [`Report::boot_commands`] | every boot |
//! | `runcmd` | returned in [`Report::after_boot`] | first boot only |
//! | `coreos.update`, `.locksmith`, `.fleet`, `.flannel`, `.oem` | logged as not supported on this image | – |
//!
//! coreos-cloudinit applied everything on every boot. cloud-init runs
//! `users-groups`, `write_files` and `runcmd` once per instance, and
//! `bootcmd`, `update_hostname` and `update_etc_hosts` always. Here the CoreOS
//! rule holds wherever it is idempotent; the two that are not (`runcmd` and
//! appending `write_files`) follow cloud-init and run on the first boot only.
//! [`Frequency`] says which is which ([`frequency`]) and [`ApplyOptions::first_boot`]
//! selects.
//!
//! # Where this differs from cloud-init on purpose
//!
//! Measured by `tests/tests/cloudconfig_conformance.rs` against Debian's
//! cloud-init 22.4 (each corpus document lists its differences):
//!
//! * Top-level `ssh_authorized_keys` go to the OEM user (`core`), as
//!   coreos-cloudinit did; cloud-init gives them to its default user, and
//!   with a `users` list without `default`, to root only.
//! * A new user without `passwd` gets `*` in `shadow` (coreos-cloudinit's
//!   `useradd --password '*'`; sshd without PAM refuses `!` even for key
//!   logins); cloud-init leaves `!`. `lock_passwd` only locks when given:
//!   cloud-init's default `true` would also lock a `passwd` hash.
//! * `manage_etc_hosts`: `127.0.0.1 HOSTNAME` (coreos-cloudinit) plus
//!   `localhost` lines, not cloud-init's template (see [`etc_hosts`]).
//! * `permissions`: always octal, quoted or not (coreos-cloudinit's
//!   `^0?[0-7]{3,4}$`); cloud-init reads an unquoted `644` as decimal.
//! * `write_files` are rewritten on every boot (coreos-cloudinit); cloud-init
//!   writes them once per instance. Appending ones are first-boot only.
//! * `write_files` come after `users`, so `owner` works without `defer`
//!   (cloud-init needs `defer: true`). An unknown owner skips the file;
//!   cloud-init writes it and then fails the chown.
//! * Existing users only get `passwd` (coreos-cloudinit); cloud-init also
//!   applies `sudo`, `lock_passwd` and keys to them (keys are added here too).
//! * `system` users get no home (cloud-init's `useradd -M`; coreos-cloudinit
//!   created one). Missing groups are created first (cloud-init;
//!   coreos-cloudinit's `useradd` failed).
//! * Keys are added to `~/.ssh/authorized_keys` in document order, existing
//!   lines kept (cloud-init writes a Python set, in no fixed order).
//! * `sudo` rules go to `/etc/sudoers.d/90-cloud-init-users` without
//!   cloud-init's dated header, rewritten on every boot.
//! * `coreos.*` is read here and ignored by cloud-init; `runcmd`/`bootcmd`
//!   scripts are built byte for byte as cloud-init builds them (checked).
//!
//! # Applying
//!
//! See [`apply`]. Nothing here runs a process: what needs a running system
//! (`systemctl start`, `runcmd`, `bootcmd`) comes back in the [`Report`] as
//! argument vectors for the agent to run.

mod apply;
mod users;
pub mod yaml;

pub use apply::{
    apply, etc_hosts, etcd_dropin, frequency, plan, today, Action, ApplyOptions, Frequency, Outcome, Plan, PlannedAction, Report, Step,
};

use base64::Engine as _;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use yaml::{Kind, Node, Pos};

/// Largest file content after decoding (gzip bombs stop here).
pub const MAX_CONTENT: usize = 64 << 20;

/// A parsed `#cloud-config` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CloudConfig {
    pub hostname: Option<String>,
    /// Top-level keys: the OEM user's (`core`).
    pub ssh_authorized_keys: Vec<String>,
    pub users: Vec<User>,
    pub write_files: Vec<WriteFile>,
    /// `manage_etc_hosts: localhost` (coreos-cloudinit) or `true`/`template` (cloud-init).
    pub manage_etc_hosts: bool,
    pub runcmd: Vec<Command>,
    pub bootcmd: Vec<Command>,
    pub units: Vec<Unit>,
    /// `coreos.etcd2` (over `coreos.etcd`): environment name (`ETCD_NAME`) → value.
    pub etcd: BTreeMap<String, String>,
    /// Everything that was wrong or ignored, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

/// One entry of `users`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct User {
    /// Where it is in the document (`users[2]`).
    pub source: String,
    pub name: String,
    /// A crypt(3) hash (`passwd`, or cloud-init's `hashed_passwd`).
    pub passwd: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub gecos: Option<String>,
    pub homedir: Option<String>,
    pub no_create_home: bool,
    pub primary_group: Option<String>,
    pub groups: Vec<String>,
    pub no_user_group: bool,
    pub system: bool,
    pub shell: Option<String>,
    pub uid: Option<u32>,
    /// cloud-init's `lock_passwd`, only when given (cloud-init's default
    /// `true` would lock a `passwd` given in the same entry; coreos-cloudinit
    /// had no such key).
    pub lock_passwd: bool,
    /// cloud-init's `sudo` rules (`ALL=(ALL) NOPASSWD:ALL`).
    pub sudo: Vec<String>,
}

/// One entry of `write_files`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WriteFile {
    pub source: String,
    /// Absolute path in the root.
    pub path: String,
    /// Decoded content.
    #[serde(skip)]
    pub content: Vec<u8>,
    /// Mode bits; `None` is 0644.
    pub permissions: Option<u32>,
    /// `user`, `user:group` (names or numbers); `None` is root:root.
    pub owner: Option<String>,
    /// cloud-init's `append`.
    pub append: bool,
}

/// A `runcmd`/`bootcmd` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Command {
    /// A string: a line of the shell script.
    Shell(String),
    /// A list: one command, its words quoted into the script.
    Argv(Vec<String>),
}

/// One entry of `coreos.units`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Unit {
    pub source: String,
    pub name: String,
    pub content: Option<String>,
    pub enable: bool,
    pub runtime: bool,
    pub mask: bool,
    pub command: Option<UnitCommand>,
    pub drop_ins: Vec<DropIn>,
}

impl Unit {
    /// `.network`, `.netdev` and `.link` files belong to systemd-networkd
    /// (`/etc/systemd/network`), everything else to systemd.
    pub fn is_network(&self) -> bool {
        is_network_unit(&self.name)
    }
}

pub(crate) fn is_network_unit(name: &str) -> bool {
    [".network", ".netdev", ".link"].iter().any(|s| name.ends_with(s))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DropIn {
    pub name: String,
    pub content: String,
}

/// The `command` of a unit, as coreos-cloudinit allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitCommand {
    Start,
    Stop,
    Restart,
    Reload,
    TryRestart,
    ReloadOrRestart,
    ReloadOrTryRestart,
}

impl UnitCommand {
    pub const ALL: [UnitCommand; 7] = [
        UnitCommand::Start,
        UnitCommand::Stop,
        UnitCommand::Restart,
        UnitCommand::Reload,
        UnitCommand::TryRestart,
        UnitCommand::ReloadOrRestart,
        UnitCommand::ReloadOrTryRestart,
    ];

    /// The `systemctl` verb.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitCommand::Start => "start",
            UnitCommand::Stop => "stop",
            UnitCommand::Restart => "restart",
            UnitCommand::Reload => "reload",
            UnitCommand::TryRestart => "try-restart",
            UnitCommand::ReloadOrRestart => "reload-or-restart",
            UnitCommand::ReloadOrTryRestart => "reload-or-try-restart",
        }
    }
}

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Ignored on purpose (unknown key, unsupported section): the rest of
    /// its entry is applied.
    Warning,
    /// A value that cannot be used: its entry (or the value) is skipped.
    Error,
}

/// Something in the document that was wrong or is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where in the document: `coreos.units[1].commnd`.
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (line {}, column {})", self.path, self.message, self.line, self.column)
    }
}

/// A document that is not YAML: nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#cloud-config is not valid YAML at line {}, column {}: {}; nothing applied", self.line, self.column, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Top-level keys of cloud-init modules this image does not run: named as
/// such rather than as unknown keys.
const CLOUD_INIT_ONLY: &[&str] = &[
    "apt",
    "bootcmd_frequency",
    "ca_certs",
    "chpasswd",
    "disable_root",
    "disk_setup",
    "final_message",
    "fs_setup",
    "growpart",
    "locale",
    "mounts",
    "ntp",
    "package_reboot_if_required",
    "package_update",
    "package_upgrade",
    "packages",
    "password",
    "phone_home",
    "power_state",
    "preserve_hostname",
    "resize_rootfs",
    "rsyslog",
    "snap",
    "ssh_deletekeys",
    "ssh_genkeytypes",
    "ssh_keys",
    "ssh_pwauth",
    "timezone",
    "fqdn",
    "prefer_fqdn_over_hostname",
];

/// Parse a `#cloud-config` document (with or without its first line).
pub fn parse(data: &[u8]) -> Result<CloudConfig, SyntaxError> {
    let data = crate::userdata::strip_bom(data);
    let text = std::str::from_utf8(data).map_err(|e| {
        let good = &data[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        SyntaxError { line, column, message: "not UTF-8".into() }
    })?;
    let root = yaml::load(text).map_err(|e| SyntaxError { line: e.pos.line, column: e.pos.column, message: e.message })?;
    let mut cx = Cx::default();
    let mut cfg = CloudConfig::default();
    if let Some(root) = root {
        read_top(&mut cx, &mut cfg, &root);
    }
    cfg.diagnostics = cx.diags;
    Ok(cfg)
}

#[derive(Default)]
struct Cx {
    diags: Vec<Diagnostic>,
}

impl Cx {
    fn add(&mut self, severity: Severity, path: &str, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic { severity, path: path.to_string(), line: pos.line, column: pos.column, message: message.into() });
    }
    fn warn(&mut self, path: &str, node: &Node, message: impl Into<String>) {
        self.add(Severity::Warning, path, node.pos, message);
    }
    fn error(&mut self, path: &str, node: &Node, message: impl Into<String>) {
        self.add(Severity::Error, path, node.pos, message);
    }

    /// The entries of a mapping, keys normalised (`-` → `_`), duplicates
    /// reported (the last one wins, as in PyYAML). `None` (with an error)
    /// when `node` is not a mapping; null is an empty mapping.
    fn map<'n>(&mut self, path: &str, node: &'n Node) -> Option<Vec<(String, String, Pos, &'n Node)>> {
        if node.is_null() {
            return Some(Vec::new());
        }
        let Kind::Map(entries) = &node.kind else {
            self.error(path, node, format!("expected a mapping, found {}", node.describe()));
            return None;
        };
        let mut out: Vec<(String, String, Pos, &Node)> = Vec::new();
        for (k, v) in entries {
            let Some(raw) = k.scalar() else {
                self.error(path, k, format!("a key must be a scalar, found {}", k.describe()));
                continue;
            };
            let norm = raw.replace('-', "_");
            let child = join(path, raw);
            if let Some(i) = out.iter().position(|(n, _, _, _)| *n == norm) {
                self.warn(&child, k, "duplicate key: the last one is used");
                out.remove(i);
            }
            out.push((norm, raw.to_string(), k.pos, v));
        }
        Some(out)
    }

    /// A scalar's text; null is `None` silently, anything else is an error.
    fn string(&mut self, path: &str, node: &Node) -> Option<String> {
        if node.is_null() {
            return None;
        }
        match &node.kind {
            Kind::Scalar { text, binary: false, .. } => Some(text.clone()),
            Kind::Scalar { text, binary: true, .. } => match decode_b64(text) {
                Ok(b) => match String::from_utf8(b) {
                    Ok(s) => Some(s),
                    Err(_) => {
                        self.error(path, node, "!!binary value is not UTF-8 text");
                        None
                    }
                },
                Err(e) => {
                    self.error(path, node, format!("!!binary value: {e}"));
                    None
                }
            },
            _ => {
                self.error(path, node, format!("expected a string, found {}", node.describe()));
                None
            }
        }
    }

    fn boolean(&mut self, path: &str, node: &Node) -> Option<bool> {
        if node.is_null() {
            return None;
        }
        let b = node.as_bool();
        if b.is_none() {
            self.error(path, node, format!("expected true or false, found {}", shown(node)));
        }
        b
    }

    /// A list of strings; a single string is taken as a one-element list.
    fn strings(&mut self, path: &str, node: &Node) -> Vec<String> {
        match &node.kind {
            Kind::Seq(items) => items.iter().enumerate().filter_map(|(i, n)| self.string(&index(path, i), n)).collect(),
            Kind::Scalar { .. } => self.string(path, node).into_iter().collect(),
            Kind::Map(_) => {
                self.error(path, node, "expected a list of strings, found a mapping");
                Vec::new()
            }
        }
    }

    fn seq<'n>(&mut self, path: &str, node: &'n Node) -> &'n [Node] {
        match &node.kind {
            Kind::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.error(path, node, format!("expected a list, found {}", node.describe()));
                &[]
            }
        }
    }
}

fn shown(node: &Node) -> String {
    match node.scalar() {
        Some(s) if s.len() <= 40 => format!("{s:?}"),
        Some(_) => "a long string".into(),
        None => node.describe().into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn read_top(cx: &mut Cx, cfg: &mut CloudConfig, root: &Node) {
    if !matches!(root.kind, Kind::Map(_)) && !root.is_null() {
        cx.error("(document)", root, format!("a #cloud-config document is a mapping, found {}; nothing applied", root.describe()));
        return;
    }
    let Some(entries) = cx.map("", root) else { return };
    for (key, raw, kpos, v) in entries {
        let path = raw.as_str();
        match key.as_str() {
            "hostname" => cfg.hostname = read_hostname(cx, path, v),
            "ssh_authorized_keys" => cfg.ssh_authorized_keys = cx.strings(path, v),
            "users" => {
                for (i, n) in cx.seq(path, v).iter().enumerate() {
                    if let Some(u) = read_user(cx, &index(path, i), n) {
                        cfg.users.push(u);
                    }
                }
            }
            "write_files" => {
                for (i, n) in cx.seq(path, v).iter().enumerate() {
                    if let Some(f) = read_file(cx, &index(path, i), n) {
                        cfg.write_files.push(f);
                    }
                }
            }
            "manage_etc_hosts" => cfg.manage_etc_hosts = read_manage_etc_hosts(cx, path, v),
            "runcmd" => cfg.runcmd = read_commands(cx, path, v),
            "bootcmd" => cfg.bootcmd = read_commands(cx, path, v),
            "coreos" => read_coreos(cx, cfg, path, v),
            k if CLOUD_INIT_ONLY.contains(&k) => cx.warn(path, v, "cloud-init module not supported on this image; ignored"),
            _ => cx.add(Severity::Warning, path, kpos, "unknown key"),
        }
    }
}

fn read_hostname(cx: &mut Cx, path: &str, node: &Node) -> Option<String> {
    let raw = cx.string(path, node)?;
    let short = raw.split('.').next().unwrap_or_default();
    let mut name: String = short.chars().take(63).collect();
    while name.len() > 63 {
        name.pop();
    }
    if name != raw {
        cx.warn(path, node, format!("{raw:?} is used as {name:?} (cut at the first '.' and to 63 bytes, as coreos-cloudinit does)"));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') || name.starts_with('-') {
        cx.error(path, node, format!("{name:?} is not a host name (letters, digits and '-'); not set"));
        return None;
    }
    Some(name)
}

fn read_manage_etc_hosts(cx: &mut Cx, path: &str, node: &Node) -> bool {
    if let Some(b) = node.as_bool() {
        return b;
    }
    match node.scalar() {
        Some("localhost" | "template") => true,
        _ if node.is_null() => false,
        _ => {
            cx.error(path, node, format!("expected localhost, true or false, found {}; /etc/hosts left alone", shown(node)));
            false
        }
    }
}

fn read_commands(cx: &mut Cx, path: &str, node: &Node) -> Vec<Command> {
    let mut out = Vec::new();
    if let Kind::Scalar { .. } = node.kind {
        // cloud-init also takes one string: a whole script.
        return cx.string(path, node).map(Command::Shell).into_iter().collect();
    }
    for (i, n) in cx.seq(path, node).iter().enumerate() {
        let p = index(path, i);
        match &n.kind {
            Kind::Seq(words) => {
                let argv: Vec<String> = words.iter().enumerate().filter_map(|(j, w)| cx.string(&index(&p, j), w)).collect();
                if argv.len() == words.len() && !argv.is_empty() {
                    out.push(Command::Argv(argv));
                } else {
                    cx.error(&p, n, "a command list must hold strings only; skipped");
                }
            }
            Kind::Scalar { .. } if n.is_null() => {}
            Kind::Scalar { .. } => out.extend(cx.string(&p, n).map(Command::Shell)),
            Kind::Map(_) => cx.error(&p, n, "expected a string or a list of strings, found a mapping; skipped"),
        }
    }
    out
}

fn read_user(cx: &mut Cx, path: &str, node: &Node) -> Option<User> {
    let mut u = User { source: path.to_string(), ..Default::default() };
    if let Kind::Scalar { .. } = node.kind {
        // cloud-init: `- default` (the distribution's default user) or a bare name.
        let name = cx.string(path, node)?;
        if name == "default" {
            cx.warn(path, node, "the default user is the image's OEM user; nothing to create");
            return None;
        }
        u.name = name;
        return Some(u);
    }
    let entries = cx.map(path, node)?;
    for (key, raw, kpos, v) in entries {
        let p = join(path, &raw);
        match key.as_str() {
            "name" => u.name = cx.string(&p, v).unwrap_or_default(),
            "passwd" | "hashed_passwd" => u.passwd = cx.string(&p, v),
            "ssh_authorized_keys" => u.ssh_authorized_keys = cx.strings(&p, v),
            "gecos" => u.gecos = cx.string(&p, v),
            "homedir" => u.homedir = cx.string(&p, v),
            "no_create_home" => u.no_create_home = cx.boolean(&p, v).unwrap_or(false),
            "primary_group" => u.primary_group = cx.string(&p, v),
            "groups" => {
                u.groups = match &v.kind {
                    Kind::Scalar { .. } => {
                        cx.string(&p, v).unwrap_or_default().split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect()
                    }
                    _ => cx.strings(&p, v),
                }
            }
            "no_user_group" => u.no_user_group = cx.boolean(&p, v).unwrap_or(false),
            "system" => u.system = cx.boolean(&p, v).unwrap_or(false),
            "no_log_init" => {
                // useradd --no-log-init: no lastlog/faillog entries, which
                // are not written here anyway.
                let _ = cx.boolean(&p, v);
            }
            "shell" => u.shell = cx.string(&p, v),
            "uid" => match cx.string(&p, v).and_then(|s| s.parse::<u32>().ok()) {
                Some(uid) => u.uid = Some(uid),
                None => cx.error(&p, v, "expected a number; ignored"),
            },
            "lock_passwd" => u.lock_passwd = cx.boolean(&p, v).unwrap_or(false),
            "sudo" => {
                if v.as_bool() == Some(false) || v.is_null() {
                    u.sudo.clear();
                } else {
                    u.sudo = cx.strings(&p, v);
                }
            }
            "coreos_ssh_import_github" | "coreos_ssh_import_github_users" | "coreos_ssh_import_url" | "ssh_import_id" => {
                cx.warn(&p, v, "fetching keys from the network is not supported; ignored")
            }
            "plain_text_passwd" => cx.warn(&p, v, "plain-text passwords are not supported (give a hash in passwd); ignored"),
            "expiredate" | "inactive" | "create_groups" | "selinux_user" | "ssh_redirect_user" | "doas" | "snapuser" => {
                cx.warn(&p, v, "cloud-init user option not supported on this image; ignored")
            }
            _ => cx.add(Severity::Warning, &p, kpos, "unknown key"),
        }
    }
    if u.name.is_empty() {
        cx.error(path, node, "a user needs a name; skipped");
        return None;
    }
    if !valid_user_name(&u.name) {
        cx.error(&join(path, "name"), node, format!("{:?} is not a valid user name; skipped", u.name));
        return None;
    }
    Some(u)
}

/// What useradd accepts (Debian, without `--badname`), and nothing that
/// could break a line of `/etc/passwd`.
pub(crate) fn valid_user_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && !n.starts_with('-')
        && n != "."
        && n != ".."
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || b == b'$')
        && !n[..n.len() - 1].contains('$')
        && !n.bytes().all(|b| b.is_ascii_digit())
}

fn read_permissions(cx: &mut Cx, path: &str, node: &Node) -> Option<u32> {
    let text = cx.string(path, node)?;
    let t = text.trim();
    let digits = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")).unwrap_or(t);
    // coreos-cloudinit: `^0?[0-7]{3,4}$`, read as octal whether quoted or
    // not. cloud-init would read an unquoted `644` as the decimal 644.
    let ok = !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(digits, 8) {
        Ok(m) if ok && m <= 0o7777 => Some(m),
        _ => {
            cx.error(path, node, format!("expected an octal mode such as '0644', found {}; the file is skipped", shown(node)));
            None
        }
    }
}

fn decode_b64(text: &str) -> Result<Vec<u8>, String> {
    // Base64 in YAML is often folded over lines.
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean.as_bytes()).map_err(|e| format!("not valid base64 ({e})"))
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut r = flate2::read::MultiGzDecoder::new(data).take(MAX_CONTENT as u64 + 1);
    r.read_to_end(&mut out).map_err(|e| format!("not valid gzip ({e})"))?;
    if out.len() > MAX_CONTENT {
        return Err(format!("more than {} MiB once decompressed", MAX_CONTENT >> 20));
    }
    Ok(out)
}

/// Decode `content` as `encoding` says (coreos-cloudinit's and cloud-init's names).
pub fn decode_content(content: &[u8], encoding: &str) -> Result<Vec<u8>, String> {
    let as_text = || std::str::from_utf8(content).map_err(|_| "base64 content is not text".to_string());
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "text/plain" => Ok(content.to_vec()),
        "b64" | "base64" => decode_b64(as_text()?),
        "gz" | "gzip" => gunzip(content),
        "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => gunzip(&decode_b64(as_text()?)?),
        other => Err(format!("unknown encoding {other:?} (b64, base64, gz, gzip, gz+base64, gzip+base64, gz+b64, gzip+b64)")),
    }
}

fn read_file(cx: &mut Cx, path: &str, node: &Node) -> Option<WriteFile> {
    let mut f = WriteFile { source: path.to_string(), ..Default::default() };
    let entries = cx.map(path, node)?;
    let mut content: Option<(Vec<u8>, &Node)> = None;
    let mut encoding: Option<(String, &Node)> = None;
    let mut bad = false;
    for (key, raw, kpos, v) in entries {
        let p = join(path, &raw);
        match key.as_str() {
            "path" => f.path = cx.string(&p, v).unwrap_or_default(),
            "content" => match &v.kind {
                Kind::Scalar { text, binary: true, .. } => match decode_b64(text) {
                    Ok(b) => content = Some((b, v)),
                    Err(e) => {
                        cx.error(&p, v, format!("!!binary value: {e}; the file is skipped"));
                        bad = true;
                    }
                },
                _ if v.is_null() => content = Some((Vec::new(), v)),
                Kind::Scalar { text, .. } => content = Some((text.clone().into_bytes(), v)),
                _ => {
                    cx.error(&p, v, format!("expected a string, found {}; the file is skipped", v.describe()));
                    bad = true;
                }
            },
            "encoding" => encoding = cx.string(&p, v).map(|e| (e, v)),
            "permissions" => match read_permissions(cx, &p, v) {
                Some(m) => f.permissions = Some(m),
                None => bad = !v.is_null(),
            },
            "owner" => f.owner = cx.string(&p, v),
            "append" => f.append = cx.boolean(&p, v).unwrap_or(false),
            "defer" => {
                // cloud-init writes deferred files after users are created;
                // here users always come first.
                let _ = cx.boolean(&p, v);
            }
            "source" => {
                cx.error(&p, v, "fetching content from a URL is not supported; the file is skipped");
                bad = true;
            }
            _ => cx.add(Severity::Warning, &p, kpos, "unknown key"),
        }
    }
    if f.path.is_empty() {
        cx.error(path, node, "a file needs a path; skipped");
        return None;
    }
    if !f.path.starts_with('/') {
        cx.warn(&join(path, "path"), node, format!("{:?} is not absolute; taken from /", f.path));
        f.path.insert(0, '/');
    }
    if f.path.bytes().any(|b| b == 0) {
        cx.error(&join(path, "path"), node, "a path cannot hold a NUL byte; skipped");
        return None;
    }
    if bad {
        return None;
    }
    let (raw, cnode) = content.unwrap_or((Vec::new(), node));
    f.content = match &encoding {
        Some((e, enode)) => match decode_content(&raw, e) {
            Ok(c) => c,
            Err(msg) => {
                let at =
                    if msg.starts_with("unknown encoding") { (join(path, "encoding"), *enode) } else { (join(path, "content"), cnode) };
                cx.error(&at.0, at.1, format!("{msg}; the file is skipped"));
                return None;
            }
        },
        None => raw,
    };
    Some(f)
}

fn read_coreos(cx: &mut Cx, cfg: &mut CloudConfig, path: &str, node: &Node) {
    let Some(entries) = cx.map(path, node) else { return };
    let mut etcd1 = BTreeMap::new();
    let mut etcd2 = BTreeMap::new();
    for (key, raw, kpos, v) in entries {
        let p = join(path, &raw);
        match key.as_str() {
            "units" => {
                for (i, n) in cx.seq(&p, v).iter().enumerate() {
                    if let Some(u) = read_unit(cx, &index(&p, i), n) {
                        cfg.units.push(u);
                    }
                }
            }
            "etcd2" => etcd2 = read_etcd(cx, &p, v),
            "etcd" => etcd1 = read_etcd(cx, &p, v),
            "update" | "locksmith" | "fleet" | "flannel" | "oem" => cx.warn(&p, v, "not supported on this image; ignored"),
            _ => cx.add(Severity::Warning, &p, kpos, "unknown key"),
        }
    }
    if !etcd1.is_empty() && !etcd2.is_empty() {
        cx.add(
            Severity::Warning,
            &join(path, "etcd"),
            node.pos,
            "both etcd and etcd2 are set: one etcd service here, etcd2 wins where both set an option",
        );
    }
    cfg.etcd = etcd1;
    cfg.etcd.extend(etcd2);
}

/// An etcd option name as its environment variable: `advertise-client-urls`
/// → `ETCD_ADVERTISE_CLIENT_URLS`.
pub fn etcd_env_name(option: &str) -> String {
    format!("ETCD_{}", option.replace('-', "_").to_ascii_uppercase())
}

fn read_etcd(cx: &mut Cx, path: &str, node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(entries) = cx.map(path, node) else { return out };
    for (key, raw, _, v) in entries {
        let p = join(path, &raw);
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            cx.error(&p, v, "not an etcd option name (letters, digits, '-', '_'); ignored");
            continue;
        }
        let value = match &v.kind {
            Kind::Scalar { .. } if v.is_null() => continue,
            Kind::Scalar { .. } => cx.string(&p, v),
            _ => {
                cx.error(&p, v, format!("expected a value, found {}; ignored", v.describe()));
                None
            }
        };
        let Some(value) = value else { continue };
        if value.contains(['\n', '\r', '\0']) {
            cx.error(&p, v, "a value on more than one line cannot go into Environment=; ignored");
            continue;
        }
        out.insert(etcd_env_name(&key), value);
    }
    out
}

fn read_unit(cx: &mut Cx, path: &str, node: &Node) -> Option<Unit> {
    let mut u = Unit { source: path.to_string(), ..Default::default() };
    let entries = cx.map(path, node)?;
    for (key, raw, kpos, v) in entries {
        let p = join(path, &raw);
        match key.as_str() {
            "name" => u.name = cx.string(&p, v).unwrap_or_default(),
            "content" => u.content = cx.string(&p, v).filter(|c| !c.is_empty()),
            "enable" => u.enable = cx.boolean(&p, v).unwrap_or(false),
            "runtime" => u.runtime = cx.boolean(&p, v).unwrap_or(false),
            "mask" => u.mask = cx.boolean(&p, v).unwrap_or(false),
            "command" => {
                if let Some(c) = cx.string(&p, v) {
                    match UnitCommand::ALL.iter().find(|k| k.as_str() == c) {
                        Some(k) => u.command = Some(*k),
                        None => cx.error(
                            &p,
                            v,
                            format!("{c:?} is not a unit command (start, stop, restart, reload, try-restart, reload-or-restart, reload-or-try-restart); ignored"),
                        ),
                    }
                }
            }
            "drop_ins" => {
                for (i, d) in cx.seq(&p, v).iter().enumerate() {
                    let dp = index(&p, i);
                    let Some(fields) = cx.map(&dp, d) else { continue };
                    let mut drop = DropIn::default();
                    for (dk, draw, dkpos, dv) in fields {
                        let fp = join(&dp, &draw);
                        match dk.as_str() {
                            "name" => drop.name = cx.string(&fp, dv).unwrap_or_default(),
                            "content" => drop.content = cx.string(&fp, dv).unwrap_or_default(),
                            _ => cx.add(Severity::Warning, &fp, dkpos, "unknown key"),
                        }
                    }
                    if drop.name.is_empty() || drop.name.contains('/') || drop.name.starts_with('.') || !drop.name.ends_with(".conf") {
                        cx.error(&dp, d, format!("a drop-in needs a file name ending in .conf, found {:?}; skipped", drop.name));
                    } else if drop.content.is_empty() {
                        // coreos-cloudinit skips empty drop-ins as well.
                        cx.warn(&dp, d, "no content; skipped");
                    } else {
                        u.drop_ins.push(drop);
                    }
                }
            }
            _ => cx.add(Severity::Warning, &p, kpos, "unknown key"),
        }
    }
    if u.name.is_empty() {
        cx.error(path, node, "a unit needs a name; skipped");
        return None;
    }
    if !valid_unit_name(&u.name) {
        cx.error(
            &join(path, "name"),
            node,
            format!("{:?} is not a unit name (NAME.service, .socket, .timer, .network …); skipped", u.name),
        );
        return None;
    }
    if u.is_network() && u.command.is_some() {
        cx.warn(
            &join(path, "command"),
            node,
            "networkd reads .network/.netdev/.link files when it starts; a command on them is ignored, as in coreos-cloudinit",
        );
        u.command = None;
    }
    if u.is_network() && u.enable {
        cx.warn(&join(path, "enable"), node, "networkd files are not enabled; ignored, as in coreos-cloudinit");
        u.enable = false;
    }
    Some(u)
}

const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".target",
    ".timer",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
    ".scope",
    ".device",
    ".network",
    ".netdev",
    ".link",
];

pub(crate) fn valid_unit_name(n: &str) -> bool {
    n.len() <= 255
        && UNIT_SUFFIXES.iter().any(|s| n.len() > s.len() && n.ends_with(s))
        && !n.starts_with('.')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b))
}

#[cfg(test)]
mod tests;
