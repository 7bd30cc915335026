//! Pinned Debian packages: `kernel/packages.lock`, `build-image fetch`, and
//! resolving a package *name* in a recipe (`{"deb": "busybox-static"}`,
//! `"kernel": {"package": "linux-image-cloud-amd64"}`) to the cached `.deb`.
//!
//! The lock pins name, version, architecture and sha256. `fetch` downloads
//! with `apt-get download NAME=VERSION` into `CACHE/debs/` and checks the
//! digest. When Debian's archive has moved on (the pinned version is gone),
//! it falls back to the current candidate with a warning and records what it
//! used in `CACHE/debs/resolved.json`; the lock itself changes only with
//! `--update-lock`. No binaries are committed.
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
//! interpret, and the lock only records its answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Where the lock lives, relative to the project root.
pub const LOCK_PATH: &str = "kernel/packages.lock";

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
    #[error("package `{name}` {version} is not fetched ({path} is missing or does not match its sha256): run `./build.sh fetch`")]
    NotFetched { name: String, version: String, path: PathBuf },
    #[error("no kernel/packages.lock found above {start}: package names need the project's lock; give a path ending in .deb instead")]
    NoProject { start: PathBuf },
    #[error("{what}: {msg}")]
    Apt { what: String, msg: String },
    #[error("{lock}: package `{name}` depends on `{dep}`, which is not locked: run `build-image fetch --add {root}` to pin it with its dependencies")]
    DependencyNotLocked { lock: PathBuf, name: String, dep: String, root: String },
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

/// The project root: the first folder at or above `start` holding the lock.
pub fn project_root(start: &Path) -> Option<PathBuf> {
    let start = start.canonicalize().ok()?;
    start.ancestors().find(|d| d.join(LOCK_PATH).is_file()).map(Path::to_path_buf)
}

/// The package cache: `$BUILD_IMAGE_CACHE`, else `ROOT/out/cache`.
pub fn cache_dir(root: &Path) -> PathBuf {
    std::env::var_os("BUILD_IMAGE_CACHE").map(PathBuf::from).unwrap_or_else(|| root.join("out/cache"))
}

/// What `fetch` actually used for each locked name (the locked version, or a
/// fallback when the archive moved on).
pub type Resolved = BTreeMap<String, Locked>;

fn resolved_path(cache: &Path) -> PathBuf {
    cache.join("debs/resolved.json")
}

/// Resolves package names to cached `.deb` files.
#[derive(Debug, Clone)]
pub struct Packages {
    pub lock_path: PathBuf,
    pub lock: Lock,
    pub cache: PathBuf,
    resolved: Resolved,
}

