//! Pinned Debian packages: the package lock, `build-image fetch`, and
//! resolving a package *name* in a recipe (`{"deb": "busybox-static"}`,
//! `"kernel": {"package": "linux-image-cloud-amd64"}`) to the cached `.deb`.
//!
//! **The lock** pins name, version, architecture, sha256 and the archive
//! path (`filename`) of every package. It belongs to the user's project, as
//! `Cargo.lock` does: `packages.lock` next to the recipe or in a folder above
//! it (`kernel/packages.lock` there is found too: this repository's own
//! layout), or the file that `--lock` / `$BUILD_IMAGE_LOCK` names.
//!
//! **The cache** is per user and shared between projects:
//! `$XDG_CACHE_HOME/build-image` (or `~/.cache/build-image`), unless `--cache`
//! / `$BUILD_IMAGE_CACHE` names another folder. A package is stored under the
//! file name `apt-get download` gives it and is used only when its content
//! matches the sha256 that the lock pins, so two projects that pin the same
//! bytes share one file, and a project never uses bytes that its lock does not
//! name.
//!
//! **Pinned means pinned.** A build uses exactly the bytes the lock names or
//! fails; `fetch` never swaps in another version. It looks for each pinned
//! version in this order: the cache; the configured archive (`apt-get
//! download NAME=VERSION`; when apt does not know that version, the package
//! lists are refreshed once, as root, and it tries again); a snapshot
//! archive (`--snapshot URL` / `$BUILD_IMAGE_SNAPSHOT`: the root of a Debian
//! archive with its `pool/`, such as
//! `https://snapshot.debian.org/archive/debian/20261101T000000Z/`). When none
//! has it, `fetch` fails naming each package, the locked version, the one the
//! archive has now, and `build-image fetch --update-lock`. Every download goes
//! to a temp file in the cache and is renamed into place only after its
//! sha256 matched.
//!
//! A locked package may list the locked packages it depends on
//! (`depends`). `fetch --add NAME` pins NAME with everything apt would
//! install with it on an empty system (Depends and Pre-Depends, no
//! Recommends): apt's own resolver picks the versions and alternatives
//! (`apt-get -s` against an empty dpkg status), and each package's
//! `depends` keeps the edges inside that set. A `deb` layer naming a package
//! unpacks its whole closure, dependencies first ([`Packages::closure`]).
//! The resolver is apt's rather than our own because Debian's dependency
//! language (alternatives, virtual packages, version ranges) is apt's to
//! interpret, and the lock only records its answer. `fetch` (or `fetch
//! --add`) without a lock creates one, pinning the default packages.
//!
//! **Debian root sets.** A `debian` layer installs a whole Debian system:
//! its packages plus Debian's base (what `mmdebstrap --variant=required`
//! installs: `?essential`, `?priority(required)`, `apt`, and
//! `usr-is-merged` for a merged /usr). `fetch --add-root A,B,…` resolves
//! that whole set *jointly*, with one `apt-get -s install` on an empty dpkg
//! status ([`ROOT_BASE`] plus the names), pins every package of the answer
//! in `packages` (with the archive's `priority` and `essential`, which a
//! package's own control file does not always agree with) and records the
//! set under `roots`, keyed by [`root_key`] (the requested names, sorted,
//! comma-separated): `"roots": {"openssh-server,sudo,systemd-sysv":
//! ["adduser", "apt", …]}`. A build installs exactly that list.
//! `--update-lock` resolves every recorded set anew. Locks without `roots`
//! read as before, and a lock without root sets is written as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The lock's file names, looked for in the recipe's folder and each folder
/// above it: a project's `packages.lock`, or this repository's own layout.
pub const LOCK_NAMES: [&str; 2] = ["packages.lock", "kernel/packages.lock"];

/// The lock file to use instead of searching (`--lock` sets it).
pub const LOCK_ENV: &str = "BUILD_IMAGE_LOCK";
/// The package cache folder (`--cache` sets it).
pub const CACHE_ENV: &str = "BUILD_IMAGE_CACHE";
/// The snapshot archive to fetch from when apt's archive has moved on.
pub const SNAPSHOT_ENV: &str = "BUILD_IMAGE_SNAPSHOT";
/// `1`: `fetch` never runs `apt-get update` by itself.
pub const NO_APT_UPDATE_ENV: &str = "BUILD_IMAGE_NO_APT_UPDATE";

