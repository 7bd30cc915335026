//! The agent's hand-over to systemd-networkd (`guest_agent::net::networkd`)
//! against the real `systemd-networkd` of this machine (Debian 12: systemd
//! 252), without a VM: the rendered `.network` files go into a private
//! `/run/systemd/network` in new network and mount namespaces, a veth pair
//! stands for the NIC (`eth0`, MAC 52:54:00:12:34:56) and its network (the
//! peer in a namespace of its own, with busybox `udhcpd` from the package
//! cache as the DHCP server), and the kernel state is first made the way
//! the agent leaves it (addresses with broadcast, routes `proto boot`, a
//! leased address with its lifetime). networkd runs in the foreground with
//! debug logging; `/sys` is mounted read-only so it does not wait for udev,
//! as in a container.
//!
//! Each case checks that networkd parses the file without a warning, picks
//! it for the NIC, keeps the agent's addresses without ever deleting them
//! (`ip monitor`), has the routes, MTU, DNS and domains, and still has them
//! after networkd is stopped and started again.
//!
//! Needs root, `/lib/systemd/systemd-networkd`, `unshare`, `ip`; the DHCP
//! case also the busybox-static deb in the cache. Without them the cases
//! say why and pass.

mod common;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use guest_agent::net::networkd::{render, Dhcp4, Handover, Link};
use guest_agent::net::Route;

const NETWORKD: &str = "/lib/systemd/systemd-networkd";
const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Why the real networkd cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if !common::is_root() {
        return Some("not root".into());
    }
    if !Path::new(NETWORKD).exists() {
        return Some(format!("no {NETWORKD}"));
    }
    match Command::new("unshare")
        .args(["-n", "-m", "--propagation", "private", "ip", "link", "add", "t0", "type", "veth", "peer", "name", "t1"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("unshare -n -m + veth: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("unshare: {e}")),
    }
}

/// busybox from the cache's busybox-static deb, extracted under `dir`.
fn busybox(dir: &Path) -> Option<PathBuf> {
    let debs = common::cache().join("debs");
    let mut v: Vec<PathBuf> = fs::read_dir(&debs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("busybox-static_")))
        .collect();
    v.sort();
    let deb = v.pop()?;
    let out = dir.join("busybox-deb");
    let st = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&out).status().ok()?;
    let bb = out.join("bin/busybox");
    (st.success() && bb.exists()).then_some(bb)
}

