//! Shared helpers for the end-to-end tests: run the real `build-image`
//! binary, run the real peer tools, hash files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod guest;

/// Workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Path to the `build-image` binary, built once per test process.
pub fn bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "build-image", "--bin", "build-image"])
            .current_dir(root())
            .status()
            .expect("running cargo build");
        assert!(st.success(), "cargo build of build-image failed");
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
        target.join("debug").join("build-image")
    })
    .clone()
}

/// The package lock the tests build against: `$BUILD_IMAGE_LOCK` (which
/// `./build.sh test` sets: the project's lock, or a copy of it re-pinned
/// when Debian has moved on since it was written), else the project's own.
pub fn lock_path() -> PathBuf {
    std::env::var_os("BUILD_IMAGE_LOCK").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| root().join("kernel/packages.lock"))
}

/// The package cache the tests use: `$BUILD_IMAGE_CACHE`, else
/// build-image's own default, `$XDG_CACHE_HOME/build-image` or
/// `~/.cache/build-image` (where `./build.sh` keeps it).
pub fn cache() -> PathBuf {
    if let Some(c) = std::env::var_os("BUILD_IMAGE_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(c);
    }
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    xdg.unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")).join("build-image")
}

/// A `build-image` command with the tests' package cache ([`cache`]).
pub fn cmd() -> Command {
    let mut c = Command::new(bin());
    c.env("BUILD_IMAGE_CACHE", cache());
    c
}

/// Run `build-image ARGS` in `cwd`.
pub fn run(cwd: &Path, args: &[&str]) -> Output {
    cmd().args(args).current_dir(cwd).output().expect("running build-image")
}

/// Run `build-image ARGS` and insist on success; returns stderr.
pub fn run_ok(cwd: &Path, args: &[&str]) -> String {
    run_ok_env(cwd, args, &[])
}

/// [`run_ok`] with extra environment variables (`BUILD_IMAGE_THREADS`, …).
pub fn run_ok_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = cmd().args(args).current_dir(cwd).envs(env.iter().copied()).output().expect("running build-image");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "build-image {args:?} {env:?} failed:\n{err}");
    err
}

/// Build `recipe` into `out` with `-q`, from a temp folder inside the
/// project, so that package names resolve through the project's lock;
/// returns what the build printed (warnings).
pub fn build_in_project(recipe: &serde_json::Value, out: &Path) -> String {
    let name = recipe["name"].as_str().expect("a recipe has a name");
    let dir = root().join("out/test-recipes");
    std::fs::create_dir_all(&dir).unwrap();
    let rdir = tempfile::tempdir_in(&dir).unwrap();
    let r = rdir.path().join(format!("{name}.json"));
    std::fs::write(&r, serde_json::to_string_pretty(recipe).unwrap()).unwrap();
    run_ok(&root(), &["-q", "build", r.to_str().unwrap(), "--out", out.to_str().unwrap()])
}

/// An OpenStack `network_data.json`: the link with `mac` gets 10.0.2.77/24,
/// default route via qemu's 10.0.2.2, DNS 10.0.2.3.
pub fn network_data_static(mac: &str) -> String {
    serde_json::json!({
        "links": [{ "id": "tap0", "type": "ovs", "ethernet_mac_address": mac, "mtu": 1500 }],
        "networks": [{
            "id": "net0", "type": "ipv4", "link": "tap0",
            "ip_address": "10.0.2.77", "netmask": "255.255.255.0",
            "routes": [{ "network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2" }]
        }],
        "services": [{ "type": "dns", "address": "10.0.2.3" }]
    })
    .to_string()
}

/// Run a peer tool, returning (success, stdout+stderr).
pub fn tool(cmd: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("running {cmd}: {e} (is it installed? ./build.sh deps)"));
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), s)
}

pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Copy `len` bytes at `offset` of `image` into a new file (a partition
/// image for tools that take no offset).
pub fn extract(image: &Path, offset: u64, len: u64, dest: &Path) {
    use std::os::unix::fs::FileExt;
    let src = std::fs::File::open(image).unwrap();
    let dst = std::fs::File::create(dest).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        src.read_exact_at(&mut buf[..n], offset + done).unwrap();
        dst.write_all_at(&buf[..n], done).unwrap();
        done += n as u64;
    }
}