/// The packages images use, by default.
pub const DEFAULT_PACKAGES: [&str; 4] = ["linux-image-cloud-amd64", "systemd-boot-efi", "grub-pc-bin", "busybox-static"];

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid package lock: {msg}")]
    BadLock { path: PathBuf, msg: String },
    #[error("package `{name}` is not in {lock} (locked: {known}): use one of those, or give a path ending in .deb")]
    NotLocked { name: String, lock: PathBuf, known: String },
    #[error(
        "package `{name}` {version} is not fetched ({path} is missing or does not match the sha256 in {lock}): run `build-image fetch`"
    )]
    NotFetched { name: String, version: String, path: PathBuf, lock: PathBuf },
    #[error("no packages.lock in {start} or a folder above it: package names need a package lock. Run `build-image fetch` there to create one (or `build-image fetch --add NAME`), name one with --lock or ${LOCK_ENV}, or give a path ending in .deb instead")]
    NoProject { start: PathBuf },
    #[error("{lock}: {} pinned package(s) could not be fetched with the locked sha256:\n{}\nTo pin what the archive has now: build-image fetch --update-lock{}", missing.len(), missing.join("\n"), lock_arg(lock))]
    Unavailable { lock: PathBuf, missing: Vec<String> },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {msg}")]
    Apt { what: String, msg: String },
    #[error("{lock}: package `{name}` depends on `{dep}`, which is not locked: run `build-image fetch --add {root}` to pin it with its dependencies")]
    DependencyNotLocked { lock: PathBuf, name: String, dep: String, root: String },
    #[error("the Debian package set [{}] is not pinned in {lock}: run `build-image fetch --add-root {}{}` to resolve and pin it (with Debian's base) into the lock", key.replace(',', ", "), add_root_arg(key), lock_arg(lock))]
    RootNotLocked { key: String, lock: PathBuf },
    #[error(
        "{lock}: root set `{key}` lists `{name}`, which is not locked: run `build-image fetch --add-root {}{}` to pin it again",
        add_root_arg(key),
        lock_arg(lock)
    )]
    RootMemberNotLocked { key: String, name: String, lock: PathBuf },
}

/// One pinned package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Locked {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    /// Locked packages this one depends on (the versioned kernel package of
    /// `linux-image-cloud-amd64`; a package added with `fetch --add`: its
    /// Depends and Pre-Depends as apt resolved them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// The file's path in a Debian archive (`pool/main/…`, the `Filename`
    /// field of apt's record): where a snapshot archive has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The archive's `Priority` (`required`, `important`, …), which may
    /// differ from the one in the package's own control file: a `debian`
    /// layer's package index carries this one, as Debian's archive does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// `Essential: yes` in the archive's record.
    #[serde(default, skip_serializing_if = "is_false")]
    pub essential: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Locked {
    /// The file name `apt-get download` writes (an epoch's `:` becomes `%3a`).
    pub fn file_name(&self) -> String {
        format!("{}_{}_{}.deb", self.name, self.version.replace(':', "%3a"), self.architecture)
    }
}

/// `kernel/packages.lock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// The Debian suite the versions come from.
    pub suite: String,
    pub packages: Vec<Locked>,
    /// Debian root sets (`debian` layers): [`root_key`] of the requested
    /// names → every package of the set as apt resolved it jointly with
    /// Debian's base, sorted. Each is in `packages`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roots: BTreeMap<String, Vec<String>>,
}

/// What every Debian root installs besides the packages a `debian` layer
/// names, as `apt-get install` arguments: what `mmdebstrap
/// --variant=required` selects (Essential and Priority: required packages
/// of the architecture, and apt), plus `usr-is-merged`, the package a
/// merged /usr stands for (mmdebstrap's merged-usr hook makes the /usr
/// merge itself; without it, apt would pick `usrmerge` and perl).
pub const ROOT_BASE: [&str; 4] =
    ["?narrow(?architecture(amd64),?essential)", "?narrow(?architecture(amd64),?priority(required))", "apt", "usr-is-merged"];

/// The lock's key of a Debian root set: the requested names, sorted, each
/// once, joined by `,` (what `fetch --add-root` takes back).
pub fn root_key<S: AsRef<str>>(names: &[S]) -> String {
    let set: std::collections::BTreeSet<&str> = names.iter().map(|n| n.as_ref().trim()).filter(|n| !n.is_empty()).collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// The names of a root key (the inverse of [`root_key`]), also how
/// `fetch --add-root` reads its argument: split at commas and blanks.
pub fn root_names(key: &str) -> Vec<String> {
    let names: Vec<&str> = key.split([',', ' ', '\t', '\n']).filter(|n| !n.is_empty()).collect();
    root_names_sorted(&names)
}

fn root_names_sorted(names: &[&str]) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    set.into_iter().map(str::to_string).collect()
}

impl Lock {
    pub fn read(path: &Path) -> Result<Lock, PackageError> {
        let text = std::fs::read_to_string(path).map_err(|source| PackageError::Read { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|e| PackageError::BadLock { path: path.into(), msg: e.to_string() })
    }

    pub fn get(&self, name: &str) -> Option<&Locked> {
        self.packages.iter().find(|p| p.name == name)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("lock serializes") + "\n"
    }
}

/// The argument of `fetch --add-root` for a root key (`''` for the base alone).
fn add_root_arg(key: &str) -> String {
    if key.is_empty() {
        "''".into()
    } else {
        key.to_string()
    }
}

/// ` --lock FILE` for a hint, when the lock is not the one found by searching.
fn lock_arg(lock: &Path) -> String {
    if std::env::var_os(LOCK_ENV).is_some() {
        format!(" --lock {}", lock.display())
    } else {
        String::new()
    }
}

/// The lock to use for a recipe in `start`: `$BUILD_IMAGE_LOCK` (`--lock`),
/// else the first of [`LOCK_NAMES`] in `start` or a folder above it.
pub fn find_lock(start: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(LOCK_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let start = start.canonicalize().ok()?;
    start.ancestors().find_map(|d| LOCK_NAMES.iter().map(|n| d.join(n)).find(|p| p.is_file()))
}

/// The package cache: `$BUILD_IMAGE_CACHE` (`--cache`), else
/// `$XDG_CACHE_HOME/build-image`, else `~/.cache/build-image`.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(c) = var(CACHE_ENV) {
        return c;
    }
    if let Some(x) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return x.join("build-image");
    }
    match var("HOME") {
        Some(h) => h.join(".cache/build-image"),
        None => std::env::temp_dir().join("build-image-cache"),
    }
}