/// The shell around every case: private /run (with the rendered files in
/// /run/systemd/network), /etc/systemd/network emptied, a read-only sysfs
/// of the new network namespace, `eth0` ↔ `peer0` (the peer in its own
/// namespace, 10.9.0.1/24 and fd00::1/64), `ip monitor` into monitor.log.
/// Functions: `nd_start N` (networkd, log in networkd-N.log), `nd_stop`,
/// `wait_state S` (the link's ADMIN_STATE), `dump N` (ip -j addr/route of
/// eth0 and the link's state file into files named after N).
const HARNESS: &str = r#"
set -u
D=$1
trap 'kill $(jobs -p) 2>/dev/null' EXIT
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /etc/systemd/network
mount -t sysfs -o ro sysfs /sys
mkdir -p /run/systemd/network /run/systemd/netif
chown systemd-network:systemd-network /run/systemd/netif
cp $D/files/* /run/systemd/network/
ip link set lo up
ip link add eth0 address 52:54:00:12:34:56 type veth peer name peer0
unshare -n sleep 600 &
PEER=$!
sleep 0.3
ip link set peer0 netns $PEER
nsenter -t $PEER -n sh -c 'ip link set lo up; ip addr add 10.9.0.1/24 dev peer0; ip -6 addr add fd00::1/64 dev peer0 nodad; ip link set peer0 up'
IDX=$(cat /sys/class/net/eth0/ifindex)
ip monitor address route > $D/monitor.log 2>&1 &
nd_start() { SYSTEMD_LOG_LEVEL=debug $NETWORKD > $D/networkd-$1.log 2>&1 & ND=$!; }
nd_stop() { kill $ND; wait $ND; rm -f /run/systemd/netif/links/*; }
wait_state() {
  for i in $(seq 600); do
    grep -qx "ADMIN_STATE=$1" /run/systemd/netif/links/$IDX 2>/dev/null && return 0
    sleep 0.1
  done
  echo "TIMEOUT waiting for ADMIN_STATE=$1"
}
dump() {
  ip -j addr show dev eth0 > $D/addr-$1.json
  ip -j -4 route show dev eth0 > $D/route4-$1.json
  ip -j -6 route show dev eth0 > $D/route6-$1.json
  cp /run/systemd/netif/links/$IDX $D/state-$1
}
"#;

/// Run `HARNESS` + `script` in new namespaces with `files` in
/// /run/systemd/network; returns the case's directory (logs, dumps).
fn run_case(name: &str, files: &[(String, String)], script: &str, env: &[(&str, &Path)]) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join(name);
    fs::create_dir_all(d.join("files")).unwrap();
    for (n, c) in files {
        fs::write(d.join("files").join(n), c).unwrap();
    }
    let path = d.join("case.sh");
    fs::write(&path, format!("{HARNESS}\n{script}\n")).unwrap();
    let mut c = Command::new("timeout");
    c.args(["180", "unshare", "-n", "-m", "--propagation", "private", "bash"]).arg(&path).arg(&d).env("NETWORKD", NETWORKD);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    fs::write(d.join("output"), &out).unwrap();
    assert!(o.status.success() && !out.contains("TIMEOUT"), "{name}: {out}\nnetworkd log:\n{}", tail(&d.join("networkd-1.log")));
    (t, d)
}

fn tail(p: &Path) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(40)..].join("\n")
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// `ADDR/PREFIX` of eth0's global addresses in an `ip -j addr` dump, and
/// each one's valid lifetime.
fn addresses(d: &Path, n: &str) -> Vec<(String, u64)> {
    let v = json(&d.join(format!("addr-{n}.json")));
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| (format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]), a["valid_life_time"].as_u64().unwrap_or(0)))
        .collect()
}

fn mtu(d: &Path, n: &str) -> u64 {
    json(&d.join(format!("addr-{n}.json")))[0]["mtu"].as_u64().unwrap()
}

/// `DST via GW` of the routes in an `ip -j route` dump.
fn routes(d: &Path, file: &str) -> Vec<String> {
    json(&d.join(file))
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some(format!("{} via {}", r["dst"].as_str()?, r["gateway"].as_str()?)))
        .collect()
}

/// What networkd logged about the files: no parse warning for any of
/// them (`FILE:LINE: …`), and it took the one for eth0.
fn check_log(d: &Path, n: &str, file: &str) {
    let log = fs::read_to_string(d.join(format!("networkd-{n}.log"))).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(".network:")).collect();
    assert!(warnings.is_empty(), "networkd warned about the rendered files:\n{}", warnings.join("\n"));
    assert!(
        log.contains(&format!("eth0: Configuring with /run/systemd/network/{file}.")),
        "{}",
        tail(&d.join(format!("networkd-{n}.log")))
    );
}

fn state(d: &Path, n: &str) -> String {
    fs::read_to_string(d.join(format!("state-{n}"))).unwrap()
}

/// No address of `addrs` was ever deleted.
fn never_deleted(d: &Path, addrs: &[&str]) {
    let mon = fs::read_to_string(d.join("monitor.log")).unwrap();
    for l in mon.lines().filter(|l| l.starts_with("Deleted")) {
        for a in addrs {
            assert!(!l.contains(&format!("inet {a}")) && !l.contains(&format!("inet6 {a}")), "{a} was deleted: {l}\n{mon}");
        }
    }
}

#[test]
fn static_v4_v6_routes_dns_mtu_survive_start_and_restart() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let h = Handover {
        source: "config drive".into(),
        links: vec![Link {
            name: "eth0".into(),
            mac: Some(MAC),
            mtu: Some(1400),
            addresses: vec![(ip("10.9.0.77"), 24), (ip("fd00::77"), 64)],
            routes: vec![
                Route { dest: ip("0.0.0.0"), prefix: 0, gateway: ip("10.9.0.1") },
                Route { dest: ip("192.168.0.0"), prefix: 16, gateway: ip("10.9.0.1") },
                Route { dest: ip("::"), prefix: 0, gateway: ip("fd00::1") },
                Route { dest: ip("fd00:1::"), prefix: 48, gateway: ip("fd00::1") },
            ],
            ..Link::default()
        }],
        dns: vec![ip("10.9.0.3"), ip("fd00::3")],
        domains: vec!["example.org".into(), "~corp.example".into()],
        keep_leases: false,
    };
    let files = render(&h);
    assert_eq!(files[0].0, "10-agent-eth0.network");
    // The agent's state: addresses with broadcast (as its netlink code
    // adds them), routes proto boot, the MTU.
    let script = r#"
ip link set eth0 mtu 1400 up
ip addr add 10.9.0.77/24 brd + dev eth0
ip -6 addr add fd00::77/64 dev eth0 nodad
ip route add default via 10.9.0.1 dev eth0 proto boot
ip route add 192.168.0.0/16 via 10.9.0.1 dev eth0 proto boot
ip -6 route add default via fd00::1 dev eth0 proto boot
ip -6 route add fd00:1::/48 via fd00::1 dev eth0 proto boot
nd_start 1; wait_state configured; dump 1; nd_stop
dump stopped
nd_start 2; wait_state configured; dump 2; nd_stop
"#;
    let (_t, d) = run_case("static", &files, script, &[]);
    for n in ["1", "2"] {
        check_log(&d, n, "10-agent-eth0.network");
        let st = state(&d, n);
        for want in [
            "NETWORK_FILE=/run/systemd/network/10-agent-eth0.network",
            "DNS=10.9.0.3 fd00::3",
            "DOMAINS=example.org",
            "ROUTE_DOMAINS=corp.example",
        ] {
            assert!(st.lines().any(|l| l == want), "{want} in state {n}:\n{st}");
        }
    }
    for n in ["1", "stopped", "2"] {
        let a: Vec<String> = addresses(&d, n).into_iter().map(|a| a.0).collect();
        assert_eq!(a, ["10.9.0.77/24", "fd00::77/64"], "addresses ({n})");
        assert_eq!(mtu(&d, n), 1400, "mtu ({n})");
        let r4 = routes(&d, &format!("route4-{n}.json"));
        assert!(r4.contains(&"192.168.0.0/16 via 10.9.0.1".to_string()), "{r4:?}");
        assert!(r4.contains(&"default via 10.9.0.1".to_string()), "{r4:?}");
        let r6 = routes(&d, &format!("route6-{n}.json"));
        assert!(r6.contains(&"fd00:1::/48 via fd00::1".to_string()) && r6.contains(&"default via fd00::1".to_string()), "{r6:?}");
    }
    never_deleted(&d, &["10.9.0.77/24", "fd00::77/64"]);
}

#[test]
fn dhcp_lease_is_kept_and_asked_for_again() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(bb) = busybox(t.path()) else {
        eprintln!("skipped: no busybox-static deb in {}/debs for udhcpd", common::cache().display());
        return;
    };
    let h = Handover {
        source: "DHCP".into(),
        links: vec![Link {
            name: "eth0".into(),
            mac: Some(MAC),
            dhcp4: Some(Dhcp4 { address: "10.9.0.55".parse().unwrap(), prefix: 24, router_used: true, lease_mtu: None }),
            ..Link::default()
        }],
        ..Handover::default()
    };
    let files = render(&h);
    // udhcpd hands out 10.9.0.50–60; the agent holds .55 for 3000 s with
    // the default route, as it leaves a lease at the switch.
    let script = r#"
cat > $D/udhcpd.conf <<EOF
interface peer0
start 10.9.0.50
end 10.9.0.60
max_leases 11
lease_file $D/udhcpd.leases
option subnet 255.255.255.0
option router 10.9.0.1
option dns 10.9.0.1
option lease 3600
EOF
touch $D/udhcpd.leases
nsenter -t $PEER -n $BUSYBOX udhcpd -f $D/udhcpd.conf > $D/udhcpd.log 2>&1 &
ip link set eth0 up
ip addr add 10.9.0.55/24 brd + dev eth0 valid_lft 3000 preferred_lft 3000
ip route add default via 10.9.0.1 dev eth0 proto boot
nd_start 1; wait_state configured; dump 1; nd_stop
dump stopped
nd_start 2; wait_state configured; dump 2; nd_stop
"#;
    let (_t2, d) = run_case("dhcp", &files, script, &[("BUSYBOX", &bb)]);
    let udhcpd = fs::read_to_string(d.join("udhcpd.log")).unwrap();
    assert!(udhcpd.contains("sending OFFER to 10.9.0.55"), "networkd asked for the agent's address:\n{udhcpd}");
    assert!(!udhcpd.lines().any(|l| l.contains("sending OFFER to") && !l.contains("10.9.0.55")), "{udhcpd}");
    for n in ["1", "2"] {
        check_log(&d, n, "10-agent-eth0.network");
        assert!(state(&d, n).lines().any(|l| l == "DNS=10.9.0.1"), "the lease's DNS:\n{}", state(&d, n));
    }
    for n in ["1", "stopped", "2"] {
        let a: Vec<String> = addresses(&d, n).into_iter().map(|a| a.0).collect();
        assert_eq!(a, ["10.9.0.55/24"], "one address, the agent's ({n})");
        assert!(routes(&d, &format!("route4-{n}.json")).contains(&"default via 10.9.0.1".to_string()));
    }
    never_deleted(&d, &["10.9.0.55/24"]);
}

#[test]
fn keep_leases_leaves_the_link_to_agent_dhcp() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let h = Handover {
        source: "DHCP".into(),
        links: vec![Link {
            name: "eth0".into(),
            mac: Some(MAC),
            dhcp4: Some(Dhcp4 { address: "10.9.0.55".parse().unwrap(), prefix: 24, router_used: true, lease_mtu: None }),
            ..Link::default()
        }],
        keep_leases: true,
        ..Handover::default()
    };
    let script = r#"
ip link set eth0 up
ip addr add 10.9.0.55/24 brd + dev eth0 valid_lft 3000 preferred_lft 3000
nd_start 1; wait_state unmanaged; dump 1; nd_stop
"#;
    let (_t, d) = run_case("keep-leases", &render(&h), script, &[]);
    let log = fs::read_to_string(d.join("networkd-1.log")).unwrap();
    assert!(!log.lines().any(|l| l.contains(".network:")), "{log}");
    assert!(
        log.contains("eth0: found matching network '/run/systemd/network/10-agent-eth0.network'.\neth0: Unmanaging interface."),
        "{}",
        tail(&d.join("networkd-1.log"))
    );
    let a = addresses(&d, "1");
    assert_eq!(a.len(), 1);
    assert!(a[0].0 == "10.9.0.55/24" && a[0].1 <= 3000, "the agent's address with its lifetime: {a:?}");
}
