//! Pinned means pinned: `build-image fetch` takes each locked version from
//! the cache, apt's archive or a snapshot archive, with exactly the locked
//! sha256, or fails naming the package, the versions and the fix; a build
//! never uses other bytes than the lock names. The snapshot archive is a
//! small HTTP server on 127.0.0.1 that this test runs, serving a package
//! the test makes with `dpkg-deb`.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

const PKG: &str = "bi-strict-test";
const VERSION: &str = "1.0-1";
const POOL: &str = "pool/main/b/bi-strict-test/bi-strict-test_1.0-1_all.deb";
const FILE: &str = "bi-strict-test_1.0-1_all.deb";

/// A Debian archive root served over HTTP/1.0 on 127.0.0.1: GET of a path
/// under `root` answers 200 with the file, or 404. Counts requests.
struct Archive {
    url: String,
    requests: Arc<AtomicUsize>,
}

fn serve(root: PathBuf) -> Archive {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            // Skip the headers.
            let mut h = String::new();
            while r.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            let mut s = stream;
            match (!path.contains("..")).then(|| fs::read(root.join(&path))).and_then(Result::ok) {
                Some(body) => {
                    let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(&body);
                }
                None => {
                    let _ = write!(s, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    Archive { url, requests }
}

/// A small package made with dpkg-deb: its path and sha256.
fn make_deb(dir: &Path, content: &str) -> (PathBuf, String) {
    let root = dir.join("pkg");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::create_dir_all(root.join("usr/share/bi-strict-test")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {PKG}\nVersion: {VERSION}\nArchitecture: all\nMaintainer: tests <t@example.invalid>\nDescription: strict lock test\n"
        ),
    )
    .unwrap();
    fs::write(root.join("usr/share/bi-strict-test/hello"), content).unwrap();
    let deb = dir.join(FILE);
    let (ok, out) = tool("dpkg-deb", &["--root-owner-group", "-Zgzip", "-b", root.to_str().unwrap(), deb.to_str().unwrap()]);
    assert!(ok, "dpkg-deb: {out}");
    let sha = sha256(&deb);
    (deb, sha)
}

fn write_lock(path: &Path, packages: serde_json::Value) {
    fs::write(path, serde_json::json!({ "suite": "bookworm", "packages": packages }).to_string()).unwrap();
}

fn fetch(dir: &Path, lock: &Path, cache: &Path, snapshot: Option<&str>) -> Output {
    let mut c = Command::new(bin());
    c.args(["fetch", "--lock"]).arg(lock).arg("--cache").arg(cache).current_dir(dir);
    if let Some(s) = snapshot {
        c.args(["--snapshot", s]);
    }
    // No `apt-get update` from inside the tests: other tests use apt at the same time.
    c.env_remove("BUILD_IMAGE_LOCK").env_remove("BUILD_IMAGE_SNAPSHOT").env("BUILD_IMAGE_NO_APT_UPDATE", "1").output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Files in the cache's debs/ folder, hidden temp folders included.
fn cached(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(cache.join("debs"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn fetch_takes_exactly_the_locked_bytes_from_cache_archive_or_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let archive_root = w.join("archive");
    fs::create_dir_all(archive_root.join(POOL).parent().unwrap()).unwrap();
    let (deb, sha) = make_deb(w, "one\n");
    fs::copy(&deb, archive_root.join(POOL)).unwrap();
    let archive = serve(archive_root.clone());
    let lock = w.join("packages.lock");
    write_lock(&lock, serde_json::json!([{ "name": PKG, "version": VERSION, "architecture": "all", "sha256": sha, "filename": POOL }]));
    let cache = w.join("cache");

    // Not in apt's archive, in the snapshot: fetched, verified, in the cache.
    let o = fetch(w, &lock, &cache, Some(&archive.url));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(sha256(&cache.join("debs").join(FILE)), sha);
    assert!(text(&o).contains(&format!("{}{POOL}", archive.url)), "the source is named: {}", text(&o));
    assert_eq!(cached(&cache), [FILE], "nothing else is left in the cache");

    // In the cache now: no request at all, even with the archive emptied.
    fs::remove_file(archive_root.join(POOL)).unwrap();
    let before = archive.requests.load(Ordering::SeqCst);
    let o = fetch(w, &lock, &cache, Some(&archive.url));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(archive.requests.load(Ordering::SeqCst), before, "a cached package was downloaded again");

    // Nowhere: the error names the package, its version, each source and
    // the fix; nothing lands in the cache and the exit status is non-zero.
    let empty = w.join("cache2");
    let o = fetch(w, &lock, &empty, Some(&archive.url));
    let e = text(&o);
    assert!(!o.status.success(), "fetched a package that no source has:\n{e}");
    assert!(e.contains(&format!("{PKG} {VERSION}")) && e.contains("apt does not know the package"), "{e}");
    assert!(e.contains("404") && e.contains("build-image fetch --update-lock"), "{e}");
    assert!(cached(&empty).is_empty(), "left in the cache: {:?}", cached(&empty));
    let o = fetch(w, &lock, &empty, None);
    assert!(!o.status.success() && text(&o).contains("no snapshot archive configured"), "{}", text(&o));

    // Other bytes under the same name: refused, named, not cached.
    let (other, other_sha) = make_deb(w, "two\n");
    assert_ne!(other_sha, sha);
    fs::copy(&other, archive_root.join(POOL)).unwrap();
    let o = fetch(w, &lock, &empty, Some(&archive.url));
    let e = text(&o);
    assert!(!o.status.success(), "took other bytes than the lock names:\n{e}");
    assert!(e.contains(&other_sha) && e.contains(&format!("not the locked {sha}")), "{e}");
    assert!(cached(&empty).is_empty(), "left in the cache: {:?}", cached(&empty));

    // A build uses exactly the locked bytes: with the cached file changed,
    // it fails naming the package and the fix, and writes no image.
    let mut bytes = fs::read(cache.join("debs").join(FILE)).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(cache.join("debs").join(FILE), &bytes).unwrap();
    let recipe = serde_json::json!({
        "name": "strict",
        "trees": { "root": [{ "deb": PKG }] },
        "disk": { "partitions": [{ "label": "root", "type": "linux", "size": "16MiB", "filesystem": "ext4", "tree": "root" }] },
        "outputs": ["raw"]
    });
    fs::write(w.join("strict.json"), recipe.to_string()).unwrap();
    let o = Command::new(bin())
        .args(["-q", "build", "strict.json", "--out", "out", "--lock"])
        .arg(&lock)
        .arg("--cache")
        .arg(&cache)
        .current_dir(w)
        .env_remove("BUILD_IMAGE_LOCK")
        .output()
        .unwrap();
    let e = text(&o);
    assert!(!o.status.success(), "built with bytes the lock does not name:\n{e}");
    assert!(e.contains(&format!("`{PKG}` {VERSION} is not fetched")) && e.contains("build-image fetch"), "{e}");
    assert!(!w.join("out/strict.raw").exists(), "a failed build left an image");
}

#[test]
fn a_version_the_archive_no_longer_has_names_both_versions() {
    // A real package, pinned at a version Debian never had.
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let (ok, policy) = tool("apt-cache", &["policy", "busybox-static"]);
    assert!(ok, "{policy}");
    let current = policy.lines().find_map(|l| l.trim().strip_prefix("Candidate: ")).expect("apt knows busybox-static").to_string();
    let gone = "1:0.0-0gone";
    let lock = w.join("packages.lock");
    write_lock(
        &lock,
        serde_json::json!([{ "name": "busybox-static", "version": gone, "architecture": "amd64", "sha256": "00".repeat(32) }]),
    );
    let o = fetch(w, &lock, &w.join("cache"), None);
    let e = text(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains(&format!("busybox-static {gone}")) && e.contains(&format!("which has {current} now")), "{e}");
    assert!(e.contains("build-image fetch --update-lock"), "{e}");
}

#[test]
fn fetch_without_a_lock_creates_one_and_the_lock_is_found_above_the_recipe() {
    // `fetch --add` in a folder with no lock pins the defaults and the
    // added package into ./packages.lock; a recipe in a subfolder finds it.
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let o = Command::new(bin())
        .args(["fetch", "--add", "busybox-static", "--cache"])
        .arg(cache())
        .current_dir(w)
        .env_remove("BUILD_IMAGE_LOCK")
        .env("BUILD_IMAGE_NO_APT_UPDATE", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(w.join("packages.lock")).unwrap()).unwrap();
    let names: Vec<&str> = lock["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for n in ["linux-image-cloud-amd64", "systemd-boot-efi", "grub-pc-bin", "busybox-static"] {
        assert!(names.contains(&n), "{n} not pinned: {names:?}");
    }
    assert!(lock["packages"].as_array().unwrap().iter().all(|p| p["filename"].as_str().is_some_and(|f| f.starts_with("pool/"))), "{lock}");
    fs::create_dir_all(w.join("sub/deeper")).unwrap();
    let recipe = serde_json::json!({
        "name": "found",
        "trees": { "root": [{ "deb": "busybox-static" }] },
        "disk": { "partitions": [{ "label": "root", "type": "linux", "size": "16MiB", "filesystem": "ext4", "tree": "root" }] },
        "outputs": ["raw"]
    });
    fs::write(w.join("sub/deeper/r.json"), recipe.to_string()).unwrap();
    let o = Command::new(bin())
        .args(["-q", "build", "sub/deeper/r.json", "--out", "out", "--cache"])
        .arg(cache())
        .current_dir(w)
        .env_remove("BUILD_IMAGE_LOCK")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let m: serde_json::Value = serde_json::from_slice(&fs::read(w.join("out/found.manifest.json")).unwrap()).unwrap();
    let bb = m["inputs"].as_array().unwrap().iter().find(|i| i["path"] == "busybox-static").expect("busybox-static is an input");
    let pinned = lock["packages"].as_array().unwrap().iter().find(|p| p["name"] == "busybox-static").unwrap();
    assert_eq!(bb["sha256"], pinned["sha256"]);
}
