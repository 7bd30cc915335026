//! Debian roots (`debian` layers): `recipes/debian-minimal.json` pinned
//! into a copy of the tests' lock with `fetch --add-root`, built by
//! mmdebstrap from the local cache only, reproducibly (from another
//! folder under another TZ and umask, in a network namespace without a
//! route), read back from the ext4 image; and the errors for a set that is not pinned and for a machine
//! without mmdebstrap or a subordinate id range. A Debian root booted and
//! driven over SSH, and two builds in one folder: `coreos_node.rs`.
//!
//! The builds run as root (CI), where mmdebstrap uses `--mode=root`; the
//! read-back loop-mounts the image. As another user the tests that need
//! root say so and pass. Uses apt's package lists as they are
//! (`BUILD_IMAGE_NO_APT_UPDATE=1`) and the tests' package cache.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use common::*;

const RECIPE: &str = "debian-minimal.json";

/// The example recipe, as JSON.
fn recipe() -> serde_json::Value {
    serde_json::from_slice(&fs::read(root().join("recipes").join(RECIPE)).unwrap()).unwrap()
}

/// The recipe's `debian` packages.
fn requested() -> Vec<String> {
    recipe()["trees"]["root"][0]["debian"]["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

/// A temp folder inside the project (its `target/` has the guest agent,
/// which the recipe's kernel needs), world-readable.
fn project_dir() -> tempfile::TempDir {
    let base = root().join("out/test-recipes");
    fs::create_dir_all(&base).unwrap();
    let d = tempfile::tempdir_in(&base).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// `build-image` without the lock of `./build.sh test` in the
/// environment: the project's own `packages.lock` is the one.
fn bi(cwd: &Path) -> Command {
    let mut c = cmd();
    c.current_dir(cwd).env_remove("BUILD_IMAGE_LOCK");
    c
}

struct Built {
    /// The pinned project (lock + recipe) and the first build's outputs;
    /// removed when the test process exits ([`remove_at_exit`]).
    dir: PathBuf,
    raw: PathBuf,
    sha256: String,
    manifest: serde_json::Value,
    /// The root set as the lock pins it.
    set: BTreeSet<String>,
}

/// Pin the recipe's set into a copy of the tests' lock and build it once
/// (shared by the tests of this file).
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = remove_at_exit(project_dir().keep());
        let p = dir.as_path();
        fs::copy(lock_path(), p.join("packages.lock")).unwrap();
        fs::write(p.join(RECIPE), serde_json::to_string_pretty(&recipe()).unwrap()).unwrap();
        let key = requested().join(",");
        let t = Instant::now();
        let o = bi(p)
            .args(["-q", "fetch", "--add-root", &key, "--project", "."])
            .arg("--cache")
            .arg(cache())
            .env("BUILD_IMAGE_NO_APT_UPDATE", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "fetch --add-root {key}:\n{}", String::from_utf8_lossy(&o.stderr));
        eprintln!("debian_root: fetch --add-root {key}: {:.1} s", t.elapsed().as_secs_f64());
        let lock: serde_json::Value = serde_json::from_slice(&fs::read(p.join("packages.lock")).unwrap()).unwrap();
        let sorted: BTreeSet<String> = requested().into_iter().collect();
        let lock_key = sorted.into_iter().collect::<Vec<_>>().join(",");
        let set: BTreeSet<String> = lock["roots"][&lock_key]
            .as_array()
            .unwrap_or_else(|| panic!("no roots[{lock_key}] in the lock"))
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        for n in requested() {
            assert!(set.contains(&n), "{n} is not in its own root set");
        }
        for n in ["apt", "base-files", "dpkg", "usr-is-merged", "openssh-client"] {
            assert!(set.contains(n), "{n} is not in the root set {set:?}");
        }
        let (raw, sha256, manifest) = build(p, "out-a", None);
        Built { dir, raw, sha256, manifest, set }
    })
}

/// Build the recipe in `dir` into `dir/out`, optionally through a shell
/// prefix (`unshare -n sh -c '…; exec "$@"' sh`); returns the raw image,
/// its sha256 and the manifest. Prints the time it took.
fn build(dir: &Path, out: &str, wrap: Option<&[&str]>) -> (PathBuf, String, serde_json::Value) {
    let args = ["-q", "build", RECIPE, "--out", out];
    let mut c = match wrap {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]).arg(bin()).args(args).current_dir(dir).env("BUILD_IMAGE_CACHE", cache()).env_remove("BUILD_IMAGE_LOCK");
            c
        }
        None => {
            let mut c = bi(dir);
            c.args(args);
            c
        }
    };
    let t = Instant::now();
    let o = c.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build in {} ({wrap:?}) failed:\n{err}", dir.display());
    let raw = dir.join(out).join("debian-minimal.raw");
    let sha = sha256(&raw);
    eprintln!("debian_root: built {} in {secs:.1} s: sha256 {sha}", raw.display());
    let manifest = serde_json::from_slice(&fs::read(dir.join(out).join("debian-minimal.manifest.json")).unwrap()).unwrap();
    (raw, sha, manifest)
}

