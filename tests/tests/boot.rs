//! Boot: the UKI and the kernel package, checked with `objdump` and a real
//! OVMF boot under TCG; bad boot inputs fail cleanly.
//!
//! These tests need the pinned packages: `./build.sh fetch` (which
//! `./build.sh test` runs first).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A scratch folder inside the project (so package names resolve through
/// kernel/packages.lock), removed on drop.
fn scratch() -> tempfile::TempDir {
    let base = root().join("out/test-recipes");
    fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// A stand-in for the guest agent: a busybox script that prints a marker.
fn fake_agent(dir: &Path, marker: &str) -> PathBuf {
    let p = dir.join("fake-agent");
    fs::write(&p, format!("#!/bin/sh\necho {marker}\n/bin/busybox poweroff -f\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn recipe(esp: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "uki",
        "source_date_epoch": 1_700_000_000,
        "trees": {"init": [{"deb": "busybox-static"}, {"symlink": "/bin/sh", "target": "busybox"}]},
        "initramfs": {"tree": "init"},
        "kernel": {"package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200 panic=-1", "modules": ["virtio_blk", "virtio_net"]},
        "disk": {"partitions": [{"label": "ESP", "type": "esp", "size": esp}]},
        "outputs": ["raw", "uki"]
    })
}

#[test]
fn uki_has_its_sections_and_ovmf_boots_it() {
    let t = scratch();
    let w = t.path();
    let agent = fake_agent(w, "UKI-BOOT-OK");
    fs::write(w.join("r.json"), recipe("64MiB").to_string()).unwrap();
    run_ok(w, &["-q", "r.json", "--out", "out", "--agent", agent.to_str().unwrap()]);
    let (ok, out) = tool("objdump", &["-h", w.join("out/uki.efi").to_str().unwrap()]);
    assert!(ok, "{out}");
    let names: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|n| n.starts_with('.')).collect();
    let want = [".osrel", ".cmdline", ".uname", ".initrd", ".linux"];
    let pos: Vec<usize> =
        want.iter().map(|s| names.iter().position(|n| n == s).unwrap_or_else(|| panic!("{s} missing: {names:?}"))).collect();
    assert!(pos.windows(2).all(|p| p[0] < p[1]), "ukify's section order: {names:?}");
    // The same UKI is on the ESP, and OVMF boots it.
    let m: serde_json::Value = serde_json::from_slice(&fs::read(w.join("out/uki.manifest.json")).unwrap()).unwrap();
    assert!(m["boot"]["cmdline"].as_str().unwrap().contains("console=ttyS0"));
    // The recipe's modules in its order, the virtio PCI transport (which
    // the builder adds) before them.
    let mods: Vec<&str> = m["boot"]["modules"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let at = |n: &str| mods.iter().position(|m| *m == n).unwrap_or_else(|| panic!("{n} not in {mods:?}"));
    assert!(at("virtio_pci") < at("virtio_blk") && at("virtio_blk") < at("virtio_net"), "{mods:?}");
    let o = run(w, &["boot", "-q", "out/uki.raw", "--firmware", "uefi", "--accel", "tcg", "--expect", "UKI-BOOT-OK", "--timeout", "180"]);
    assert!(o.status.success(), "boot failed:\n{}", String::from_utf8_lossy(&o.stderr));
}

/// Each bad boot input fails with a message that says what to do, and
/// writes nothing.
#[test]
fn bad_boot_inputs_fail_cleanly() {
    let t = scratch();
    let w = t.path();
    let agent = fake_agent(w, "X");
    let empty_cache = w.join("empty-cache");
    fs::create_dir_all(&empty_cache).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut r = recipe("64MiB");
        f(&mut r);
        r.to_string()
    };
    let cases: Vec<(&str, String, Option<&Path>, &str)> = vec![
        ("kernel not fetched", with(&|_| {}), Some(&empty_cache), "run `build-image fetch`"),
        (
            "module not in the package",
            with(&|r| r["kernel"]["modules"] = serde_json::json!(["virtio_blk", "no_such_module"])),
            None,
            "kernel.modules[1]",
        ),
        ("command line too long", with(&|r| r["kernel"]["cmdline"] = "x".repeat(5000).into()), None, "kernel.cmdline"),
        ("ESP too small for the UKI", with(&|r| r["disk"]["partitions"][0]["size"] = "8MiB".into()), None, "disk.partitions[0].size"),
        ("bios without bios-boot", with(&|r| r["boot"] = serde_json::json!({"firmware": ["uefi", "bios"]})), None, "bios-boot"),
        ("missing kernel package", with(&|r| r["kernel"]["package"] = "linux-image-nope".into()), None, "packages.lock"),
    ];
    for (what, text, cache, needle) in cases {
        fs::write(w.join("bad.json"), &text).unwrap();
        let mut cmd = common::cmd();
        cmd.args(["-q", "bad.json", "--out", "out", "--agent", agent.to_str().unwrap()]).current_dir(w);
        if let Some(c) = cache {
            cmd.env("BUILD_IMAGE_CACHE", c);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: the build succeeded");
        assert!(err.contains(needle), "{what}: the message does not say `{needle}`:\n{err}");
        let left: Vec<_> = fs::read_dir(w.join("out")).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{what}: output left behind: {left:?}");
    }
}