impl Packages {
    /// Open the lock of the project that contains `start` (the recipe's folder).
    pub fn open(start: &Path) -> Result<Packages, PackageError> {
        let root = project_root(start).ok_or_else(|| PackageError::NoProject { start: start.into() })?;
        let lock_path = root.join(LOCK_PATH);
        let lock = Lock::read(&lock_path)?;
        let cache = cache_dir(&root);
        let resolved = std::fs::read_to_string(resolved_path(&cache)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Ok(Packages { lock_path, lock, cache, resolved })
    }

    /// The package actually in use for `name`.
    pub fn entry(&self, name: &str) -> Result<&Locked, PackageError> {
        let locked = self.lock.get(name).ok_or_else(|| PackageError::NotLocked {
            name: name.into(),
            lock: self.lock_path.clone(),
            known: self.lock.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        Ok(self.resolved.get(name).unwrap_or(locked))
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

    /// Path of the verified cached `.deb` for `name`.
    pub fn deb(&self, name: &str) -> Result<PathBuf, PackageError> {
        let p = self.entry(name)?;
        let path = self.cache.join("debs").join(p.file_name());
        if !verify(&path, &p.sha256) {
            return Err(PackageError::NotFetched { name: name.into(), version: p.version.clone(), path });
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
    Ok(Locked { name: name.into(), version: get("Version")?, architecture: get("Architecture")?, sha256: get("SHA256")?, depends })
}

/// What apt would install for `name` on an empty system, in apt's order:
/// (name, version) from `apt-get -s` with an empty dpkg status and no
/// Recommends.
fn apt_install_set(name: &str) -> Result<Vec<(String, String)>, PackageError> {
    let what = format!("apt-get -s install {name} (on an empty dpkg status)");
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
            name,
        ])
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
    let set = apt_install_set(name)?;
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
/// not among the defaults: what `fetch --add` was asked for.
fn added_roots(lock: &Lock) -> Vec<String> {
    let deps: std::collections::BTreeSet<&str> = lock.packages.iter().flat_map(|p| p.depends.iter().map(String::as_str)).collect();
    lock.packages
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !deps.contains(n) && !DEFAULT_PACKAGES.contains(n))
        .map(str::to_string)
        .collect()
}

fn download(p: &Locked, debs: &Path) -> Result<(), PackageError> {
    let spec = format!("{}={}", p.name, p.version);
    let out = Command::new("apt-get")
        .args(["download", "-q", &spec])
        .current_dir(debs)
        .output()
        .map_err(|e| PackageError::Apt { what: format!("apt-get download {spec}"), msg: e.to_string() })?;
    if !out.status.success() {
        return Err(PackageError::Apt {
            what: format!("apt-get download {spec}"),
            msg: String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed").to_string(),
        });
    }
    Ok(())
}

/// Fetch every locked package into `CACHE/debs`. With `update_lock`, first
/// re-pin the lock to Debian's current candidates: the defaults, and each
/// package an earlier `--add` pinned, with its dependencies resolved anew. `add`:
/// names to pin (with everything apt installs with them) before fetching.
/// Returns lines to print.
pub fn fetch(root: &Path, update_lock: bool, add: &[String]) -> Result<Vec<String>, PackageError> {
    let lock_path = root.join(LOCK_PATH);
    let mut notes = Vec::new();
    if update_lock || !add.is_empty() || !lock_path.exists() {
        let old = if lock_path.exists() { Some(Lock::read(&lock_path)?) } else { None };
        let mut pkgs = Vec::new();
        let mut roots: Vec<String> = Vec::new();
        if update_lock || old.is_none() {
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
        for a in add {
            if !roots.contains(a) {
                roots.push(a.clone());
            }
        }
        for r in &roots {
            let closure = resolve_closure(r)?;
            notes.push(format!("pinned {r} with {} package(s)", closure.len()));
            upsert(&mut pkgs, closure);
        }
        let lock = Lock { suite: "bookworm".into(), packages: pkgs };
        std::fs::create_dir_all(lock_path.parent().expect("has parent"))
            .map_err(|source| PackageError::Read { path: lock_path.clone(), source })?;
        std::fs::write(&lock_path, lock.to_json()).map_err(|source| PackageError::Read { path: lock_path.clone(), source })?;
        notes.push(format!("wrote {}", lock_path.display()));
    }
    let lock = Lock::read(&lock_path)?;
    let cache = cache_dir(root);
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|source| PackageError::Read { path: debs.clone(), source })?;
    let mut resolved = Resolved::new();
    // Debian's current versions, for the "newer than locked" notes (none
    // when apt does not know a name).
    // One apt run for all; if apt does not know one of them, one run each.
    let names: Vec<String> = lock.packages.iter().map(|p| p.name.clone()).collect();
    let records = apt_show_many(&names)
        .unwrap_or_else(|_| names.iter().filter_map(|n| apt_show_many(std::slice::from_ref(n)).ok()).flatten().collect());
    let current: BTreeMap<String, String> =
        records.into_iter().filter_map(|f| Some((f.get("Package")?.clone(), f.get("Version")?.clone()))).collect();
    for p in &lock.packages {
        let mut used = p.clone();
        let path = debs.join(p.file_name());
        if !verify(&path, &p.sha256) {
            match download(p, &debs) {
                Ok(()) => {}
                Err(e) => {
                    // The archive moved on: use the current candidate, say so, record it.
                    let c = candidate(&p.name)?;
                    notes.push(format!(
                        "warning: {} {} is no longer in the archive ({e}); using {} instead. Run `./build.sh fetch --update-lock` to pin it.",
                        p.name, p.version, c.version
                    ));
                    download(&c, &debs)?;
                    used = Locked { depends: p.depends.clone(), ..c };
                }
            }
            let path = debs.join(used.file_name());
            if !verify(&path, &used.sha256) {
                return Err(PackageError::Apt {
                    what: format!("verifying {}", path.display()),
                    msg: format!("sha256 does not match the expected {}", used.sha256),
                });
            }
        }
        if let Some(v) = current.get(&p.name) {
            if *v != p.version && used.version == p.version {
                notes.push(format!(
                    "note: Debian has {} {v}, newer than the locked {}; `./build.sh fetch --update-lock` pins it",
                    p.name, p.version
                ));
            }
        }
        notes.push(format!("ok {} {} ({})", used.name, used.version, used.file_name()));
        if used != *p {
            resolved.insert(p.name.clone(), used);
        }
    }
    let rp = resolved_path(&cache);
    std::fs::write(&rp, serde_json::to_string_pretty(&resolved).expect("serializes") + "\n")
        .map_err(|source| PackageError::Read { path: rp, source })?;
    Ok(notes)
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
            })
            .collect();
        Packages {
            lock_path: "kernel/packages.lock".into(),
            lock: Lock { suite: "bookworm".into(), packages },
            cache: "c".into(),
            resolved: Resolved::new(),
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
}