/// The root partition of `raw`: (offset, size).
fn root_partition(raw: &Path) -> (u64, u64) {
    let parts = sfdisk(raw);
    let (_, _, off, size) = parts.iter().find(|p| p.0 == "root").expect("a root partition");
    (*off, *size)
}

/// A read-only loop mount, unmounted on drop.
struct Mount(tempfile::TempDir);

impl Mount {
    fn new(image: &Path, offset: u64, rw: bool) -> Mount {
        let d = tempfile::tempdir().unwrap();
        let opts = format!("{},loop,offset={offset}", if rw { "rw" } else { "ro" });
        let o = Command::new("mount").args(["-t", "ext4", "-o", &opts]).arg(image).arg(d.path()).output().unwrap();
        assert!(o.status.success(), "mount -o {opts}: {}", String::from_utf8_lossy(&o.stderr));
        Mount(d)
    }
    fn path(&self, p: &str) -> PathBuf {
        self.0.path().join(p.trim_start_matches('/'))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// `/var/lib/dpkg/status`: package → Status.
fn dpkg_status(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |k: &str| stanza.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        if let (Some(p), Some(s)) = (field("Package:"), field("Status:")) {
            out.insert(p, s);
        }
    }
    out
}

/// Symlinks under `etc/systemd/system` of a mounted root, with targets.
fn enabled_links(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.join("etc/systemd/system")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(format!("{rel} -> {}", fs::read_link(e.path()).unwrap().display()));
            } else if t.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn builds_reproducibly_offline_and_installs_the_pinned_set() {
    if !is_root() {
        eprintln!("debian_root: skipped: needs root (mmdebstrap --mode=root in a network namespace, loop mounts)");
        return;
    }
    let b = built();
    let p = b.dir.as_path();
    // (Twice in one folder gives the same bytes: tests/tests/coreos_node.rs.)
    // From another folder, other TZ and umask, without a network: the same.
    let other = project_dir();
    fs::copy(p.join("packages.lock"), other.path().join("packages.lock")).unwrap();
    fs::copy(p.join(RECIPE), other.path().join(RECIPE)).unwrap();
    let script = "cat /proc/net/route > route.txt; cat /proc/net/dev > dev.txt; umask 027; export TZ=Pacific/Chatham; exec \"$@\"";
    let (_, offline, _) = build(other.path(), "out-c", Some(&["unshare", "-n", "sh", "-c", script, "sh"]));
    let route = fs::read_to_string(other.path().join("route.txt")).unwrap();
    let dev = fs::read_to_string(other.path().join("dev.txt")).unwrap();
    assert!(route.lines().skip(1).all(|l| l.trim().is_empty()), "the build's network namespace has routes: {route}");
    let links: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(links, ["lo"], "the build's network namespace has links: {dev}");
    assert_eq!(offline, b.sha256, "the build from another folder, TZ, umask, offline, differs");

    // The manifest lists every package of the set as an input of the layer.
    let inputs: BTreeSet<String> = b.manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["layer"] == "trees.root[0]" && i["kind"] == "deb")
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(inputs, b.set, "manifest inputs of trees.root[0]");

