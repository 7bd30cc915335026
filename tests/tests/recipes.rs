//! The example recipes users copy: each one is built and booted under TCG,
//! by UEFI and by BIOS from the same raw file,
//! with the real guest agent (the one built into build-image) and the
//! pinned packages (`./build.sh fetch`).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn build(recipe: &str, out: &Path) -> serde_json::Value {
    let r = root().join("recipes").join(recipe);
    run_ok(&root(), &["-q", "build", r.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let name = recipe.trim_end_matches(".json");
    serde_json::from_slice(&fs::read(out.join(format!("{name}.manifest.json"))).unwrap()).unwrap()
}

fn boot(image: &Path, firmware: &str) -> String {
    let o = run(&root(), &["boot", "-q", image.to_str().unwrap(), "--firmware", firmware, "--accel", "tcg", "--timeout", "240"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{} did not reach its marker by {firmware}:\n{err}", image.display());
    eprintln!("{}", err.trim());
    let mut log = image.to_path_buf().into_os_string();
    log.push(".serial.log");
    String::from_utf8_lossy(&fs::read(log).unwrap()).into_owned()
}

#[test]
fn demo_builds() {
    let t = tempfile::tempdir().unwrap();
    let m = build("demo.json", t.path());
    assert_eq!(m["artifacts"].as_array().unwrap().len(), 2);
}

/// Each root recipe boots by UEFI with its root mounted from the
/// partition whose PARTUUID the builder put on the command line.
#[test]
fn root_recipes_boot_from_the_right_partuuid() {
    for (recipe, fs) in [("ext4-root.json", "ext4"), ("btrfs-root.json", "btrfs")] {
        let t = tempfile::tempdir().unwrap();
        let m = build(recipe, t.path());
        let root_part = m["disk"]["partitions"].as_array().unwrap().iter().find(|p| p["label"] == "root").unwrap().clone();
        let guid = root_part["part_guid"].as_str().unwrap();
        let dev = format!("/dev/vda{}", root_part["number"]);
        assert!(m["boot"]["cmdline"].as_str().unwrap().contains(&format!("root=PARTUUID={guid}")));
        // One raw file boots either way.
        for firmware in ["uefi", "bios"] {
            let log = boot(&t.path().join(recipe.replace(".json", ".raw")), firmware);
            assert!(
                log.contains(&format!("root PARTUUID={guid} is {dev} ({fs}")),
                "{recipe} by {firmware}: agent did not mount the root:\n{log}"
            );
            assert!(log.contains(&format!("root: {dev} {fs}")), "{recipe} by {firmware}: / is not the root partition:\n{log}");
        }
    }
}

/// hello: the initramfs-only appliance reaches its marker by UEFI, from the
/// raw image and from its qcow2, and serves its page over HTTP.
#[test]
fn hello_boots_and_serves_http() {
    let t = tempfile::tempdir().unwrap();
    build("hello.json", t.path());
    boot(&t.path().join("hello.raw"), "uefi");
    boot(&t.path().join("hello.raw"), "bios");
    // The qcow2, with a port forward, answering HTTP.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let vars = t.path().join("vars.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let log = t.path().join("serial.log");
    let mut q = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio,snapshot=on", t.path().join("hello.qcow2").display()))
        .arg("-netdev")
        .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:80"))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let start = Instant::now();
    let mut page = String::new();
    while start.elapsed() < Duration::from_secs(240) {
        std::thread::sleep(Duration::from_secs(1));
        if fs::read_to_string(&log).unwrap_or_default().contains("hello: READY") {
            let (ok, out) = tool("curl", &["-s", "-m", "10", &format!("http://127.0.0.1:{port}/")]);
            if ok && !out.is_empty() {
                page = out;
                break;
            }
        }
    }
    let _ = q.kill();
    let _ = q.wait();
    assert!(
        page.contains("Hello from build-image"),
        "no page after {:?}; serial:\n{}",
        start.elapsed(),
        fs::read_to_string(&log).unwrap_or_default()
    );
}
