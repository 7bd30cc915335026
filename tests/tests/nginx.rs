//! `recipes/vpc-nginx.json`, booted as the OpenStack VPC boots it: nginx
//! from the pinned Debian packages on a btrfs root that grows, configured by
//! the guest agent from a config drive.
//!
//! One UEFI boot of a copy of the 400 MiB image resized to 1 GiB
//! (`qemu-img resize`), with qemu's user network playing the VPC: a vfat
//! config drive labelled `config-2` (mkfs.vfat + mcopy) as a second virtio
//! disk gives the NIC (matched by MAC) 10.0.2.77/24 via 10.0.2.2, a hostname
//! and a public key; `hostfwd` to 10.0.2.77:80 reaches nginx. Then one BIOS
//! boot of the image as built by `build-image boot`, which waits for the
//! recipe's `smoke.expect`.
//! Needs the pinned packages (`./build.sh fetch`); the agent is the one
//! built into build-image.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MAC: &str = "52:54:00:12:34:57";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5naW54dGVzdGtleW5naW54dGVzdGtleW5naW54dA nginx@test";
const HOST: &str = "nginx-test-host";
const READY: &str = "vpc-nginx: READY";

/// Build the recipe into `out`; returns the raw image and the manifest.
fn build(out: &Path) -> (PathBuf, serde_json::Value) {
    let r = root().join("recipes/vpc-nginx.json");
    run_ok(&root(), &["-q", "build", r.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let m = serde_json::from_slice(&fs::read(out.join("vpc-nginx.manifest.json")).unwrap()).unwrap();
    (out.join("vpc-nginx.raw"), m)
}

fn meta_data() -> String {
    serde_json::json!({
        "uuid": "5d2f0a4e-8e0f-4a43-9d39-6b1c2e3f4a5b",
        "name": "nginx-name", "hostname": HOST,
        "public_keys": { "test": KEY }
    })
    .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running qemu, killed on drop.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value after `prefix` on the first serial line that has it.
fn line_after<'a>(log: &'a str, prefix: &str) -> Option<&'a str> {
    log.lines().find_map(|l| l.find(prefix).map(|i| l[i + prefix.len()..].trim_end()))
}

/// The image boots by UEFI on a larger disk with a config drive: nginx
/// answers through the port forward to the drive's static address, the
/// hostname and the key come from meta_data.json, and the btrfs root filled
/// the disk.
#[test]
fn vpc_nginx_serves_its_page_with_the_clouds_identity_and_grows() {
    let t = tempfile::tempdir().unwrap();
    let (raw, m) = build(t.path());
    assert_eq!(fs::metadata(&raw).unwrap().len(), 400 << 20, "the recipe asks for a 400 MiB disk");
    let cmdline = m["boot"]["cmdline"].as_str().unwrap();
    let parts = m["disk"]["partitions"].as_array().unwrap();
    let root_part = parts.iter().find(|p| p["label"] == "root").unwrap();
    assert_eq!(root_part, parts.last().unwrap(), "the growing root is the last partition");
    let guid = root_part["part_guid"].as_str().unwrap();
    assert!(cmdline.contains(&format!("root=PARTUUID={guid}")) && cmdline.contains("agent.grow="), "{cmdline}");
    let dev = format!("/dev/vda{}", root_part["number"]);

    // Every package of nginx-light's closure is an input, with the digest
    // the lock pins for it.
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(lock_path()).unwrap()).unwrap();
    let pinned = |name: &str| lock["packages"].as_array().unwrap().iter().find(|p| p["name"] == name).map(|p| p["sha256"].clone());
    let debs: Vec<&serde_json::Value> = m["inputs"].as_array().unwrap().iter().filter(|i| i["kind"] == "deb").collect();
    for i in &debs {
        let name = i["path"].as_str().unwrap();
        assert_eq!(Some(i["sha256"].clone()), pinned(name), "input {i}");
    }
    let names: Vec<&str> = debs.iter().map(|i| i["path"].as_str().unwrap()).collect();
    for n in ["busybox-static", "libc6", "libssl3", "libpcre2-8-0", "nginx-common", "nginx", "nginx-light"] {
        assert!(names.contains(&n), "{n} not among the inputs {names:?}");
    }
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("libc6") < pos("nginx") && pos("nginx") < pos("nginx-light"), "dependencies first: {names:?}");

    // The image on a 1 GiB disk.
    let disk = t.path().join("disk.raw");
    fs::copy(&raw, &disk).unwrap();
    let (ok, out) = tool("qemu-img", &["resize", "-q", "-f", "raw", disk.to_str().unwrap(), "1G"]);
    assert!(ok, "qemu-img resize: {out}");
    let drive =
        config_drive(t.path(), &[("meta_data.json", meta_data().as_str()), ("network_data.json", network_data_static(MAC).as_str())]);

    let port = free_port();
    let log = t.path().join("serial.log");
    let vars = t.path().join("vars.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio,readonly=on", drive.display()))
        .arg("-netdev")
        .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-10.0.2.77:80"))
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={MAC}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let mut vm = Vm(child);
    let start = Instant::now();
    let serial = || String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    let mut response = None;
    while start.elapsed() < Duration::from_secs(400) && response.is_none() {
        if let Ok(Some(st)) = vm.0.try_wait() {
            panic!("qemu exited ({st}) after {:?}:\n{}", start.elapsed(), serial());
        }
        std::thread::sleep(Duration::from_millis(500));
        if serial().contains(READY) {
            let (ok, out) = tool("curl", &["-s", "-i", "-m", "10", &format!("http://127.0.0.1:{port}/")]);
            if ok && !out.is_empty() {
                response = Some(out);
            }
        }
    }
    let ready_after = start.elapsed();
    let log_text = serial();
    drop(vm);
    let response = response.unwrap_or_else(|| panic!("no HTTP answer after {ready_after:?}; serial:\n{log_text}"));
    eprintln!("nginx answered {:.1} s after qemu started", ready_after.as_secs_f64());
    for l in log_text.lines().filter(|l| l.contains("vpc-nginx: ") || l.contains("network configured")) {
        eprintln!("  {l}");
    }

    // nginx's default page, from nginx.
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.lines().any(|l| l.starts_with("Server: nginx")), "{response}");
    assert!(response.contains("<title>Welcome to nginx!</title>"), "{response}");

    // The cloud's identity: address from network_data.json, hostname and
    // key from meta_data.json, the key in core's home, owned by core.
    assert!(log_text.contains("network configured from config drive"), "{log_text}");
    assert_eq!(line_after(&log_text, "vpc-nginx: hostname "), Some(HOST), "{log_text}");
    assert_eq!(line_after(&log_text, "vpc-nginx: keys of core: "), Some(format!("1000:1000 600 {KEY}").as_str()), "{log_text}");

    // The root is the btrfs partition, grown to the disk.
    assert_eq!(line_after(&log_text, "vpc-nginx: root "), Some(format!("{dev} btrfs").as_str()), "{log_text}");
    let grow: Vec<&str> = log_text.lines().filter(|l| l.contains("grow:")).collect();
    eprintln!("{}", grow.join("\n"));
    assert!(grow.iter().any(|l| l.contains("grew from")) && !grow.iter().any(|l| l.contains("FAILED")), "{log_text}");
    let df = line_after(&log_text, "vpc-nginx: df / ").unwrap_or_else(|| panic!("no df line:\n{log_text}"));
    let kib: u64 = df.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad df line {df:?}"));
    let (_, _, start_b, size) = sfdisk(&disk).last().unwrap().clone();
    assert!(start_b + size > (1 << 30) - (2 << 20), "the root partition ends at {} of 1 GiB", start_b + size);
    assert!(kib * 1024 >= size / 100 * 90, "/ is {kib} KiB on a {size}-byte partition:\n{log_text}");

    // What the guest left behind is valid for the real tools.
    let (ok, out) = tool("sgdisk", &["-v", disk.to_str().unwrap()]);
    assert!(ok && out.contains("No problems found"), "sgdisk -v:\n{out}");
    let part = t.path().join("root.img");
    extract(&disk, start_b, size, &part);
    let (ok, out) = tool("btrfs", &["check", "--readonly", part.to_str().unwrap()]);
    assert!(ok, "btrfs check of the grown root:\n{out}");
}

