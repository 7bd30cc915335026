//! `debian` layers: a Debian system installed as apt installs it —
//! maintainer scripts run, `dpkg` status complete — offline, reproducibly,
//! from exactly the packages the lock pins.
//!
//! ```text
//! lock: roots[key] ─▶ verified .debs in the cache ─▶ flat repo (repo.rs: Packages written here)
//!    ─▶ mmdebstrap --variant=essential --include=<every pinned name=version>   (host.rs: root or unshare mode)
//!         --hook-dir=…/merged-usr, SOURCE_DATE_EPOCH, customize: kernel modules + depmod, apt-mark auto
//!    ─▶ root tarball in the output folder ─▶ tree::tar (the tree references the tarball's bytes)
//!    ─▶ normalise.rs: one list of rules ─▶ the layer's tree
//! ```
//!
//! **The set.** The lock's `roots` entry for the layer's packages (see
//! `boot::packages`, "Debian root sets"): the names *and* Debian's base,
//! resolved jointly by apt when `fetch --add-root` ran. Every one is
//! passed as `--include=NAME=VERSION` with `--variant=essential`, so apt
//! installs that exact set or fails; mmdebstrap's own `required`/`minbase`
//! variants would select packages by the `Priority` of the repository's
//! index, and a package's own control file does not always carry the
//! archive's (the index here carries the archive's, from the lock, so the
//! install order is the one the real archive gives).
//!
//! **Offline.** mmdebstrap sees one source, `deb [trusted=yes]
//! copy:///…/repo ./`, a folder in a temp folder of the output folder
//! holding the verified `.deb` files and their index; the suite is `''`
//! (a flat repository has none). Nothing is downloaded: the build works in
//! a network namespace without a route (the e2e test runs it so).
//!
//! **Reproducible.** `SOURCE_DATE_EPOCH` is the recipe's (mmdebstrap then
//! clamps mtimes and writes a sorted, numeric-owner pax tar; shadow's
//! "last change" days come from it too); the environment is cleared but
//! for `PATH`, `LC_ALL=C.UTF-8`, `TMPDIR` and `SOURCE_DATE_EPOCH`; what
//! still differs between builds or machines is fixed by
//! [`normalise::RULES`]. The build tools are the host's (apt orders the
//! installation, mmdebstrap's tar writes the archive): the same inputs give
//! the same image on the same Debian release of the build machine.
//!
//! **Customize steps** (inside the chroot, before mmdebstrap's cleanup):
//! - with a recipe `kernel` from a package: the kernel package's
//!   `/lib/modules/RELEASE/` goes to `/usr/lib/modules/RELEASE/` of the
//!   root (not registered with dpkg: it is the image's kernel, not a
//!   package of the root) and the root's own `depmod RELEASE` writes
//!   `modules.dep` and the other indexes, so `modprobe` works after boot
//!   and matches `uname -r`. The set must contain `kmod`.
//! - `apt-mark auto` for what apt would have installed as a dependency:
//!   every package is requested with `--include`, so apt marks all of them
//!   manual; the set minus the essential packages and their dependencies,
//!   the `Priority: required` ones, apt, usr-is-merged and the layer's
//!   own packages is marked automatic again, as an online `mmdebstrap
//!   --variant=required --include=…` leaves it (so `apt autoremove` knows).

pub mod host;
pub mod normalise;
pub mod repo;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::boot::packages::{is_package_name, Locked, PackageError, Packages};
use crate::recipe::layer::DebianLayer;
use crate::recipe::{Layer, Loaded};
use crate::tree::{Kind, LayerError, Tree, TreeError};

