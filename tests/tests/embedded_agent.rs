//! The guest agent built into `build-image` (builder/build.rs): `--version`
//! names it; a build without `--agent` puts exactly it in the initramfs as
//! `/init`, from a copy of the binary outside the checkout, and the manifest
//! records it; `--agent` and `$BUILD_IMAGE_AGENT` override it, are recorded
//! as such, and fail loudly when unusable.
//!
//! Needs the pinned packages (`./build.sh fetch`), in `$BUILD_IMAGE_CACHE` or
//! build-image's default, `~/.cache/build-image`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// `build-image 0.1.0 (guest-agent 0.1.0, sha256 …)` → (agent version, sha256).
fn version_line(exe: &Path) -> (String, String) {
    let o = Command::new(exe).arg("--version").output().unwrap();
    assert!(o.status.success());
    let line = String::from_utf8(o.stdout).unwrap();
    let rest = line.trim().strip_prefix("build-image ").unwrap_or_else(|| panic!("{line}"));
    let (tool, agent) = rest.split_once(" (guest-agent ").unwrap_or_else(|| panic!("{line}"));
    assert_eq!(tool, env!("CARGO_PKG_VERSION"), "{line}");
    let (version, sha) = agent.strip_suffix(')').and_then(|a| a.split_once(", sha256 ")).unwrap_or_else(|| panic!("{line}"));
    assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    (version.to_string(), sha.to_string())
}

/// A kernel recipe with only an initramfs output (no disk: fast).
fn recipe() -> serde_json::Value {
    serde_json::json!({
        "name": "embedded",
        "source_date_epoch": 1_700_000_000,
        "trees": {"init": [{"file": "/etc/hostname", "content": "embedded\n"}]},
        "initramfs": {"tree": "init", "compression": "gzip"},
        "kernel": {"package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200"},
        "outputs": ["initramfs"]
    })
}

/// Run `exe build` on the recipe (in a scratch folder inside the project,
/// so the packages resolve) with `env`; returns (success, stderr).
fn build(exe: &Path, cwd: &Path, recipe_dir: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let r = recipe_dir.join("embedded.json");
    fs::write(&r, recipe().to_string()).unwrap();
    let mut c = Command::new(exe);
    c.args(["-q", "build"]).arg(&r).arg("--out").arg(out).args(extra).current_dir(cwd).env_remove("BUILD_IMAGE_AGENT");
    c.env("BUILD_IMAGE_CACHE", package_cache());
    let o = c.envs(env.iter().copied()).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The tests' package cache ([`cache`]).
fn package_cache() -> PathBuf {
    cache()
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("embedded.manifest.json")).unwrap()).unwrap()
}

/// The `/init` of a gzip initramfs, extracted with GNU cpio.
fn init_of(initramfs: &Path, dir: &Path) -> PathBuf {
    let script = format!("set -e; gzip -dc '{}' | cpio -idm --no-absolute-filenames --quiet init", initramfs.display());
    let o = Command::new("sh").arg("-c").arg(&script).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
    dir.join("init")
}

#[test]
fn the_embedded_agent_is_init_and_the_manifest_says_so() {
    let scratch = root().join("out/test-recipes");
    fs::create_dir_all(&scratch).unwrap();
    let rdir = tempfile::tempdir_in(&scratch).unwrap();
    // The binary alone, away from the checkout and its target folders.
    let away = tempfile::tempdir().unwrap();
    assert!(!away.path().starts_with(root()));
    let exe = away.path().join("build-image");
    fs::copy(bin(), &exe).unwrap();
    let (version, sha) = version_line(&exe);
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "the workspace shares one version");

    let out1 = away.path().join("out1");
    let (ok, err) = build(&exe, away.path(), rdir.path(), &out1, &[], &[]);
    assert!(ok, "{err}");
    let m = manifest(&out1);
    assert_eq!(m["boot"]["agent"], serde_json::json!({"source": "embedded", "version": version, "sha256": sha}));
    let x = tempfile::tempdir().unwrap();
    let init = init_of(&out1.join("embedded.initramfs"), x.path());
    assert_eq!(sha256(&init), sha, "/init is the embedded agent");
    let (ok, f) = tool("file", &[init.to_str().unwrap()]);
    assert!(ok && (f.contains("statically linked") || f.contains("static-pie linked")), "{f}");

    // Deterministic: the workspace binary (another path, another folder)
    // makes the same manifest.
    let out2 = away.path().join("out2");
    let (ok, err) = build(&bin(), &root(), rdir.path(), &out2, &[], &[]);
    assert!(ok, "{err}");
    assert_eq!(fs::read(out1.join("embedded.manifest.json")).unwrap(), fs::read(out2.join("embedded.manifest.json")).unwrap());

    // Overrides: recorded by where they came from, never by path.
    let fake = away.path().join("fake-agent");
    fs::write(&fake, "#!/bin/sh\necho fake\n").unwrap();
    let fake_sha = sha256(&fake);
    let out3 = away.path().join("out3");
    let (ok, err) = build(&exe, away.path(), rdir.path(), &out3, &["--agent", fake.to_str().unwrap()], &[]);
    assert!(ok, "{err}");
    assert_eq!(manifest(&out3)["boot"]["agent"], serde_json::json!({"source": "--agent", "sha256": fake_sha}));
    let (ok, err) = build(&exe, away.path(), rdir.path(), &out3, &[], &[("BUILD_IMAGE_AGENT", fake.to_str().unwrap())]);
    assert!(ok, "{err}");
    assert_eq!(manifest(&out3)["boot"]["agent"], serde_json::json!({"source": "BUILD_IMAGE_AGENT", "sha256": fake_sha}));

    // An unusable override stops the build, writes nothing, and says how to
    // fall back to the embedded agent.
    let out4 = away.path().join("out4");
    let gone = away.path().join("no-such-agent");
    let (ok, err) = build(&exe, away.path(), rdir.path(), &out4, &[], &[("BUILD_IMAGE_AGENT", gone.to_str().unwrap())]);
    assert!(!ok);
    assert!(err.contains("does not exist") && err.contains("drop BUILD_IMAGE_AGENT"), "{err}");
    let (ok, err) = build(&exe, away.path(), rdir.path(), &out4, &["--agent", "/bin/sh"], &[]);
    assert!(!ok);
    assert!(err.contains("dynamically linked"), "{err}");
    assert!(fs::read_dir(&out4).map(|d| d.count() == 0).unwrap_or(true), "a failed build wrote into {}", out4.display());
}