/// Resolves package names to cached `.deb` files.
#[derive(Debug, Clone)]
pub struct Packages {
    pub lock_path: PathBuf,
    pub lock: Lock,
    pub cache: PathBuf,
}

impl Packages {
    /// Open the lock for a recipe in `start` ([`find_lock`]) and the cache.
    pub fn open(start: &Path) -> Result<Packages, PackageError> {
        let lock_path = find_lock(start).ok_or_else(|| PackageError::NoProject { start: start.into() })?;
        let lock = Lock::read(&lock_path)?;
        Ok(Packages { lock_path, lock, cache: cache_dir() })
    }

    /// The locked entry of `name`.
    pub fn entry(&self, name: &str) -> Result<&Locked, PackageError> {
        self.lock.get(name).ok_or_else(|| PackageError::NotLocked {
            name: name.into(),
            lock: self.lock_path.clone(),
            known: self.lock.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// `name` and every locked package it depends on, transitively:
    /// dependencies first (depth-first, in `depends` order), each once.
    /// Dependency cycles (libc6 and libgcc-s1) are cut where they close.
    pub fn closure(&self, name: &str) -> Result<Vec<String>, PackageError> {
        fn visit<'a>(
            p: &'a Packages,
            root: &str,
            name: &'a str,
            seen: &mut std::collections::BTreeSet<&'a str>,
            out: &mut Vec<String>,
        ) -> Result<(), PackageError> {
            if !seen.insert(name) {
                return Ok(());
            }
            let entry = p.entry(name)?;
            for d in &entry.depends {
                if p.lock.get(d).is_none() {
                    return Err(PackageError::DependencyNotLocked {
                        lock: p.lock_path.clone(),
                        name: name.into(),
                        dep: d.clone(),
                        root: root.into(),
                    });
                }
                visit(p, root, d, seen, out)?;
            }
            out.push(name.to_string());
            Ok(())
        }
        let mut out = Vec::new();
        visit(self, name, name, &mut std::collections::BTreeSet::new(), &mut out)?;
        Ok(out)
    }

    /// The packages of the Debian root set of `names` (any order), each
    /// with its locked entry, sorted by name; an error naming the
    /// `fetch --add-root` command when the set is not in the lock.
    pub fn root_set<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<&Locked>, PackageError> {
        let key = root_key(names);
        let set =
            self.lock.roots.get(&key).ok_or_else(|| PackageError::RootNotLocked { key: key.clone(), lock: self.lock_path.clone() })?;
        set.iter()
            .map(|n| {
                self.lock.get(n).ok_or_else(|| PackageError::RootMemberNotLocked {
                    key: key.clone(),
                    name: n.clone(),
                    lock: self.lock_path.clone(),
                })
            })
            .collect()
    }

    /// Path of the verified cached `.deb` for `name`.
    pub fn deb(&self, name: &str) -> Result<PathBuf, PackageError> {
        let p = self.entry(name)?;
        let path = self.cache.join("debs").join(p.file_name());
        if !verify(&path, &p.sha256) {
            return Err(PackageError::NotFetched { name: name.into(), version: p.version.clone(), path, lock: self.lock_path.clone() });
        }
        Ok(path)
    }
}

/// Whether `recipe_value` names a package (rather than a host path).
pub fn is_package_name(s: &str) -> bool {
    !s.ends_with(".deb") && !s.contains('/')
}

fn verify(path: &Path, sha256: &str) -> bool {
    match std::fs::File::open(path) {
        Ok(f) => crate::files::sha256_file(&f).map(|h| h == sha256).unwrap_or(false),
        Err(_) => false,
    }
}

/// `apt-cache show` fields of one version (the candidate when `version` is None).
fn apt_show(name: &str, version: Option<&str>) -> Result<BTreeMap<String, String>, PackageError> {
    let spec = match version {
        Some(v) => format!("{name}={v}"),
        None => name.to_string(),
    };
    apt_show_many(std::slice::from_ref(&spec))?
        .into_iter()
        .next()
        .ok_or_else(|| PackageError::Apt { what: format!("apt-cache show {spec}"), msg: "no record".into() })
}

/// `apt-cache show` of several `NAME[=VERSION]` at once (one apt run: each
/// costs a second on a loaded machine): one field map per record, in order.
fn apt_show_many(specs: &[String]) -> Result<Vec<BTreeMap<String, String>>, PackageError> {
    let what = || format!("apt-cache show {}", specs.join(" "));
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(specs)
        .output()
        .map_err(|e| PackageError::Apt { what: what(), msg: e.to_string() })?;
    if !out.status.success() {
        return Err(PackageError::Apt { what: what(), msg: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(parse_records(&String::from_utf8_lossy(&out.stdout)))
}

/// Deb822 records (blank-line separated); continuation lines are skipped.
fn parse_records(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut records = Vec::new();
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !fields.is_empty() {
                records.push(std::mem::take(&mut fields));
            }
        } else if !line.starts_with([' ', '\t']) {
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.to_string(), v.trim().to_string());
            }
        }
    }
    if !fields.is_empty() {
        records.push(fields);
    }
    records
}

fn candidate(name: &str) -> Result<Locked, PackageError> {
    let f = apt_show(name, None)?;
    let get = |k: &str| {
        f.get(k).cloned().ok_or_else(|| PackageError::Apt { what: format!("apt-cache show {name}"), msg: format!("no {k} field") })
    };
    let depends = if name == "linux-image-cloud-amd64" {
        get("Depends")?
            .split(',')
            .filter_map(|d| d.split_whitespace().next())
            .filter(|d| d.starts_with("linux-image-"))
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Locked {
        name: name.into(),
        version: get("Version")?,
        architecture: get("Architecture")?,
        sha256: get("SHA256")?,
        depends,
        filename: f.get("Filename").cloned(),
        priority: None,
        essential: false,
    })
}

/// What apt would install for `args` (names and patterns) on an empty
/// system, in apt's order: (name, version) from `apt-get -s` with an empty
/// dpkg status and no Recommends.
fn apt_install_set(args: &[&str]) -> Result<Vec<(String, String)>, PackageError> {
    let what = format!("apt-get -s install {} (on an empty dpkg status)", args.join(" "));
    let out = Command::new("apt-get")
        .args([
            "-s",
            "-q",
            "-o",
            "Dir::State::status=/dev/null",
            "-o",
            "APT::Install-Recommends=false",
            "-o",
            "APT::Install-Suggests=false",
            "install",
        ])
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| PackageError::Apt { what: what.clone(), msg: e.to_string() })?;
    if !out.status.success() {
        return Err(PackageError::Apt { what, msg: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    let set = parse_inst_lines(&String::from_utf8_lossy(&out.stdout));
    if set.is_empty() {
        return Err(PackageError::Apt { what, msg: "apt would install nothing (is `apt-get update` done?)".into() });
    }
    Ok(set)
}

/// `Inst NAME (VERSION ARCHIVE [ARCH])` lines of `apt-get -s`.
fn parse_inst_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("Inst ")?.split_whitespace();
            let name = w.next()?.to_string();
            let version = w.next()?.strip_prefix('(')?.to_string();
            Some((name, version))
        })
        .collect()
}

