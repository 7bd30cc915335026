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
}

/// One pinned package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Locked {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    /// Locked packages this one depends on (the versioned kernel package of
    /// `linux-image-cloud-amd64`).
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
        let resolved = std::fs::read_to_string(resolved_path(&cache))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
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
        Ok(f) => crate::pipeline::sha256_file(&f).map(|h| h == sha256).unwrap_or(false),
        Err(_) => false,
    }
}

/// `apt-cache show` fields of one version (the candidate when `version` is None).
fn apt_show(name: &str, version: Option<&str>) -> Result<BTreeMap<String, String>, PackageError> {
    let spec = match version {
        Some(v) => format!("{name}={v}"),
        None => name.to_string(),
    };
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", &spec])
        .output()
        .map_err(|e| PackageError::Apt { what: format!("apt-cache show {spec}"), msg: e.to_string() })?;
    if !out.status.success() {
        return Err(PackageError::Apt {
            what: format!("apt-cache show {spec}"),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(": ") {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    Ok(fields)
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
/// re-pin the lock to Debian's current candidates. Returns lines to print.
pub fn fetch(root: &Path, update_lock: bool) -> Result<Vec<String>, PackageError> {
    let lock_path = root.join(LOCK_PATH);
    let mut notes = Vec::new();
    if update_lock || !lock_path.exists() {
        let mut pkgs = Vec::new();
        for name in DEFAULT_PACKAGES {
            let c = candidate(name)?;
            let deps = c.depends.clone();
            pkgs.push(c);
            for d in deps {
                pkgs.push(candidate(&d)?);
            }
        }
        let lock = Lock { suite: "bookworm".into(), packages: pkgs };
        std::fs::create_dir_all(lock_path.parent().expect("has parent")).map_err(|source| PackageError::Read { path: lock_path.clone(), source })?;
        std::fs::write(&lock_path, lock.to_json()).map_err(|source| PackageError::Read { path: lock_path.clone(), source })?;
        notes.push(format!("wrote {}", lock_path.display()));
    }
    let lock = Lock::read(&lock_path)?;
    let cache = cache_dir(root);
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|source| PackageError::Read { path: debs.clone(), source })?;
    let mut resolved = Resolved::new();
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
        if let Ok(c) = candidate(&p.name) {
            if c.version != p.version && used.version == p.version {
                notes.push(format!(
                    "note: Debian has {} {}, newer than the locked {}; `./build.sh fetch --update-lock` pins it",
                    p.name, c.version, p.version
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
}
