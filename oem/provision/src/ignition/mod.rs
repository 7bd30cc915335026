//! Ignition configs: parsed, checked and applied to a root directory.
//!
//! ## What is accepted
//! * Spec **3.0.0, 3.1.0, 3.2.0, 3.3.0, 3.4.0-experimental** (what
//!   Ignition 2.14, Debian 12's, accepts) and **3.4.0** (stable since
//!   Ignition 2.15, which is what newer producers such as Butane emit).
//! * Spec **2.0.0–2.4.x** (and their `-experimental` pre-releases),
//!   translated to the 3 model as Fedora's `ign-converter` does: files,
//!   directories and links must be on the `"root"` filesystem; a file
//!   without `overwrite` overwrites, `append: true` turns the contents into
//!   `append[0]`; `enable`/`enabled` become `enabled`. Two things
//!   ign-converter refuses are kept on purpose: `networkd.units` become
//!   files under `/etc/systemd/network/` (what Ignition 0.x wrote), and
//!   `storage.filesystems` stay in the model with their 2.x `mount`
//!   (`device`, `format`, `create.force` → `wipeFilesystem`,
//!   `create.options` → `options`) for the agent to decide on. Ignition
//!   2.14 itself no longer reads 2.x configs.
//!
//! ## Diagnostics
//! Every error and warning names the JSON path (`storage.files[2].path`)
//! and says what is accepted. Invalid JSON reports line and column.
//! Unknown keys are **warnings** in every spec version: that is what
//! Ignition reports for 3.x too (`warning at $.storage.files.0.foo: Unused
//! key foo`, and `ignition-validate` exits 0), and 2.x configs written
//! for coreos-cloudinit routinely carry keys such as `command` and
//! `runtime` in `systemd.units[]`.
//!
//! [`parse`] applies Ignition's own validation rules: its verdict
//! (accept/reject) is the one `ignition-validate` gives, which the
//! conformance test checks on a corpus. [`check`] adds what this image
//! refuses although Ignition accepts it (remote sources, config merging,
//! custom CAs, disks, RAID, LUKS, kernel arguments) and decodes every
//! `data:` URL, so that [`apply`] starts only when everything it will
//! write is known to be good.

mod apply;
mod content;
mod parse;
mod validate;

pub use apply::{apply, ApplyError, ApplyOptions, Report, Step};
pub use content::{decode_resource, ContentError};

use serde::Serialize;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a config: where (the JSON path, and for invalid JSON
/// the line and column) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `storage.files[2].contents.source`; empty for the document itself.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}")?;
        if !self.path.is_empty() {
            write!(f, " at {}", self.path)?;
        }
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " (line {l}, column {c})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A config that did not pass: all errors, and the warnings found on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .diagnostics.iter().filter(|d| d.severity == Severity::Error).map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }
}

/// A config that passed, with its warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Which spec the document declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Spec {
    pub major: u8,
    pub minor: u8,
    pub experimental: bool,
}

/// An Ignition config in the spec 3 model (3.4 fields; 2.x translated).
/// Each list entry keeps `origin`, the JSON path it came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    /// The version string as written (`"3.3.0"`, `"2.0.0"`).
    pub version: String,
    pub spec: Option<Spec>,
    pub ignition: IgnitionSection,
    pub storage: Storage,
    pub systemd: Systemd,
    pub passwd: Passwd,
    pub kernel_arguments: KernelArguments,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct IgnitionSection {
    pub config: ConfigRefs,
    pub timeouts: Timeouts,
    pub security: Security,
    pub proxy: Proxy,
}