/// Names in a Depends-style field: one group per `,`, alternatives by `|`,
/// version and architecture qualifiers dropped.
fn relation_groups(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|g| {
            g.split('|')
                .filter_map(|a| a.split_whitespace().next())
                .map(|n| n.split(':').next().unwrap_or(n).to_string())
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// For each group of `depends`, the first alternative that `set` has by
/// name or that a member provides (`provides`: virtual name → member).
fn resolve_edges(groups: &[Vec<String>], set: &BTreeMap<String, String>, provides: &BTreeMap<String, String>, me: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        let hit = g.iter().find_map(|a| if set.contains_key(a) { Some(a.clone()) } else { provides.get(a).cloned() });
        if let Some(h) = hit {
            if h != me && !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// `name` and what apt installs with it, each pinned to the version apt
/// chose, with `depends` edges inside the set.
pub fn resolve_closure(name: &str) -> Result<Vec<Locked>, PackageError> {
    pin_set(apt_install_set(&[name])?)
}

/// A Debian root set: `names` and Debian's base ([`ROOT_BASE`]), resolved
/// together by one `apt-get -s install` on an empty dpkg status, each
/// pinned to the version apt chose, with `depends` edges inside the set.
pub fn resolve_root(names: &[String]) -> Result<Vec<Locked>, PackageError> {
    let args: Vec<&str> = ROOT_BASE.iter().copied().chain(names.iter().map(String::as_str)).collect();
    let mut set = pin_set(apt_install_set(&args)?)?;
    set.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(set)
}

/// Pin what `apt-get -s` chose: each package's record (`apt-cache show
/// NAME=VERSION`), with `depends` edges inside the set.
fn pin_set(set: Vec<(String, String)>) -> Result<Vec<Locked>, PackageError> {
    let versions: BTreeMap<String, String> = set.iter().cloned().collect();
    let specs: Vec<String> = set.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let mut fields = BTreeMap::new();
    for f in apt_show_many(&specs)? {
        if let Some(n) = f.get("Package") {
            fields.insert(n.clone(), f);
        }
    }
    let mut provides = BTreeMap::new();
    for (n, v) in &set {
        let f = fields.get(n).ok_or_else(|| PackageError::Apt { what: format!("apt-cache show {n}={v}"), msg: "no record".into() })?;
        for p in f.get("Provides").map(|p| relation_groups(p)).unwrap_or_default().into_iter().flatten() {
            provides.entry(p).or_insert_with(|| n.clone());
        }
    }
    let mut out = Vec::new();
    for (n, v) in &set {
        let f = &fields[n];
        let get = |k: &str| {
            f.get(k).cloned().ok_or_else(|| PackageError::Apt { what: format!("apt-cache show {n}={v}"), msg: format!("no {k} field") })
        };
        let mut groups = f.get("Pre-Depends").map(|d| relation_groups(d)).unwrap_or_default();
        groups.extend(f.get("Depends").map(|d| relation_groups(d)).unwrap_or_default());
        out.push(Locked {
            name: n.clone(),
            version: v.clone(),
            architecture: get("Architecture")?,
            sha256: get("SHA256")?,
            depends: resolve_edges(&groups, &versions, &provides, n),
            filename: f.get("Filename").cloned(),
            priority: f.get("Priority").cloned(),
            essential: f.get("Essential").is_some_and(|e| e == "yes"),
        });
    }
    Ok(out)
}

/// Put `new` into `pkgs`: an entry of the same name is replaced in place,
/// others are appended.
fn upsert(pkgs: &mut Vec<Locked>, new: Vec<Locked>) {
    for p in new {
        match pkgs.iter_mut().find(|q| q.name == p.name) {
            Some(q) => *q = p,
            None => pkgs.push(p),
        }
    }
}

/// Locked packages that no other locked package depends on and that are
/// not among the defaults or in a Debian root set: what `fetch --add` was
/// asked for.
fn added_roots(lock: &Lock) -> Vec<String> {
    let deps: std::collections::BTreeSet<&str> = lock.packages.iter().flat_map(|p| p.depends.iter().map(String::as_str)).collect();
    let in_roots: std::collections::BTreeSet<&str> = lock.roots.values().flatten().map(String::as_str).collect();
    lock.packages
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !deps.contains(n) && !DEFAULT_PACKAGES.contains(n) && !in_roots.contains(n))
        .map(str::to_string)
        .collect()
}

/// What `fetch` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Re-pin the lock to Debian's current candidates first.
    pub update_lock: bool,
    /// Names to pin, with everything apt installs with them, before fetching.
    pub add: Vec<String>,
    /// Debian root sets to pin (`--add-root`): each the names a `debian`
    /// layer lists, resolved jointly with Debian's base.
    pub add_roots: Vec<Vec<String>>,
    /// Root of a snapshot archive to try when apt's archive lacks a pinned
    /// version (default: `$BUILD_IMAGE_SNAPSHOT`).
    pub snapshot: Option<String>,
}

/// apt, with its package lists refreshed at most once per `fetch`.
struct Apt {
    refreshed: bool,
}

impl Apt {
    /// Refresh apt's package lists once (`apt-get update`), saying why; as
    /// another user than root, say which command would. Returns whether the
    /// lists are now newer than before.
    fn refresh_once(&mut self, why: &str, notes: &mut Vec<String>) -> bool {
        if self.refreshed {
            return false;
        }
        self.refreshed = true;
        if std::env::var_os(NO_APT_UPDATE_ENV).is_some_and(|v| v == "1") {
            notes.push(format!("note: {why}; not refreshing apt's package lists (${NO_APT_UPDATE_ENV}=1)"));
            return false;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            notes.push(format!("note: {why}; apt's package lists may be old: `sudo apt-get update` refreshes them"));
            return false;
        }
        eprintln!("fetch: {why}: refreshing apt's package lists (apt-get update) once");
        match Command::new("apt-get").args(["update", "-qq"]).status() {
            Ok(st) if st.success() => {
                notes.push(format!("refreshed apt's package lists (apt-get update): {why}"));
                true
            }
            Ok(st) => {
                notes.push(format!("warning: apt-get update failed ({st}); {why}"));
                false
            }
            Err(e) => {
                notes.push(format!("warning: running apt-get update: {e}; {why}"));
                false
            }
        }
    }

    /// `apt-get download NAME=VERSION` into `dir`; a missing version
    /// refreshes the lists once and tries again.
    fn download(&mut self, p: &Locked, dir: &Path, notes: &mut Vec<String>) -> Result<(), String> {
        let run = || -> Result<(), String> {
            let spec = format!("{}={}", p.name, p.version);
            let out = Command::new("apt-get")
                .args(["download", "-q", &spec])
                .current_dir(dir)
                .env("LC_ALL", "C")
                .output()
                .map_err(|e| format!("running apt-get download {spec}: {e}"))?;
            if out.status.success() {
                return Ok(());
            }
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err.lines().rfind(|l| l.starts_with("E:")).or(err.lines().last()).unwrap_or("failed").trim().to_string())
        };
        match run() {
            Ok(()) => Ok(()),
            Err(e) if self.refresh_once(&format!("{} {} is not in apt's lists", p.name, p.version), notes) => run().map_err(|_| e),
            Err(e) => Err(e),
        }
    }
}

/// Where a snapshot archive keeps `p`: the lock's `filename`, else the
/// folder apt's current record of the package names, else Debian's pool
/// rule (`lib` packages under four letters) with the package as its source.
fn pool_path(p: &Locked) -> String {
    if let Some(f) = &p.filename {
        return f.clone();
    }
    if let Some(dir) =
        apt_show(&p.name, None).ok().and_then(|f| f.get("Filename").and_then(|f| f.rsplit_once('/')).map(|(d, _)| d.to_string()))
    {
        return format!("{dir}/{}", p.file_name());
    }
    let prefix = if p.name.starts_with("lib") && p.name.len() > 3 { &p.name[..4] } else { &p.name[..1] };
    format!("pool/main/{prefix}/{}/{}", p.name, p.file_name())
}

/// GET `url` into `dest` (a fresh file).
fn http_get(url: &str, dest: &Path) -> Result<(), String> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(600))).http_status_as_error(true).build().into();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let mut f = std::fs::File::create(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    std::io::copy(&mut resp.body_mut().as_reader(), &mut f).map_err(|e| format!("reading {url}: {e}"))?;
    f.sync_all().map_err(|e| format!("writing {}: {e}", dest.display()))
}

