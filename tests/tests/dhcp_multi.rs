//! DHCP on several NICs at once, for real: an initramfs appliance built by
//! the builder (platform `qemu`: `"link": "*"`, DHCP on every NIC), booted
//! under qemu TCG with three NICs:
//!
//! * a dead one (`-netdev dgram` to a UDP socket of this test that reads
//!   the guest's frames and never answers),
//! * one on qemu's user network (slirp answers DHCP),
//! * another dead one like the first.
//!
//! Checked from the guest: the user-net NIC has its lease and the default
//! route; both dead NICs are given up with a log line each; the discoveries
//! overlapped — read from the agent's own kernel-timestamped lines, not from
//! wall-clock time: every NIC's discovery started before any dead NIC gave
//! up. The test's sink saw DHCPDISCOVERs from both dead NICs' MACs, so the
//! guest really tried there.
//!
//! Prints the boot-to-network time (the agent's `network configured …
//! (N s since kernel start` line): `cargo test -p e2e-tests --test
//! dhcp_multi -- --nocapture`.
//!
//! Needs the pinned packages (`./build.sh fetch`); the agent is the one
//! built into build-image.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const DONE: &str = "DHCPM: DONE";
const DEAD1: &str = "52:54:00:00:02:01";
const LIVE: &str = "52:54:00:00:02:02";
const DEAD2: &str = "52:54:00:00:02:03";

fn recipe() -> Value {
    let report = [
        "busybox ip -o link | busybox sed 's/^/DHCPM-LINK: /'",
        "busybox ip -4 -o addr show | busybox sed 's/^/DHCPM-ADDR: /'",
        "busybox ip -4 route show | busybox sed 's/^/DHCPM-ROUTE: /'",
        "echo 'DHCPM: DONE'",
    ]
    .join("; ");
    json!({
        "name": "dhcp-multi",
        "source_date_epoch": 1700000000,
        "trees": { "initrd": [ { "deb": "busybox-static" }, { "symlink": "/bin/sh", "target": "busybox" } ] },
        "initramfs": { "tree": "initrd", "compression": "gzip" },
        "kernel": { "package": "linux-image-cloud-amd64", "cmdline": "console=ttyS0,115200 quiet no_timer_check", "modules": ["virtio_pci", "virtio_net"] },
        "oem": { "platform": "qemu" },
        "init": ["/bin/busybox", "sh", "-c", report],
        "outputs": ["kernel+initramfs"]
    })
}

/// Collects the Ethernet frames qemu sends for the dead NICs, answering
/// none; stops when dropped.
struct Sink {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Vec<u8>>>>,
}