/// `ignition.config`: other configs to merge or to use instead.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ConfigRefs {
    pub merge: Vec<Resource>,
    pub replace: Option<Resource>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Timeouts {
    pub http_response_headers: Option<i64>,
    pub http_total: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Security {
    pub certificate_authorities: Vec<Resource>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Proxy {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Vec<String>,
}

/// A source of bytes: `contents`, `append[]`, config references, CAs.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Resource {
    pub origin: String,
    /// `None`: no contents given. `Some("")`: empty.
    pub source: Option<String>,
    /// `None`, `""` or `"gzip"`.
    pub compression: Option<String>,
    /// `verification.hash`: `sha512-HEX` or `sha256-HEX`.
    pub hash: Option<String>,
    pub http_headers: Vec<(String, Option<String>)>,
}

/// `user`/`group` of a node: by id or by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Owner {
    pub id: Option<i64>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Node {
    pub origin: String,
    pub path: String,
    pub overwrite: Option<bool>,
    pub user: Owner,
    pub group: Owner,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct File {
    #[serde(flatten)]
    pub node: Node,
    /// Permission bits as a number (JSON is decimal: 420 = 0o644).
    pub mode: Option<i64>,
    pub contents: Resource,
    pub append: Vec<Resource>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Directory {
    #[serde(flatten)]
    pub node: Node,
    pub mode: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Link {
    #[serde(flatten)]
    pub node: Node,
    pub target: Option<String>,
    pub hard: Option<bool>,
}

/// `storage.filesystems[]`: not applied by [`apply`]; the agent formats
/// data disks in a later step.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Filesystem {
    pub origin: String,
    pub device: String,
    /// ext4, btrfs, vfat, xfs, swap or none.
    pub format: Option<String>,
    pub path: Option<String>,
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub wipe_filesystem: Option<bool>,
    pub options: Vec<String>,
    pub mount_options: Vec<String>,
    /// Spec 2.x only: the filesystem's name (`"root"` is the root).
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Disk {
    pub origin: String,
    pub device: String,
    pub wipe_table: Option<bool>,
    pub partitions: usize,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Raid {
    pub origin: String,
    pub name: String,
    pub level: Option<String>,
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Luks {
    pub origin: String,
    pub name: String,
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Storage {
    pub files: Vec<File>,
    pub directories: Vec<Directory>,
    pub links: Vec<Link>,
    pub filesystems: Vec<Filesystem>,
    pub disks: Vec<Disk>,
    pub raid: Vec<Raid>,
    pub luks: Vec<Luks>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Dropin {
    pub origin: String,
    pub name: String,
    pub contents: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Unit {
    pub origin: String,
    pub name: String,
    pub enabled: Option<bool>,
    pub mask: Option<bool>,
    pub contents: Option<String>,
    pub dropins: Vec<Dropin>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Systemd {
    pub units: Vec<Unit>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct User {
    pub origin: String,
    pub name: String,
    pub uid: Option<i64>,
    pub password_hash: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub gecos: Option<String>,
    pub home_dir: Option<String>,
    pub no_create_home: Option<bool>,
    pub primary_group: Option<String>,
    pub groups: Vec<String>,
    pub no_user_group: Option<bool>,
    pub no_log_init: Option<bool>,
    pub shell: Option<String>,
    pub system: Option<bool>,
    pub should_exist: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Group {
    pub origin: String,
    pub name: String,
    pub gid: Option<i64>,
    pub password_hash: Option<String>,
    pub system: Option<bool>,
    pub should_exist: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Passwd {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct KernelArguments {
    pub should_exist: Vec<String>,
    pub should_not_exist: Vec<String>,
}

/// Parse and validate as Ignition does (see the module docs): `Ok` when
/// Ignition would accept the config, with its warnings.
pub fn parse(data: &[u8]) -> Result<Parsed, ConfigError> {
    let mut diags = Vec::new();
    let config = parse::parse(data, &mut diags);
    if let Some(config) = &config {
        validate::validate(config, &mut diags);
    }
    finish(config, diags)
}

/// [`parse`], then what this image refuses although Ignition accepts it,
/// then every `data:` URL decoded (and decompressed and verified).
pub fn check(data: &[u8]) -> Result<Parsed, ConfigError> {
    let mut parsed = parse(data)?;
    let mut diags = std::mem::take(&mut parsed.warnings);
    validate::unsupported(&parsed.config, &mut diags);
    finish(Some(parsed.config), diags)
}

fn finish(config: Option<Config>, diagnostics: Vec<Diagnostic>) -> Result<Parsed, ConfigError> {
    match config {
        Some(config) if diagnostics.iter().all(|d| d.severity == Severity::Warning) => Ok(Parsed { config, warnings: diagnostics }),
        _ => Err(ConfigError { diagnostics }),
    }
}

#[cfg(test)]
mod tests;