/// `build-image boot` (BIOS this time) waits for the recipe's
/// `smoke.expect`. Its config drive asks for DHCP on the NIC: without a
/// drive the vpc platform asks the metadata service, and qemu's user
/// network would pass that to whatever answers at 169.254.169.254 on the
/// host (on a cloud CI machine, the host's own metadata).
#[test]
fn vpc_nginx_smoke_boot_by_bios() {
    let t = tempfile::tempdir().unwrap();
    let (raw, m) = build(t.path());
    assert_eq!(m["smoke"]["expect"], READY);
    // One link without a MAC: the first NIC (`build-image boot` picks no MAC).
    let dhcp = serde_json::json!({ "links": [{ "id": "eth0", "type": "phy" }], "networks": [{ "id": "n0", "type": "ipv4_dhcp", "link": "eth0" }], "services": [] });
    let meta = serde_json::json!({ "uuid": "0b7e4d2c-33a4-4f4e-9a43-2f8d5c1b6e70", "hostname": "nginx-smoke" });
    let (meta, dhcp) = (meta.to_string(), dhcp.to_string());
    let drive = config_drive(t.path(), &[("meta_data.json", meta.as_str()), ("network_data.json", dhcp.as_str())]);
    let o = run(
        &root(),
        &[
            "boot",
            "-q",
            raw.to_str().unwrap(),
            "--firmware",
            "bios",
            "--accel",
            "tcg",
            "--timeout",
            "400",
            "--drive",
            drive.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let mut log = raw.clone().into_os_string();
    log.push(".serial.log");
    let log = fs::read_to_string(log).unwrap_or_default();
    assert!(o.status.success(), "build-image boot by BIOS did not see {READY:?}:\n{err}\nserial:\n{log}");
    eprintln!("{}", err.trim());
    for l in log.lines().filter(|l| l.contains("vpc-nginx: ") || l.contains("network configured") || l.contains("cloud:")) {
        eprintln!("  {l}");
    }
    assert!(log.lines().any(|l| l.contains("network configured from config drive") && l.contains("10.0.2.15/24")), "{log}");
    assert!(!log.contains("metadata service"), "{log}");
    assert_eq!(line_after(&log, "vpc-nginx: hostname "), Some("nginx-smoke"), "{log}");
    assert!(log.contains("vpc-nginx: nginx is listening on port 80"), "{log}");
}

/// Same recipe, same bytes: two builds into different folders.
#[test]
fn vpc_nginx_builds_reproducibly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ra, _) = build(a.path());
    let (rb, _) = build(b.path());
    assert_eq!(sha256(&ra), sha256(&rb));
}