/// Partitions from `sfdisk --json`: (name, type GUID, start byte, size bytes).
pub fn sfdisk(image: &Path) -> Vec<(String, String, u64, u64)> {
    let (ok, out) = tool("sfdisk", &["--json", image.to_str().unwrap()]);
    assert!(ok, "sfdisk failed: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("sfdisk json");
    let ss = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["type"].as_str().unwrap().to_lowercase(),
                p["start"].as_u64().unwrap() * ss,
                p["size"].as_u64().unwrap() * ss,
            )
        })
        .collect()
}

pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// A deterministic pseudo-random byte stream (xorshift), for test content.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The Debian minbase tree the tests use: `$BUILD_IMAGE_MINBASE` (set by
/// `./build.sh test`, which makes it with bench/minbase.sh), else the
/// shared cache.
pub fn minbase() -> PathBuf {
    std::env::var_os("BUILD_IMAGE_MINBASE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/work/cache/minbase"))
}

/// Direct kernel boot under qemu TCG (512 MiB, serial console to `log`,
/// no display, no reboot) with `extra` arguments; waits up to 400 s for the
/// guest to power off. Returns whether it did, how long it ran, and the
/// serial log.
pub fn boot_to_poweroff(kernel: &Path, initrd: &Path, cmdline: &str, extra: &[String], log: &Path) -> (bool, std::time::Duration, String) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut q = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(cmdline)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let start = Instant::now();
    let exited = loop {
        if q.try_wait().unwrap().is_some() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(400) {
            let _ = q.kill();
            let _ = q.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    (exited, start.elapsed(), text)
}

/// A raw vfat image labelled `config-2` (an OpenStack config drive) in
/// `dir`, with `files` under `openstack/latest/`; made with mkfs.vfat and
/// mtools, replacing an earlier one.
pub fn config_drive(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let img = dir.join("config-drive.img");
    let _ = std::fs::remove_file(&img);
    // 2 MiB, or room for big files (a 10 MiB user_data) with FAT's overhead.
    let kib = files.iter().map(|(_, c)| c.len() / 1024 + 4).sum::<usize>() * 5 / 4 + 1024;
    let (ok, out) = tool("mkfs.vfat", &["-n", "config-2", "-C", img.to_str().unwrap(), &kib.max(2048).to_string()]);
    assert!(ok, "mkfs.vfat: {out}");
    let i = img.to_str().unwrap();
    for d in ["::openstack", "::openstack/latest"] {
        let (ok, out) = tool("mmd", &["-i", i, d]);
        assert!(ok, "mmd {d}: {out}");
    }
    for (name, content) in files {
        let src = dir.join(name);
        std::fs::write(&src, content).unwrap();
        let (ok, out) = tool("mcopy", &["-i", i, src.to_str().unwrap(), &format!("::openstack/latest/{name}")]);
        assert!(ok, "mcopy {name}: {out}");
    }
    img
}

/// An ISO 9660 image labelled `config-2` with `openstack/latest/*`, made
/// the way OpenStack Nova makes its config drive (genisoimage's options,
/// through xorriso's genisoimage emulation: Joliet, Rock Ridge).
pub fn iso_config_drive(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let src = dir.join("iso-root");
    let latest = src.join("openstack/latest");
    std::fs::create_dir_all(&latest).unwrap();
    for (name, content) in files {
        std::fs::write(latest.join(name), content).unwrap();
    }
    let iso = dir.join("config-drive.iso");
    let (ok, out) = tool(
        "xorriso",
        &[
            "-as",
            "genisoimage",
            "-o",
            iso.to_str().unwrap(),
            "-ldots",
            "-allow-lowercase",
            "-allow-multidot",
            "-l",
            "-publisher",
            "build-image tests",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
            src.to_str().unwrap(),
        ],
    );
    assert!(ok, "xorriso: {out}");
    iso
}

/// A static is never dropped: a folder shared by the tests of one file
/// (a built project, half a GB) is removed by an `atexit` handler when the
/// test process ends. One folder per test process.
pub fn remove_at_exit(dir: PathBuf) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn cleanup() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    if DIR.set(dir.clone()).is_ok() {
        // SAFETY: registers a function without arguments; it only reads a
        // OnceLock that is set by then.
        unsafe { libc::atexit(cleanup) };
    }
    dir
}
