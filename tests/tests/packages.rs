//! Pinned packages with their dependencies: `build-image fetch --add` pins
//! a package's closure as apt resolves it, `--update-lock` keeps what was
//! added, and a `deb` layer whose locked dependencies are missing fails
//! with the fix. Runs apt-get/apt-cache against the host's package lists
//! (`apt-get update` done) and reuses the project's fetched `.deb` files
//! (`./build.sh fetch`), so nothing is downloaded unless Debian moved on.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// The packages the builder pins by default (`DEFAULT_PACKAGES`; the
/// kernel meta package brings its versioned package too).
const DEFAULTS: [&str; 4] = ["linux-image-cloud-amd64", "systemd-boot-efi", "grub-pc-bin", "busybox-static"];

fn lock_of(path: &Path) -> BTreeMap<String, serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    v["packages"].as_array().unwrap().iter().map(|p| (p["name"].as_str().unwrap().to_string(), p.clone())).collect()
}

fn project_lock() -> serde_json::Value {
    serde_json::from_slice(&fs::read(lock_path()).unwrap()).unwrap()
}

/// A project folder with `lock` and a package cache holding links to the
/// project's fetched debs.
fn project(dir: &Path, lock: &serde_json::Value) {
    fs::create_dir_all(dir.join("kernel")).unwrap();
    fs::write(dir.join("kernel/packages.lock"), serde_json::to_string_pretty(lock).unwrap()).unwrap();
    let debs = dir.join("out/cache/debs");
    fs::create_dir_all(&debs).unwrap();
    for e in fs::read_dir(cache().join("debs")).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".deb") {
            let to = debs.join(e.file_name());
            if fs::hard_link(e.path(), &to).is_err() {
                fs::copy(e.path(), &to).unwrap();
            }
        }
    }
}

fn fetch(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(bin())
        .arg("fetch")
        .args(args)
        .arg("--project")
        .arg(dir)
        .arg("--cache")
        .arg(dir.join("out/cache"))
        .env_remove("BUILD_IMAGE_LOCK")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "fetch {args:?} failed:\n{err}");
    err
}

/// Names reachable from `name` through `depends`.
fn closure(lock: &BTreeMap<String, serde_json::Value>, name: &str) -> Vec<String> {
    let mut seen = vec![name.to_string()];
    let mut i = 0;
    while i < seen.len() {
        let p = lock.get(&seen[i]).unwrap_or_else(|| panic!("{} is depended on but not locked", seen[i]));
        for d in p["depends"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let d = d.as_str().unwrap().to_string();
            if !seen.contains(&d) {
                seen.push(d);
            }
        }
        i += 1;
    }
    seen
}

#[test]
fn fetch_add_pins_the_closure_and_update_lock_keeps_it() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    // The project's lock without what `--add nginx-light` added.
    let mut lock = project_lock();
    let kernel_dep: Vec<String> = lock["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["name"] == "linux-image-cloud-amd64")
        .flat_map(|q| q["depends"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()))
        .collect();
    lock["packages"].as_array_mut().unwrap().retain(|q| {
        let n = q["name"].as_str().unwrap();
        DEFAULTS.contains(&n) || kernel_dep.iter().any(|d| d == n)
    });
    let before = lock["packages"].as_array().unwrap().len();
    project(p, &lock);
    let lock_path = p.join("kernel/packages.lock");

    let log = fetch(p, &["--add", "nginx-light"]);
    assert!(log.contains("pinned nginx-light with"), "{log}");
    let after = lock_of(&lock_path);
    let c = closure(&after, "nginx-light");
    for n in ["nginx", "nginx-common", "libc6", "libssl3", "libpcre2-8-0", "zlib1g"] {
        assert!(c.iter().any(|x| x == n), "{n} not in nginx-light's closure {c:?}");
    }
    // Nothing else was added; the defaults are untouched.
    assert_eq!(after.len(), before + c.len(), "{:?}", after.keys());
    for q in lock["packages"].as_array().unwrap() {
        assert_eq!(&after[q["name"].as_str().unwrap()], q);
    }
    // Every added package is in the cache with the digest the lock pins.
    for n in &c {
        let q = &after[n];
        let file = format!("{}_{}_{}.deb", n, q["version"].as_str().unwrap().replace(':', "%3a"), q["architecture"].as_str().unwrap());
        assert_eq!(sha256(&p.join("out/cache/debs").join(&file)), q["sha256"].as_str().unwrap(), "{file}");
    }
    // Same answer twice: the lock does not change.
    let text = fs::read(&lock_path).unwrap();
    fetch(p, &["--add", "nginx-light"]);
    assert_eq!(fs::read(&lock_path).unwrap(), text, "a second --add changed the lock");

    // --update-lock re-pins the defaults and what was added.
    let log = fetch(p, &["--update-lock"]);
    let updated = lock_of(&lock_path);
    assert!(log.contains("pinned nginx-light with"), "{log}");
    let c2 = closure(&updated, "nginx-light");
    assert!(c2.iter().any(|x| x == "libc6") && DEFAULTS.iter().all(|d| updated.contains_key(*d)), "{:?}", updated.keys());
}

#[test]
fn a_deb_layer_whose_dependency_is_not_locked_names_the_fix() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let mut lock = project_lock();
    lock["packages"].as_array_mut().unwrap().retain(|q| q["name"] != "libc6");
    project(p, &lock);
    let recipe = serde_json::json!({
        "name": "unlocked",
        "trees": { "root": [{ "deb": "busybox-static" }, { "deb": "nginx-light" }] },
        "disk": { "partitions": [{ "label": "root", "type": "linux", "size": "64MiB", "filesystem": "ext4", "tree": "root" }] },
        "outputs": ["raw"]
    });
    fs::write(p.join("r.json"), recipe.to_string()).unwrap();
    let o = Command::new(bin())
        .args(["-q", "build", "r.json", "--out", "out", "--cache", "out/cache"])
        .current_dir(p)
        .env_remove("BUILD_IMAGE_LOCK")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "built with libc6 missing from the lock");
    assert!(err.contains("trees.root[1]"), "{err}");
    assert!(err.contains("depends on `libc6`, which is not locked") && err.contains("build-image fetch --add nginx-light"), "{err}");
    assert!(!p.join("out/unlocked.raw").exists(), "a failed build left an image");
}