/// Fetch every package of the lock at `lock_path` into `cache/debs`, each
/// with exactly its locked sha256, or fail naming what is missing. With
/// `update_lock`, first re-pin the lock to Debian's current candidates: the
/// defaults, and each package an earlier `--add` pinned, with its
/// dependencies resolved anew; `add` pins more names first. Without a lock
/// file, one is created with the default packages. Returns lines to print.
pub fn fetch(lock_path: &Path, cache: &Path, opts: &FetchOptions) -> Result<Vec<String>, PackageError> {
    let mut notes = Vec::new();
    let mut apt = Apt { refreshed: false };
    if opts.update_lock || !opts.add.is_empty() || !opts.add_roots.is_empty() || !lock_path.exists() {
        write_lock(lock_path, opts, &mut apt, &mut notes)?;
    }
    let lock = Lock::read(lock_path)?;
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|source| PackageError::Write { path: debs.clone(), source })?;
    let snapshot = opts.snapshot.clone().or_else(|| std::env::var(SNAPSHOT_ENV).ok()).filter(|s| !s.is_empty());
    let mut missing = Vec::new();
    for p in &lock.packages {
        let path = debs.join(p.file_name());
        if verify(&path, &p.sha256) {
            notes.push(format!("ok {} {} (cached)", p.name, p.version));
            continue;
        }
        match fetch_one(p, &debs, snapshot.as_deref(), &mut apt, &mut notes) {
            Ok(from) => notes.push(format!("ok {} {} ({from})", p.name, p.version)),
            Err(why) => missing.push(format!("  {} {}: {why}", p.name, p.version)),
        }
    }
    if !missing.is_empty() {
        return Err(PackageError::Unavailable { lock: lock_path.to_path_buf(), missing });
    }
    Ok(notes)
}