    // Read the root back.
    let (off, size) = root_partition(&b.raw);
    let part = p.join("root.ext4");
    extract(&b.raw, off, size, &part);
    let (ok, out) = tool("e2fsck", &["-fn", part.to_str().unwrap()]);
    assert!(ok, "e2fsck -fn: {out}");
    let m = Mount::new(&b.raw, off, false);
    assert_eq!(fs::read_to_string(m.path("/etc/machine-id")).unwrap(), "uninitialized\n");
    let keys: Vec<String> = fs::read_dir(m.path("/etc/ssh"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(keys.is_empty(), "SSH host keys in the image: {keys:?}");
    assert!(m.path("/etc/ssh/sshd_config").is_file());
    // dpkg: every package of the locked set, and no other, installed.
    let status = dpkg_status(&fs::read_to_string(m.path("/var/lib/dpkg/status")).unwrap());
    let not_ok: Vec<String> =
        b.set.iter().filter(|n| status.get(*n).map(String::as_str) != Some("install ok installed")).cloned().collect();
    assert!(not_ok.is_empty(), "not `install ok installed`: {not_ok:?}");
    let extra: Vec<&String> = status.keys().filter(|n| !b.set.contains(*n)).collect();
    assert!(extra.is_empty(), "installed but not in the locked set: {extra:?}");
    // What the maintainer scripts made.
    let passwd = fs::read_to_string(m.path("/etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("sshd:") && l.ends_with(":/usr/sbin/nologin")), "{passwd}");
    assert!(passwd.lines().any(|l| l.starts_with("_apt:x:42:")), "{passwd}");
    let group = fs::read_to_string(m.path("/etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("_ssh:")), "{group}");
    assert!(fs::symlink_metadata(m.path("/bin")).unwrap().is_symlink(), "/bin is not merged into /usr");
    // setuid sudo, setgid ssh-agent (numeric owners kept).
    {
        use std::os::unix::fs::MetadataExt;
        let sudo = fs::metadata(m.path("/usr/bin/sudo")).unwrap();
        assert_eq!((sudo.mode() & 0o7777, sudo.uid()), (0o4755, 0));
        let agent = fs::metadata(m.path("/usr/bin/ssh-agent")).unwrap();
        let ssh_gid: u32 = group.lines().find(|l| l.starts_with("_ssh:")).unwrap().split(':').nth(2).unwrap().parse().unwrap();
        assert_eq!((agent.mode() & 0o7777, agent.gid()), (0o2755, ssh_gid));
    }
    // The journal folder's ACL (group adm) survived tar → tree → ext4.
    let acl = getxattr(&m.path("/var/log/journal"), "system.posix_acl_access").expect("an ACL on /var/log/journal");
    assert!(acl[4..].chunks(8).any(|e| e[0] == 8 && u32::from_le_bytes(e[4..8].try_into().unwrap()) == 4), "no group:adm entry: {acl:?}");
    // apt: Debian's sources, no build folder, no lists; auto marks.
    assert!(!m.path("/etc/apt/sources.list").exists());
    let sources = fs::read_to_string(m.path("/etc/apt/sources.list.d/debian.sources")).unwrap();
    assert!(sources.contains("URIs: http://deb.debian.org/debian\n"), "{sources}");
    let lists: BTreeSet<String> =
        fs::read_dir(m.path("/var/lib/apt/lists")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(lists, ["lock", "partial"].iter().map(|s| s.to_string()).collect());
    let states = fs::read_to_string(m.path("/var/lib/apt/extended_states")).unwrap();
    assert!(states.contains("Package: openssh-client\nArchitecture: amd64\nAuto-Installed: 1"), "{states}");
    assert!(!states.contains("Package: openssh-server\n"), "openssh-server was asked for: not automatic\n{states}");
    // The kernel's modules with depmod's indexes, for the kernel in the image.
    let release = b.manifest["boot"]["kernel_release"].as_str().unwrap();
    let dep = fs::read_to_string(m.path(&format!("/usr/lib/modules/{release}/modules.dep")))
        .unwrap_or_else(|e| panic!("/usr/lib/modules/{release}/modules.dep (depmod's index for the image's kernel): {e}"));
    assert!(dep.lines().any(|l| l.starts_with("kernel/fs/overlayfs/overlay.ko:")), "overlay is not in modules.dep");
    assert!(m.path(&format!("/usr/lib/modules/{release}/modules.alias.bin")).is_file());
    // First boot: host keys made by a unit, enabled; presets keep the units.
    assert!(m.path("/etc/systemd/system/ssh-hostkeys.service").is_file());
    assert_eq!(
        fs::read_link(m.path("/etc/systemd/system/multi-user.target.wants/ssh-hostkeys.service")).unwrap(),
        Path::new("/etc/systemd/system/ssh-hostkeys.service")
    );
    for gone in
        ["/var/lib/dbus/machine-id", "/var/lib/systemd/random-seed", "/etc/resolv.conf", "/etc/passwd-", "/var/cache/apt/pkgcache.bin"]
    {
        assert!(fs::symlink_metadata(m.path(gone)).is_err(), "{gone} is in the image");
    }
    drop(m);
    // What systemd's first boot does (preset-all, enable-only, the same
    // function PID 1 calls), by the image's own systemctl on a writable
    // copy, changes nothing.
    let rw = Mount::new(&part, 0, true);
    let before = enabled_links(rw.0.path());
    let o = Command::new("chroot").arg(rw.0.path()).args(["systemctl", "preset-all", "--preset-mode=enable-only"]).output().unwrap();
    let after = enabled_links(rw.0.path());
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "first-boot preset-all would enable units: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(before.iter().any(|l| l.starts_with("etc/systemd/system/multi-user.target.wants/ssh.service ->")), "{before:?}");
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

#[test]
fn a_set_that_is_not_pinned_names_the_layer_and_the_fetch_command_and_writes_nothing() {
    let d = project_dir();
    fs::copy(lock_path(), d.path().join("packages.lock")).unwrap();
    let r = serde_json::json!({
        "name": "unpinned",
        "trees": { "root": [{ "debian": { "packages": ["sudo", "openssh-server", "sudo"] } }] },
        "disk": { "partitions": [{ "label": "root", "type": "linux", "size": "auto", "filesystem": "ext4", "tree": "root" }] }
    });
    fs::write(d.path().join("r.json"), r.to_string()).unwrap();
    let o = bi(d.path()).args(["build", "r.json", "--out", "out"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("error: trees.root[0]"), "{err}");
    assert!(err.contains("[openssh-server, sudo] is not pinned in"), "{err}");
    assert!(err.contains("run `build-image fetch --add-root openssh-server,sudo`"), "{err}");
    assert!(!d.path().join("out").exists(), "a failed build made its output folder");
}

/// A lock whose roots name one locked package, so the set check passes
/// without fetching anything: what follows is the machine check.
fn pinned_stub(d: &Path) {
    let mut lock: serde_json::Value = serde_json::from_slice(&fs::read(lock_path()).unwrap()).unwrap();
    lock["roots"] = serde_json::json!({ "busybox-static": ["busybox-static"] });
    fs::write(d.join("packages.lock"), serde_json::to_string_pretty(&lock).unwrap()).unwrap();
    let r = serde_json::json!({
        "name": "stub",
        "trees": { "root": [{ "debian": { "packages": ["busybox-static"] } }] },
        "disk": { "partitions": [{ "label": "root", "type": "linux", "size": "64MiB", "filesystem": "ext4", "tree": "root" }] }
    });
    fs::write(d.join("r.json"), r.to_string()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["packages.lock", "r.json"] {
        fs::set_permissions(d.join(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[test]
fn without_mmdebstrap_or_a_subuid_range_one_error_says_what_to_install() {
    let d = project_dir();
    pinned_stub(d.path());
    // No mmdebstrap on PATH.
    let o = bi(d.path()).args(["build", "r.json", "--out", "out"]).env("PATH", "/nonexistent").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("error: trees.root[0]") && err.contains("mmdebstrap (`apt-get install mmdebstrap`)"), "{err}");
    assert!(!d.path().join("out").exists());
    // As a user without a subordinate id range (nobody), where root can switch.
    if is_root() {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(["build", "r.json", "--out", "out"])
            .current_dir(d.path())
            .env("BUILD_IMAGE_CACHE", cache())
            .env_remove("BUILD_IMAGE_LOCK")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains("mmdebstrap --mode=unshare, which needs:"), "{err}");
        assert!(err.contains("in /etc/subuid and /etc/subgid (a line `nobody:100000:65536` in each"), "{err}");
        assert!(!d.path().join("out").exists());
    }
}

/// `fetch --update-lock` resolves a recorded root set anew, jointly with
/// Debian's base: a set recorded as `sudo` alone comes back complete.
#[test]
fn update_lock_resolves_root_sets_again() {
    let d = project_dir();
    let mut lock: serde_json::Value = serde_json::from_slice(&fs::read(lock_path()).unwrap()).unwrap();
    let sudo = serde_json::json!({ "name": "sudo", "version": "0", "architecture": "amd64", "sha256": "00" });
    lock["packages"].as_array_mut().unwrap().push(sudo);
    lock["roots"] = serde_json::json!({ "sudo": ["sudo"] });
    fs::write(d.path().join("packages.lock"), serde_json::to_string_pretty(&lock).unwrap()).unwrap();
    let o = bi(d.path())
        .args(["-q", "fetch", "--update-lock", "--project", "."])
        .arg("--cache")
        .arg(cache())
        .env("BUILD_IMAGE_NO_APT_UPDATE", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "fetch --update-lock:\n{}", String::from_utf8_lossy(&o.stderr));
    let after: serde_json::Value = serde_json::from_slice(&fs::read(d.path().join("packages.lock")).unwrap()).unwrap();
    let set: Vec<&str> = after["roots"]["sudo"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    for n in ["sudo", "apt", "base-files", "dpkg", "libc6", "usr-is-merged"] {
        assert!(set.contains(&n), "{n} not in the re-resolved set {set:?}");
    }
    let mut sorted = set.clone();
    sorted.sort();
    assert_eq!(set, sorted, "a root set is kept sorted");
    let pkgs = after["packages"].as_array().unwrap();
    let entry = |n: &str| pkgs.iter().find(|p| p["name"] == n).unwrap_or_else(|| panic!("{n} is not locked"));
    assert_ne!(entry("sudo")["version"], "0", "sudo was not re-pinned");
    assert_eq!(entry("base-files")["essential"], true);
    assert_eq!(entry("base-files")["priority"], "required");
    for n in &set {
        entry(n);
    }
}
