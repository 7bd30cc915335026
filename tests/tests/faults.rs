//! Faults injected into builds (issue: hardening):
//!
//! - `build` killed at random moments (SIGKILL and SIGINT, 20 runs): the
//!   output folder holds exactly the files it held before, hidden temp
//!   files included (outputs are written to unnamed `O_TMPFILE` files
//!   that get a name only when the build succeeded), and the next build
//!   succeeds with the same bytes;
//! - the output folder's filesystem fills up mid-build (a tmpfs with
//!   `size=`, root only): the error names the folder and the bytes, exit
//!   non-zero, no temp file is left and the previous image is unchanged.
//!
//! `FAULTS_SEED=N` replays the kill moments of a failed run.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Deterministic bytes that do not compress away (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A project in `dir`: a `dir` layer of `mib` MiB of noise and some small
/// files into an ext4 partition; raw and qcow2 outputs (no kernel: the
/// build is all writing).
fn project(dir: &Path, mib: usize) {
    let data = dir.join("data");
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(data.join("etc")).unwrap();
    fs::write(data.join("blob"), noise(7, mib << 20)).unwrap();
    for i in 0..200 {
        fs::write(data.join("etc").join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    let recipe = serde_json::json!({
        "name": "faults",
        "source_date_epoch": 1_700_000_000,
        "trees": {"root": [{"dir": "data"}]},
        "disk": {"partitions": [{"label": "root", "type": "linux", "size": "auto", "filesystem": "ext4", "tree": "root"}]},
        "outputs": ["raw", "qcow2"]
    });
    fs::write(dir.join("recipe.json"), recipe.to_string()).unwrap();
}

/// Every name in `dir` (hidden ones too) with the sha256 of its bytes.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    let sum = if p.is_file() { sha256(&p) } else { "(not a file)".into() };
                    (e.file_name().to_string_lossy().into_owned(), sum)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn build(dir: &Path, out: &Path) -> std::process::Output {
    cmd().current_dir(dir).args(["-q", "build", "recipe.json", "--out"]).arg(out).output().unwrap()
}

#[test]
fn a_build_killed_at_any_moment_leaves_the_output_folder_as_it_was() {
    let t = tempfile::tempdir().unwrap();
    project(t.path(), 48);
    let out = t.path().join("out");
    let o = build(t.path(), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = listing(&out);
    assert_eq!(before.keys().map(String::as_str).collect::<Vec<_>>(), ["faults.manifest.json", "faults.qcow2", "faults.raw"]);
    // How long a build takes here, warm (the first may have waited for the
    // binary to be built): the shortest of three, which must each give the
    // same bytes.
    let mut took = Duration::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        let o = build(t.path(), &out);
        took = took.min(t0.elapsed());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(listing(&out), before, "a second build gave other bytes");
    }

    let seed: u64 = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("faults: a build takes {:.2} s; kill moments from FAULTS_SEED={seed}", took.as_secs_f64());
    let mut rng = seed | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut finished = 0;
    for run in 0..20 {
        // Anywhere from the start to the usual end.
        let at = Duration::from_micros(next() % (took.as_micros() as u64).max(1));
        let signal = if run % 2 == 0 { "KILL" } else { "INT" };
        let mut child = cmd()
            .current_dir(t.path())
            .args(["-q", "build", "recipe.json", "--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = Command::new("kill").args(["-s", signal, &child.id().to_string()]).status();
        let st = child.wait().unwrap();
        if st.success() {
            finished += 1;
        }
        let now = listing(&out);
        assert_eq!(
            now,
            before,
            "run {run}: SIG{signal} after {:.3} s ({st}) changed the output folder (FAULTS_SEED={seed})",
            at.as_secs_f64()
        );
    }
    eprintln!("faults: 20 kills, {finished} of them after the build had finished");
    // Most kills must land inside a build, or this test tests nothing.
    assert!(finished <= 15, "{finished} of 20 builds finished before their signal (FAULTS_SEED={seed})");
    let o = build(t.path(), &out);
    assert!(o.status.success(), "the build after the kills: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(listing(&out), before, "the build after the kills differs");
}

/// A tmpfs of `mib` MiB mounted on a new folder, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(mib: u32) -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        let o =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"]).arg(d.path()).output().unwrap();
        assert!(o.status.success(), "mount -t tmpfs: {}", String::from_utf8_lossy(&o.stderr));
        Tmpfs(d)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_output_folder_fails_naming_it_and_keeps_the_last_good_image() {
    if !is_root() {
        eprintln!("faults: skipped: mounting a small tmpfs needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let fs_ = Tmpfs::new(64);
    let out = fs_.0.path().join("out");
    // 8 MiB of data: raw and qcow2 fit in 64 MiB.
    project(t.path(), 8);
    let o = build(t.path(), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = listing(&out);
    // 40 MiB: the raw image fits, the qcow2 beside it does not.
    project(t.path(), 40);
    let o = build(t.path(), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a build into a full folder succeeded");
    assert!(err.contains(&format!("no space left in the output folder {}", out.display())), "the error names the folder: {err}");
    assert!(err.contains("bytes free there") && err.contains("disk image alone is up to"), "the error gives the bytes: {err}");
    assert_eq!(listing(&out), before, "the failed build changed the output folder");
}