/// One package into `debs`, from apt's archive or the snapshot archive:
/// downloaded into a temp folder there, checked against the locked
/// sha256, then renamed into place. Returns where it came from, or why no
/// source had it.
fn fetch_one(p: &Locked, debs: &Path, snapshot: Option<&str>, apt: &mut Apt, notes: &mut Vec<String>) -> Result<String, String> {
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(debs)
        .map_err(|e| format!("creating a temp folder in {}: {e}", debs.display()))?;
    let got = tmp.path().join(p.file_name());
    let place = |from: &str| -> Result<String, String> {
        if !verify(&got, &p.sha256) {
            let actual = std::fs::File::open(&got).and_then(|f| crate::files::sha256_file(&f)).unwrap_or_default();
            return Err(format!("{from} has a file with sha256 {actual}, not the locked {}", p.sha256));
        }
        let dest = debs.join(p.file_name());
        std::fs::rename(&got, &dest).map_err(|e| format!("renaming into {}: {e}", dest.display()))?;
        Ok(from.to_string())
    };
    let apt_err = match apt.download(p, tmp.path(), notes) {
        Ok(()) => match place("apt's archive") {
            Ok(from) => return Ok(from),
            Err(e) => e,
        },
        Err(e) => {
            let now = apt_show(&p.name, None).ok().and_then(|f| f.get("Version").cloned());
            match now {
                Some(v) => format!("not in apt's archive, which has {v} now ({e})"),
                None => format!("apt does not know the package ({e})"),
            }
        }
    };
    let Some(base) = snapshot else {
        return Err(format!("not in the cache; {apt_err}; no snapshot archive configured (--snapshot URL or ${SNAPSHOT_ENV})"));
    };
    let url = format!("{}/{}", base.trim_end_matches('/'), pool_path(p));
    match http_get(&url, &got).and_then(|()| place(&url)) {
        Ok(from) => Ok(from),
        Err(e) => Err(format!("not in the cache; {apt_err}; snapshot: {url}: {e}")),
    }
}