impl Sink {
    fn new() -> Sink {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let port = s.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut frames = Vec::new();
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = s.recv(&mut buf) {
                    frames.push(buf[..n].to_vec());
                }
            }
            frames
        });
        Sink { port, stop, thread: Some(thread) }
    }

    fn frames(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The source MAC of a frame that is a DHCPDISCOVER (IPv4, UDP to port 67,
/// BOOTREQUEST with option 53 = 1).
fn discover_from(f: &[u8]) -> Option<String> {
    if f.len() < 14 + 20 + 8 + 240 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let udp = 14 + ihl;
    if f.get(udp + 2..udp + 4)? != [0, 67] {
        return None;
    }
    let p = f.get(udp + 8..)?;
    if p.len() < 240 || p[0] != 1 || p[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut i = 240;
    while i + 2 < p.len() && p[i] != 255 {
        if p[i] == 0 {
            i += 1;
            continue;
        }
        if p[i] == 53 && p[i + 1] == 1 && p[i + 2] == 1 {
            return Some(f[6..12].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
        }
        i += 2 + usize::from(p[i + 1]);
    }
    None
}

/// A free local UDP port for qemu's end of a dgram netdev.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value after `TAG: ` on the guest's lines.
fn tagged<'a>(log: &'a str, tag: &str) -> Vec<&'a str> {
    let p = format!("{tag}: ");
    log.lines().filter_map(|l| l.strip_prefix(p.as_str())).map(str::trim_end).collect()
}

/// The kernel time of the first agent line (`agent: [   1.234567] …`) that
/// contains `what`.
fn agent_time(log: &str, what: &str) -> Option<f64> {
    let l = log.lines().find(|l| l.starts_with("agent: [") && l.contains(what))?;
    l["agent: [".len()..].split(']').next()?.trim().parse().ok()
}

/// The "(N s since kernel start" figure of the agent's "network configured" line.
fn network_time(log: &str) -> Option<f64> {
    let l = log.lines().find(|l| l.contains("network configured"))?;
    let i = l.find(" s since kernel start")?;
    l[..i].rsplit(['(', ' ']).next()?.parse().ok()
}

#[test]
fn dhcp_runs_on_every_nic_at_once_and_dead_nics_are_given_up() {
    let dir = root().join("out/test-recipes");
    fs::create_dir_all(&dir).unwrap();
    let t = tempfile::tempdir_in(&dir).unwrap();
    let out = t.path();
    let r = out.join("dhcp-multi.json");
    fs::write(&r, serde_json::to_string_pretty(&recipe()).unwrap()).unwrap();
    run_ok(&root(), &["-q", "build", r.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let m: Value = serde_json::from_slice(&fs::read(out.join("dhcp-multi.manifest.json")).unwrap()).unwrap();
    let cmdline = m["boot"]["cmdline"].as_str().unwrap().to_string();

    let sink = Sink::new();
    let dgram = |id: &str| {
        format!(
            "dgram,id={id},local.type=inet,local.host=127.0.0.1,local.port={},remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            free_udp_port(),
            sink.port
        )
    };
    let log = boot(
        out,
        &cmdline,
        &[
            "-netdev".into(),
            dgram("d1"),
            "-device".into(),
            format!("virtio-net-pci,netdev=d1,mac={DEAD1}"),
            "-netdev".into(),
            "user,id=u0".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=u0,mac={LIVE}"),
            "-netdev".into(),
            dgram("d2"),
            "-device".into(),
            format!("virtio-net-pci,netdev=d2,mac={DEAD2}"),
        ],
    );
    let frames = sink.frames();
    let secs = network_time(&log);
    eprintln!("three NICs (dead, user net, dead): network configured {secs:?} s after kernel start");
    for l in log.lines().filter(|l| l.contains("dhcp") || l.contains("net:") || l.contains("network configured") || l.starts_with("DHCPM"))
    {
        eprintln!("  {l}");
    }

    // Interface names by MAC, as the guest's kernel reports them.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for l in tagged(&log, "DHCPM-LINK") {
        // "3: eth1: <BROADCAST,…> mtu 1500 … link/ether 52:54:00:00:02:02 brd …"
        let name = l.split(": ").nth(1).unwrap_or("").to_string();
        if let Some(mac) = l.split("link/ether ").nth(1).and_then(|s| s.split_whitespace().next()) {
            names.insert(mac.to_string(), name);
        }
    }
    let name = |mac: &str| names.get(mac).cloned().unwrap_or_else(|| panic!("no interface with MAC {mac}: {names:?}\n{log}"));
    let (dead1, live, dead2) = (name(DEAD1), name(LIVE), name(DEAD2));

    // The user-net NIC got its lease and the network was configured, with
    // the default route on it (the first lease in link order).
    let addrs = tagged(&log, "DHCPM-ADDR").join("\n");
    assert!(addrs.lines().any(|l| l.contains(&format!(" {live} ")) && l.contains("inet 10.0.2.15/24")), "{live}: {addrs}\n{log}");
    for d in [&dead1, &dead2] {
        assert!(!addrs.lines().any(|l| l.contains(&format!(" {d} "))), "{d} has no address: {addrs}");
    }
    let routes = tagged(&log, "DHCPM-ROUTE").join("\n");
    assert!(routes.contains(&format!("default via 10.0.2.2 dev {live}")), "{routes}\n{log}");
    assert!(log.contains("network configured from OEM network"), "{log}");
    assert!(secs.is_some(), "the network configured line has the time: {log}");

    // Both dead NICs given up, each with a clear line, and skipped (optional).
    for d in [&dead1, &dead2] {
        assert!(log.lines().any(|l| l.contains(&format!("dhcp {d}: giving up: no DHCP lease on {d}"))), "{d} given up:\n{log}");
        assert!(log.lines().any(|l| l.contains(&format!("DHCP on {d} failed, skipped (optional)"))), "{d} skipped:\n{log}");
    }

    // The discoveries overlapped: each NIC's started before any dead NIC
    // gave up (by the agent's kernel timestamps).
    let started = |d: &str| agent_time(&log, &format!("dhcp {d}: discovering")).unwrap_or_else(|| panic!("no start line for {d}:\n{log}"));
    let gave_up = |d: &str| agent_time(&log, &format!("dhcp {d}: giving up")).unwrap();
    let first_give_up = gave_up(&dead1).min(gave_up(&dead2));
    for d in [&dead1, &live, &dead2] {
        assert!(
            started(d) < first_give_up,
            "{d}'s DHCP started at {} s, after a dead NIC gave up at {first_give_up} s: not in parallel\n{log}",
            started(d)
        );
    }
    assert!(
        agent_time(&log, &format!("dhcp {live}: leased")).unwrap() < first_give_up,
        "the live NIC's lease came while the dead ones still tried\n{log}"
    );

    // The guest really asked on the dead NICs.
    let discovers: Vec<String> = frames.iter().filter_map(|f| discover_from(f)).collect();
    for mac in [DEAD1, DEAD2] {
        assert!(
            discovers.iter().any(|m| m == mac),
            "no DHCPDISCOVER from {mac} reached the sink ({} frames, DISCOVERs from {discovers:?})",
            frames.len()
        );
    }
    assert!(!discovers.iter().any(|m| m == LIVE), "the user-net NIC's frames do not go to the sink");
}

/// Direct kernel boot of the appliance with `extra` qemu arguments; waits
/// for power-off. Returns the serial log.
fn boot(out: &Path, cmdline: &str, extra: &[String]) -> String {
    let (exited, took, text) =
        boot_to_poweroff(&out.join("dhcp-multi.vmlinuz"), &out.join("dhcp-multi.initramfs"), cmdline, extra, &out.join("serial.log"));
    assert!(exited, "the appliance did not power off in {took:?}:\n{text}");
    assert!(text.lines().any(|l| l.trim_end() == DONE), "no marker:\n{text}");
    eprintln!("booted and powered off in {took:?}");
    text
}