pub use host::{Host, Mode};

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{0}")]
    Host(String),
    #[error("the recipe's kernel modules go into this root, and its `depmod` comes from kmod, which the set does not have: add \"kmod\" to `debian.packages` (then `build-image fetch --add-root {key}`)")]
    NeedsKmod { key: String },
    #[error("`debian.enable` runs the root's `systemctl enable`, and the set has no systemd: add \"systemd\" (or \"systemd-sysv\") to `debian.packages` (then `build-image fetch --add-root {key}`)")]
    NeedsSystemd { key: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{deb}: {msg}")]
    Deb { deb: PathBuf, msg: String },
    #[error("kernel.package: {0}")]
    Kernel(String),
    #[error("mmdebstrap failed ({status}); the end of its output:\n{tail}")]
    Mmdebstrap { status: String, tail: String },
    #[error("the output folder is not reachable by other users ({dir} has no o+x): mmdebstrap --mode=unshare reads the package repository there as a subordinate uid. `chmod o+x {dir}`, or build with --out in a folder others can reach, or as root")]
    Unreachable { dir: PathBuf },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// The package names a layer asks for, as the lock's key expects them.
fn requested(layer: &DebianLayer) -> &[String] {
    &layer.debian.packages
}

/// Whether the root gets the kernel's modules: the recipe names a kernel
/// package (a bare `kernel.image` has none).
fn wants_modules(loaded: &Loaded) -> bool {
    loaded.recipe.kernel.as_ref().is_some_and(|k| k.package.is_some())
}

/// Before anything is written: each `debian` layer's set is pinned (with
/// kmod when the kernel's modules go in), and this machine can run
/// mmdebstrap. Errors carry the layer's JSON path.
pub fn check(loaded: &Loaded) -> Result<(), crate::Error> {
    let mut host = None;
    for (name, layers) in &loaded.recipe.trees {
        for (i, layer) in layers.iter().enumerate() {
            let Layer::Debian(l) = layer else { continue };
            let at = format!("trees.{name}[{i}]");
            let wrap = |source: DebianError| crate::Error::Debian { at: at.clone(), source: Box::new(source) };
            let packages = Packages::open(&loaded.base_dir).map_err(|e| wrap(e.into()))?;
            let set = packages.root_set(requested(l)).map_err(|e| wrap(e.into()))?;
            if wants_modules(loaded) && !set.iter().any(|p| p.name == "kmod") {
                return Err(wrap(DebianError::NeedsKmod { key: crate::boot::packages::root_key(requested(l)) }));
            }
            if !l.debian.enable.is_empty() && !set.iter().any(|p| p.name == "systemd") {
                return Err(wrap(DebianError::NeedsSystemd { key: crate::boot::packages::root_key(requested(l)) }));
            }
            host.get_or_insert_with(Host::probe).mode().map_err(|e| wrap(DebianError::Host(e)))?;
        }
    }
    Ok(())
}

/// The lock file in a `.debian-*` temp folder.
const LOCK: &str = ".lock";

/// Take an exclusive `flock` on `dir/.lock`; released when the file closes
/// (when the process ends, however it ends).
fn lock_folder(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::io::AsRawFd;
    let f = File::create(dir.join(LOCK))?;
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

/// Remove the `.debian-*` temp folders of builds that were killed before
/// they could remove them: those whose lock no process holds (or that
/// never got a lock file and are over a minute old). Best effort: what
/// cannot be removed is left for a later build.
fn sweep_stale(spool_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(spool_dir) else { return };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(".debian-") || !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        let stale = match std::fs::OpenOptions::new().write(true).open(p.join(LOCK)) {
            Ok(f) => {
                use std::os::unix::io::AsRawFd;
                // SAFETY: flock on an open descriptor; released when `f` closes.
                unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
            }
            Err(_) => {
                e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).is_some_and(|age| age.as_secs() > 60)
            }
        };
        if stale {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// What a `debian` layer used, for the manifest: (package name, sha256).
pub type Used = Vec<(String, String)>;

/// Build the root of a `debian` layer into `tree` (the first layer of its
/// tree, so `tree` is empty). The root tarball and the repository are
/// made in a temp folder of `spool_dir` (the output folder); the tree
/// references the tarball, which stays open, unlinked, until the image is
/// written.
pub fn apply(tree: &mut Tree, layer: &DebianLayer, loaded: &Loaded, spool_dir: &Path) -> Result<Used, DebianError> {
    let packages = Packages::open(&loaded.base_dir)?;
    let set = packages.root_set(requested(layer))?;
    let debs: Vec<(&Locked, PathBuf)> = set.iter().map(|p| Ok((*p, packages.deb(&p.name)?))).collect::<Result<_, PackageError>>()?;
    let mode = Host::probe().mode().map_err(DebianError::Host)?;

    let io = |what: String| move |source: std::io::Error| DebianError::Io { what, source };
    sweep_stale(spool_dir);
    let dir = tempfile::Builder::new()
        .prefix(".debian-")
        .tempdir_in(spool_dir)
        .map_err(io(format!("creating a temp folder in {}", spool_dir.display())))?;
    // Held until the folder is removed: a build killed before removing it
    // (SIGKILL) leaves it unlocked, and the next build sweeps it.
    let _lock = lock_folder(dir.path()).map_err(io(format!("locking {}", dir.path().display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io(format!("chmod {}", dir.path().display())))?;
    }
    if mode == Mode::Unshare {
        if let Some(d) = host::unreachable_ancestor(dir.path()) {
            return Err(DebianError::Unreachable { dir: d });
        }
    }
    let repo = dir.path().join("repo");
    repo::write(&repo, &debs, mode == Mode::Unshare)?;

    let mut hooks = Vec::new();
    if wants_modules(loaded) {
        if !set.iter().any(|p| p.name == "kmod") {
            return Err(DebianError::NeedsKmod { key: crate::boot::packages::root_key(requested(layer)) });
        }
        if let Some((release, tar)) = kernel_modules(loaded, &packages, spool_dir, dir.path())? {
            hooks.push(format!(
                "mkdir -p \"$1/usr/lib/modules\" && tar --numeric-owner -xpf {} -C \"$1/usr/lib/modules\" && chroot \"$1\" depmod {}",
                quote(&tar.to_string_lossy()),
                quote(&release)
            ));
        }
    }
    if !layer.debian.enable.is_empty() {
        if !set.iter().any(|p| p.name == "systemd") {
            return Err(DebianError::NeedsSystemd { key: crate::boot::packages::root_key(requested(layer)) });
        }
        hooks.push(enable_hook(&layer.debian.enable));
    }
    hooks.extend(layer.debian.users.iter().enumerate().map(|(i, u)| user_hook(i, u)));
    let auto = auto_installed(&set, requested(layer));
    if !auto.is_empty() {
        hooks.push(format!("chroot \"$1\" apt-mark auto {} >/dev/null", auto.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" ")));
    }
    let include: Vec<String> = set.iter().map(|p| format!("{}={}", p.name, p.version)).collect();
    let args = mmdebstrap_args(mode, &include, &hooks, &repo);

    let tar_path = dir.path().join("root.tar");
    let log_path = dir.path().join("mmdebstrap.log");
    let out = File::create(&tar_path).map_err(io(format!("creating {}", tar_path.display())))?;
    let log = File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
    let mut path = std::env::var("PATH").unwrap_or_default();
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        if !path.split(':').any(|p| p == d) {
            path = if path.is_empty() { d.to_string() } else { format!("{path}:{d}") };
        }
    }
    let status = std::process::Command::new("mmdebstrap")
        .args(&args)
        .env_clear()
        .env("PATH", path)
        .env("LC_ALL", "C.UTF-8")
        .env("TMPDIR", dir.path())
        .env("SOURCE_DATE_EPOCH", loaded.recipe.epoch().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(log)
        .status()
        .map_err(io("running mmdebstrap".into()))?;
    if !status.success() {
        let mut text = String::new();
        let _ = File::open(&log_path).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        return Err(DebianError::Mmdebstrap { status: status.to_string(), tail });
    }
    crate::tree::tar::apply_tar(tree, &tar_path, "/", spool_dir)?;
    drop(dir); // the tree holds the tarball open

    let ctx = normalise::Context { suite: packages.lock.suite.clone(), installed: set.iter().map(|p| p.name.clone()).collect() };
    normalise::normalise(tree, &ctx)?;
    Ok(set.iter().map(|p| (p.name.clone(), p.sha256.clone())).collect())
}

/// The command line: `--mode`, the exact set, the merged-/usr hook, the
/// apt and dpkg options, the customize hooks, suite `''`, the tarball to
/// stdout, the one local source.
pub fn mmdebstrap_args(mode: Mode, include: &[String], hooks: &[String], repo: &Path) -> Vec<String> {
    let mut a = vec![
        mode.arg().to_string(),
        "--variant=essential".into(),
        format!("--include={}", include.join(",")),
        format!("--hook-dir={}", host::MERGED_USR_HOOK),
        "--aptopt=Acquire::Languages \"none\"".into(),
        "--aptopt=APT::Install-Recommends \"false\"".into(),
        "--dpkgopt=force-unsafe-io".into(),
    ];
    a.extend(hooks.iter().map(|h| format!("--customize-hook={h}")));
    a.push(String::new());
    a.push("-".into());
    a.push(format!("deb [trusted=yes] copy://{} ./", repo.display()));
    a
}

/// The customize step of `debian.enable`: the root's own `systemctl
/// enable` (offline in a chroot: it only makes the `[Install]` links).
pub fn enable_hook(units: &[String]) -> String {
    format!("chroot \"$1\" systemctl enable {}", units.iter().map(|u| quote(u)).collect::<Vec<_>>().join(" "))
}

/// The customize step of `debian.users[i]`: check that its groups exist
/// (naming the field when one does not), then the root's `useradd`.
/// `useradd` takes its "last change" day from `SOURCE_DATE_EPOCH`.
pub fn user_hook(i: usize, u: &crate::recipe::layer::DebianUser) -> String {
    let mut h = String::new();
    for (j, g) in u.groups.iter().enumerate() {
        h.push_str(&format!(
            "{{ chroot \"$1\" getent group {g} >/dev/null || {{ echo {msg} >&2; exit 1; }}; }} && ",
            g = quote(g),
            msg = quote(&format!(
                "debian.users[{i}].groups[{j}]: there is no group `{g}` in this root; add the package that creates it to debian.packages, or leave the group out"
            ))
        ));
    }
    h.push_str("chroot \"$1\" useradd --create-home --user-group");
    if let Some(uid) = u.uid {
        // The user's own group (--user-group) takes the same id when free.
        h.push_str(&format!(" --uid {uid}"));
    }
    h.push_str(&format!(" --shell {}", quote(&u.shell)));
    if let Some(c) = &u.comment {
        h.push_str(&format!(" --comment {}", quote(c)));
    }
    if !u.groups.is_empty() {
        h.push_str(&format!(" --groups {}", quote(&u.groups.join(","))));
    }
    h.push_str(&format!(" -- {}", quote(&u.name)));
    h
}

/// Single-quote for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The packages apt would have marked automatically installed: the set
/// minus what is requested (the layer's packages, apt, usr-is-merged),
/// the `Priority: required` ones and the essential packages with
/// everything they depend on (installed by dpkg in mmdebstrap's essential
/// stage, before apt keeps marks). Sorted.
pub fn auto_installed(set: &[&Locked], requested: &[String]) -> Vec<String> {
    let by_name: BTreeMap<&str, &Locked> = set.iter().map(|p| (p.name.as_str(), *p)).collect();
    let mut manual: BTreeSet<&str> = requested.iter().map(String::as_str).chain(["apt", "usr-is-merged"]).collect();
    manual.extend(set.iter().filter(|p| p.priority.as_deref() == Some("required")).map(|p| p.name.as_str()));
    let mut stack: Vec<&str> = set.iter().filter(|p| p.essential).map(|p| p.name.as_str()).collect();
    let mut essential = BTreeSet::new();
    while let Some(n) = stack.pop() {
        if essential.insert(n) {
            if let Some(p) = by_name.get(n) {
                stack.extend(p.depends.iter().map(String::as_str).filter(|d| by_name.contains_key(d)));
            }
        }
    }
    manual.extend(essential);
    let auto: BTreeSet<&str> = set.iter().map(|p| p.name.as_str()).filter(|n| !manual.contains(n)).collect();
    auto.into_iter().map(str::to_string).collect()
}

/// The kernel package's modules as a tar of `RELEASE/…` in `dir`, for the
/// customize step; `None` when the kernel package has no modules.
fn kernel_modules(loaded: &Loaded, packages: &Packages, spool: &Path, dir: &Path) -> Result<Option<(String, PathBuf)>, DebianError> {
    let spec = loaded.recipe.kernel.as_ref().expect("caller checked");
    let name = spec.package.as_deref().expect("caller checked");
    let debs = if is_package_name(name) {
        crate::boot::kernel::package_debs(packages, name).map_err(|e| DebianError::Kernel(e.to_string()))?
    } else {
        vec![loaded.base_dir.join(name)]
    };
    for deb in debs {
        let mut t = Tree::new(loaded.recipe.epoch());
        crate::tree::tar::apply_deb(&mut t, &deb, "/", spool)?;
        let Some(modules) = t.find(b"/lib/modules").or_else(|| t.find(b"/usr/lib/modules")) else { continue };
        let Kind::Dir(releases) = &t.inode(modules).kind else { continue };
        let Some((release, &id)) = releases.iter().next() else { continue };
        let release = String::from_utf8_lossy(release).into_owned();
        let path = dir.join("modules.tar");
        let f = File::create(&path).map_err(|source| DebianError::Io { what: format!("creating {}", path.display()), source })?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(f));
        write_subtree(&t, id, &release, &mut b)
            .map_err(|source| DebianError::Io { what: format!("writing {}", path.display()), source })?;
        b.into_inner()
            .and_then(|mut w| std::io::Write::flush(&mut w))
            .map_err(|source| DebianError::Io { what: format!("writing {}", path.display()), source })?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|source| DebianError::Io { what: format!("chmod {}", path.display()), source })?;
        return Ok(Some((release, path)));
    }
    Ok(None)
}

/// Write the subtree at `id` as `prefix/…` entries (directories, files,
/// symlinks; root-owned, modes and mtimes kept).
fn write_subtree<W: std::io::Write>(t: &Tree, id: usize, prefix: &str, b: &mut tar::Builder<W>) -> std::io::Result<()> {
    let inode = t.inode(id);
    let mut h = tar::Header::new_gnu();
    h.set_mode(inode.meta.mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(inode.meta.mtime.max(0) as u64);
    match &inode.kind {
        Kind::Dir(children) => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, format!("{prefix}/"), std::io::empty())?;
            for (name, &child) in children {
                write_subtree(t, child, &format!("{prefix}/{}", String::from_utf8_lossy(name)), b)?;
            }
        }
        Kind::File(c) => {
            let mut data = vec![0u8; c.len() as usize];
            c.open()?.read_exact_at(&mut data, 0)?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, prefix, &data[..])?;
        }
        Kind::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, prefix, String::from_utf8_lossy(target).as_ref())?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_folders_of_killed_builds_are_swept_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let (live, dead, other) = (d.path().join(".debian-live"), d.path().join(".debian-dead"), d.path().join("keep"));
        for p in [&live, &dead, &other] {
            std::fs::create_dir(p).unwrap();
            std::fs::write(p.join("root.tar"), b"x").unwrap();
        }
        let held = lock_folder(&live).unwrap();
        drop(lock_folder(&dead).unwrap());
        // A fresh folder without a lock file (its build is just starting).
        let young = d.path().join(".debian-young");
        std::fs::create_dir(&young).unwrap();
        sweep_stale(d.path());
        assert!(live.join("root.tar").exists(), "a folder whose lock is held was removed");
        assert!(!dead.exists(), "a folder whose lock nobody holds was kept");
        assert!(other.exists() && young.exists());
        drop(held);
        sweep_stale(d.path());
        assert!(!live.exists());
    }

    fn locked(name: &str, priority: &str, essential: bool, depends: &[&str]) -> Locked {
        Locked {
            name: name.into(),
            version: "1".into(),
            architecture: "amd64".into(),
            sha256: String::new(),
            depends: depends.iter().map(|d| d.to_string()).collect(),
            filename: None,
            priority: Some(priority.into()),
            essential,
        }
    }

    #[test]
    fn auto_marks_leave_requested_required_and_essential_closure_manual() {
        let pkgs = [
            locked("base-files", "required", true, &[]),
            locked("coreutils", "required", true, &["libacl1"]),
            locked("libacl1", "optional", false, &[]),
            locked("apt", "required", false, &["libapt-pkg6.0"]),
            locked("libapt-pkg6.0", "optional", false, &[]),
            locked("usr-is-merged", "optional", false, &[]),
            locked("openssh-server", "optional", false, &["openssh-client", "libwrap0"]),
            locked("openssh-client", "standard", false, &[]),
            locked("libwrap0", "optional", false, &[]),
        ];
        let set: Vec<&Locked> = pkgs.iter().collect();
        assert_eq!(auto_installed(&set, &["openssh-server".into()]), ["libapt-pkg6.0", "libwrap0", "openssh-client"]);
    }

    #[test]
    fn the_command_installs_exactly_the_set_from_the_local_repo() {
        let a =
            mmdebstrap_args(Mode::Unshare, &["a=1".into(), "b=2:3".into()], &["chroot \"$1\" true".into()], Path::new("/o/.debian-x/repo"));
        assert_eq!(
            a,
            [
                "--mode=unshare",
                "--variant=essential",
                "--include=a=1,b=2:3",
                "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                "--aptopt=Acquire::Languages \"none\"",
                "--aptopt=APT::Install-Recommends \"false\"",
                "--dpkgopt=force-unsafe-io",
                "--customize-hook=chroot \"$1\" true",
                "",
                "-",
                "deb [trusted=yes] copy:///o/.debian-x/repo ./",
            ]
        );
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn enable_and_user_steps_run_the_roots_own_tools() {
        assert_eq!(
            enable_hook(&["systemd-networkd.service".into(), "getty@ttyS0.service".into()]),
            "chroot \"$1\" systemctl enable 'systemd-networkd.service' 'getty@ttyS0.service'"
        );
        let u: crate::recipe::layer::DebianUser =
            serde_json::from_value(serde_json::json!({"name": "core", "uid": 1000, "groups": ["sudo", "docker"], "comment": "it's core"}))
                .unwrap();
        let h = user_hook(2, &u);
        assert!(h.starts_with("{ chroot \"$1\" getent group 'sudo' >/dev/null || { echo 'debian.users[2].groups[0]: there is no group `sudo` in this root;"), "{h}");
        assert!(h.contains("getent group 'docker'") && h.contains("debian.users[2].groups[1]: there is no group `docker`"), "{h}");
        assert!(
            h.ends_with("chroot \"$1\" useradd --create-home --user-group --uid 1000 --shell '/bin/bash' --comment 'it'\\''s core' --groups 'sudo,docker' -- 'core'"),
            "{h}"
        );
        let u: crate::recipe::layer::DebianUser = serde_json::from_value(serde_json::json!({"name": "svc"})).unwrap();
        assert_eq!(user_hook(0, &u), "chroot \"$1\" useradd --create-home --user-group --shell '/bin/bash' -- 'svc'");
    }
}