/// Write (or create) the lock: re-pinned with `update_lock`, with `add`
/// pinned in.
fn write_lock(lock_path: &Path, opts: &FetchOptions, apt: &mut Apt, notes: &mut Vec<String>) -> Result<(), PackageError> {
    let old = if lock_path.exists() { Some(Lock::read(lock_path)?) } else { None };
    // apt must know the names: on a machine whose lists were never
    // refreshed, it may not.
    let probe = DEFAULT_PACKAGES
        .iter()
        .map(|s| s.to_string())
        .chain(opts.add.iter().cloned())
        .chain(opts.add_roots.iter().flatten().cloned())
        .collect::<Vec<_>>();
    if apt_show_many(&probe).is_err() {
        apt.refresh_once("apt does not know every package to pin", notes);
    }
    let mut pkgs = Vec::new();
    let mut roots: Vec<String> = Vec::new();
    if opts.update_lock || old.is_none() {
        for name in DEFAULT_PACKAGES {
            let c = candidate(name)?;
            let deps = c.depends.clone();
            pkgs.push(c);
            for d in deps {
                pkgs.push(candidate(&d)?);
            }
        }
        roots.extend(old.as_ref().map(added_roots).unwrap_or_default());
    } else if let Some(old) = &old {
        pkgs = old.packages.clone();
    }
    for a in &opts.add {
        if !roots.contains(a) {
            roots.push(a.clone());
        }
    }
    for r in &roots {
        let closure = resolve_closure(r)?;
        notes.push(format!("pinned {r} with {} package(s)", closure.len()));
        upsert(&mut pkgs, closure);
    }
    // Debian root sets: those recorded (re-resolved with --update-lock,
    // else kept as they are) and the new ones.
    let mut root_sets: BTreeMap<String, Vec<String>> = old.as_ref().map(|o| o.roots.clone()).unwrap_or_default();
    let mut resolve: Vec<String> = if opts.update_lock { root_sets.keys().cloned().collect() } else { Vec::new() };
    for names in &opts.add_roots {
        let key = root_key(names);
        if !resolve.contains(&key) {
            resolve.push(key);
        }
    }
    for key in resolve {
        let set = resolve_root(&root_names(&key))?;
        notes.push(format!("pinned the Debian root set [{key}] with {} package(s)", set.len()));
        root_sets.insert(key, set.iter().map(|p| p.name.clone()).collect());
        upsert(&mut pkgs, set);
    }
    let lock = Lock { suite: old.map(|o| o.suite).unwrap_or_else(|| "bookworm".into()), packages: pkgs, roots: root_sets };
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| PackageError::Write { path: dir.into(), source })?;
    }
    // Atomically: a temp file beside the lock, then rename.
    let dir = lock_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|source| PackageError::Write { path: lock_path.into(), source })?;
    std::io::Write::write_all(&mut tmp, lock.to_json().as_bytes())
        .map_err(|source| PackageError::Write { path: lock_path.into(), source })?;
    tmp.persist(lock_path).map_err(|e| PackageError::Write { path: lock_path.into(), source: e.error })?;
    notes.push(format!("wrote {}", lock_path.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_package_names() {
        let p = Locked {
            name: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
            architecture: "amd64".into(),
            sha256: String::new(),
            depends: vec![],
            filename: None,
            priority: None,
            essential: false,
        };
        assert_eq!(p.file_name(), "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb");
        assert!(is_package_name("busybox-static"));
        assert!(!is_package_name("debs/x.deb"));
        assert!(!is_package_name("x.deb"));
    }

    #[test]
    fn apt_output_parsing() {
        let sim = "NOTE: This is only a simulation!\nInst libc6 (2.36-9+deb12u14 Debian-Security:12/stable-security [amd64])\n\
                   Inst nginx-common (1.22.1-9+deb12u11 Debian-Security:12/stable-security [all])\nConf libc6 (2.36-9+deb12u14 Debian-Security:12/stable-security [amd64])\n";
        assert_eq!(
            parse_inst_lines(sim),
            vec![("libc6".to_string(), "2.36-9+deb12u14".to_string()), ("nginx-common".to_string(), "1.22.1-9+deb12u11".to_string())]
        );
        let recs = parse_records("Package: a\nVersion: 1\nDescription: x\n y: not a field\n\nPackage: b\nVersion: 2:3\n");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].get("Version").map(String::as_str), Some("1"));
        assert!(!recs[0].keys().any(|k| k.contains('y')), "{recs:?}");
        assert_eq!(recs[1].get("Version").map(String::as_str), Some("2:3"));
    }

    #[test]
    fn dependency_edges_follow_apts_choice() {
        let groups = relation_groups("debconf (>= 0.5) | debconf-2.0, libc6:any (>= 2.34), nginx-abi-1.22.1-7, perl-base, nginx");
        assert_eq!(groups[0], vec!["debconf", "debconf-2.0"]);
        assert_eq!(groups[1], vec!["libc6"]);
        // Only cdebconf is in the set: the second alternative is taken.
        let set: BTreeMap<String, String> = ["cdebconf", "libc6", "nginx"].iter().map(|n| (n.to_string(), "1".to_string())).collect();
        let provides: BTreeMap<String, String> =
            [("debconf-2.0", "cdebconf"), ("nginx-abi-1.22.1-7", "nginx")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        // perl-base (not in the set) is dropped; nginx once; self excluded.
        assert_eq!(resolve_edges(&groups, &set, &provides, "x"), vec!["cdebconf", "libc6", "nginx"]);
        assert_eq!(resolve_edges(&groups, &set, &provides, "nginx"), vec!["cdebconf", "libc6"]);
    }

    fn lock_of(pkgs: &[(&str, &[&str])]) -> Packages {
        let packages = pkgs
            .iter()
            .map(|(n, d)| Locked {
                name: n.to_string(),
                version: "1".into(),
                architecture: "amd64".into(),
                sha256: String::new(),
                depends: d.iter().map(|s| s.to_string()).collect(),
                filename: None,
                priority: None,
                essential: false,
            })
            .collect();
        Packages {
            lock_path: "kernel/packages.lock".into(),
            lock: Lock { suite: "bookworm".into(), packages, roots: BTreeMap::new() },
            cache: "c".into(),
        }
    }

    #[test]
    fn closure_is_dependencies_first_once_each() {
        let p = lock_of(&[
            ("app", &["lib", "common"]),
            ("lib", &["libc6"]),
            ("libc6", &["libgcc-s1"]),
            ("libgcc-s1", &["libc6", "base"]),
            ("base", &[]),
            ("common", &["lib"]),
        ]);
        assert_eq!(p.closure("app").unwrap(), ["base", "libgcc-s1", "libc6", "lib", "common", "app"]);
        assert_eq!(p.closure("base").unwrap(), ["base"]);
        let bad = lock_of(&[("app", &["gone"])]);
        let e = bad.closure("app").unwrap_err().to_string();
        assert!(e.contains("`app` depends on `gone`") && e.contains("fetch --add app"), "{e}");
        assert!(lock_of(&[]).closure("nope").unwrap_err().to_string().contains("not in"));
    }

    #[test]
    fn roots_are_what_nothing_else_needs() {
        let p = lock_of(&[("busybox-static", &[]), ("app", &["lib"]), ("lib", &[]), ("tool", &[])]);
        assert_eq!(added_roots(&p.lock), ["app", "tool"]);
    }

    #[test]
    fn root_keys_are_sorted_names_each_once() {
        assert_eq!(root_key(&["sudo", "openssh-server", "sudo", " kmod"]), "kmod,openssh-server,sudo");
        assert_eq!(root_key::<&str>(&[]), "");
        assert_eq!(root_names("systemd-sysv, openssh-server,,sudo openssh-server"), ["openssh-server", "sudo", "systemd-sysv"]);
        assert_eq!(root_key(&root_names("b,a")), "a,b");
        assert!(root_names("").is_empty());
    }

    /// A lock written before root sets existed reads, and writes back the
    /// same text: no new fields appear when there is nothing to put in them.
    #[test]
    fn old_locks_read_and_write_back_unchanged() {
        let old = r#"{
  "suite": "bookworm",
  "packages": [
    {
      "name": "linux-image-cloud-amd64",
      "version": "6.1.192-2",
      "architecture": "amd64",
      "sha256": "00",
      "depends": [
        "linux-image-6.1.0-56-cloud-amd64"
      ]
    },
    {
      "name": "libc6",
      "version": "2.36-9+deb12u14",
      "architecture": "amd64",
      "sha256": "11",
      "filename": "pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb"
    }
  ]
}
"#;
        let lock: Lock = serde_json::from_str(old).unwrap();
        assert!(lock.roots.is_empty() && lock.packages.iter().all(|p| p.priority.is_none() && !p.essential));
        assert_eq!(lock.to_json(), old);
        // The repository's own lock reads too.
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/packages.lock");
        Lock::read(&here).unwrap();
    }

    #[test]
    fn root_sets_round_trip_and_resolve_to_locked_entries() {
        let mut p = lock_of(&[("base-files", &[]), ("libc6", &[]), ("sudo", &["libc6"]), ("app", &["libc6"])]);
        p.lock.packages[0].priority = Some("required".into());
        p.lock.packages[0].essential = true;
        p.lock.roots.insert("sudo".into(), vec!["base-files".into(), "libc6".into(), "sudo".into()]);
        let text = p.lock.to_json();
        assert!(text.contains(r#""priority": "required""#) && text.contains(r#""essential": true"#), "{text}");
        assert!(text.contains(r#""roots": {"#) && text.contains(r#""sudo": ["#), "{text}");
        let back: Lock = serde_json::from_str(&text).unwrap();
        assert_eq!(back.roots, p.lock.roots);
        assert_eq!(back.packages, p.lock.packages);
        // Any order and duplicates name the same set.
        let set = p.root_set(&["sudo", "sudo"]).unwrap();
        assert_eq!(set.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["base-files", "libc6", "sudo"]);
        // A set that is not pinned names the command that pins it.
        let e = p.root_set(&["systemd-sysv", "openssh-server"]).unwrap_err().to_string();
        assert!(e.contains("[openssh-server, systemd-sysv] is not pinned in kernel/packages.lock"), "{e}");
        // ` --lock FILE` joins the hint only when $BUILD_IMAGE_LOCK chose the lock.
        let hint = format!("build-image fetch --add-root openssh-server,systemd-sysv{}`", lock_arg(Path::new("kernel/packages.lock")));
        assert!(e.contains(&hint), "{e}");
        let e = p.root_set::<&str>(&[]).unwrap_err().to_string();
        assert!(e.contains("fetch --add-root ''"), "{e}");
        // A set naming a package that is not locked.
        p.lock.roots.insert("gone".into(), vec!["gone".into()]);
        let e = p.root_set(&["gone"]).unwrap_err().to_string();
        assert!(e.contains("lists `gone`, which is not locked"), "{e}");
        // Members of a root set are not `--add` roots (--update-lock
        // resolves them with their set, not one by one).
        assert_eq!(added_roots(&p.lock), ["app"]);
    }
}
