//! Guest networking from OpenStack `network_data.json` (or the same shape in
//! `/etc/agent/oem.json` `"network"`).
//!
//! [`parse`] turns the JSON into a validated [`NetConfig`] (pure, unit
//! tested): every link type, address and prefix is checked *before* anything
//! is applied, so bad metadata is refused as a whole with the reason and the
//! caller moves on to its next source. [`apply`] then does it over rtnetlink
//! ([`netlink`]), with [`dhcp`] for `ipv4_dhcp` networks (on all the NICs
//! that need it at once: [`discover`]) and [`lease`] to keep their leases;
//! [`networkd`] hands what was configured over to a root's systemd-networkd.

pub mod apply;
pub mod dhcp;
pub mod discover;
pub mod every;
pub mod lease;
pub mod netlink;
pub mod networkd;

pub use apply::{apply, dhcp_first_link, Applied};

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::thread::JoinHandle;

use serde::Deserialize;

/// Start a thread named `name` that blocks the signals PID 1 acts on
/// (shutdown requests, SIGCHLD), so those keep reaching the main thread's
/// `wait` (the discovery and lease threads use this).
pub(crate) fn spawn_quiet<T: Send + 'static>(name: String, f: impl FnOnce() -> T + Send + 'static) -> io::Result<JoinHandle<T>> {
    // SAFETY: sigset manipulation on local sets, and pthread_sigmask on the
    // calling thread; the old mask is restored right after the spawn (the
    // new thread inherits the blocked set).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let r = std::thread::Builder::new().name(name).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// A link (NIC) of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCfg {
    pub id: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// A route: `dest/prefix via gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dest: IpAddr,
    pub prefix: u8,
    pub gateway: IpAddr,
}

/// What one network asks of its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetKind {
    /// A static IPv4 or IPv6 address with its prefix length, and routes.
    Static {
        addr: IpAddr,
        prefix: u8,
        routes: Vec<Route>,
    },
    Dhcp4,
    Slaac,
    /// DHCPv6 (not supported yet: SLAAC is used instead).
    Dhcp6,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetCfg {
    pub id: String,
    /// Index into [`NetConfig::links`].
    pub link: usize,
    pub kind: NetKind,
    /// `"optional": true` (what [`every::expand`] writes for `"link": "*"`):
    /// failing to configure it is logged, not a failure of the whole
    /// configuration.
    pub optional: bool,
}

/// A validated `network_data.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetConfig {
    pub links: Vec<LinkCfg>,
    pub networks: Vec<NetCfg>,
    /// Name servers, in order, without duplicates.
    pub dns: Vec<IpAddr>,
}

#[derive(Deserialize)]
struct RawData {
    #[serde(default)]
    links: Vec<RawLink>,
    #[serde(default)]
    networks: Vec<RawNetwork>,
    #[serde(default)]
    services: Vec<RawService>,
}

#[derive(Deserialize)]
struct RawLink {
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    ethernet_mac_address: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
}

#[derive(Deserialize)]
struct RawNetwork {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    link: String,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    netmask: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    optional: bool,
}

#[derive(Deserialize)]
struct RawRoute {
    network: String,
    netmask: String,
    gateway: String,
}

#[derive(Deserialize)]
struct RawService {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

/// Link types that are one NIC the guest sees as an Ethernet device (what
/// Nova writes for the various virtual interface drivers). `bond` and
/// `vlan` need devices the agent does not create (yet) and are refused.
const PHYSICAL_LINK_TYPES: &[&str] = &[
    "phy",
    "ethernet",
    "bridge",
    "ovs",
    "tap",
    "vif",
    "vhostuser",
    "hw_veb",
    "hyperv",
    "dvs",
    "vrouter",
    "vdpa",
    "macvtap",
    "802.1qbg",
    "802.1qbh",
    "hostdev_physical",
    "infiniband",
    "midonet",
    "iovisor",
];

/// `aa:bb:cc:dd:ee:ff` (case-insensitive, `-` allowed).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A netmask (`255.255.255.0`, `ffff:ffff::`) or a bare prefix length
/// (`24`) as a prefix length; `None` if the mask is not contiguous or the
/// family does not match.
pub fn mask_to_prefix(mask: &str, v6: bool) -> Option<u8> {
    let mask = mask.trim();
    if let Ok(n) = mask.parse::<u8>() {
        return (n <= if v6 { 128 } else { 32 }).then_some(n);
    }
    let bits: u128 = match mask.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if !v6 => (u32::from(a) as u128) << 96,
        IpAddr::V6(a) if v6 => u128::from(a),
        _ => return None,
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// `ip_address` (optionally `addr/prefix`) plus `netmask` → (address, prefix).
fn address_with_prefix(ip: &str, netmask: Option<&str>) -> Result<(IpAddr, u8), String> {
    let (a, p) = match ip.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (ip, None),
    };
    let addr: IpAddr = a.trim().parse().map_err(|_| format!("ip_address {ip:?} is not an IP address"))?;
    let v6 = addr.is_ipv6();
    let prefix = match (p, netmask) {
        (Some(p), _) => mask_to_prefix(p, v6).ok_or_else(|| format!("bad prefix in ip_address {ip:?}"))?,
        (None, Some(m)) => mask_to_prefix(m, v6).ok_or_else(|| format!("netmask {m:?} does not fit {ip:?}"))?,
        (None, None) => return Err(format!("ip_address {ip:?} has neither a /prefix nor a netmask")),
    };
    Ok((addr, prefix))
}

/// Parse and validate a `network_data.json`. The error says what was wrong
/// and where (`links[0].type`, `networks[1].ip_address`, …).
pub fn parse(json: &str) -> Result<NetConfig, String> {
    let raw: RawData = serde_json::from_str(json).map_err(|e| format!("not valid network_data JSON: {e}"))?;
    let mut cfg = NetConfig::default();
    for (i, l) in raw.links.iter().enumerate() {
        let kind = l.kind.as_deref().unwrap_or("phy");
        if !PHYSICAL_LINK_TYPES.contains(&kind) {
            return Err(format!("links[{i}] ({}): link type {kind:?} is not supported", l.id));
        }
        let mac = match &l.ethernet_mac_address {
            Some(s) => Some(parse_mac(s).ok_or_else(|| format!("links[{i}].ethernet_mac_address {s:?} is not a MAC address"))?),
            None => None,
        };
        if let Some(m) = l.mtu {
            if !(68..=65535).contains(&m) {
                return Err(format!("links[{i}].mtu {m} is out of range"));
            }
        }
        cfg.links.push(LinkCfg { id: l.id.clone(), mac, mtu: l.mtu });
    }
    let mut dns: Vec<IpAddr> = Vec::new();
    let mut add_dns = |s: &RawService, at: &str| -> Result<(), String> {
        if s.kind == "dns" {
            let a: IpAddr = s.address.trim().parse().map_err(|_| format!("{at}: dns address {:?} is not an IP address", s.address))?;
            if !dns.contains(&a) {
                dns.push(a);
            }
        }
        Ok(())
    };
    for (i, n) in raw.networks.iter().enumerate() {
        let at = format!("networks[{i}]");
        let link = cfg.links.iter().position(|l| l.id == n.link).ok_or_else(|| format!("{at}.link {:?} names no link", n.link))?;
        let kind = match n.kind.as_str() {
            "ipv4" | "ipv6" => {
                let ip = n.ip_address.as_deref().ok_or_else(|| format!("{at}: type {} without ip_address", n.kind))?;
                let (addr, prefix) = address_with_prefix(ip, n.netmask.as_deref()).map_err(|e| format!("{at}: {e}"))?;
                if addr.is_ipv6() != (n.kind == "ipv6") {
                    return Err(format!("{at}: type {} with address {addr}", n.kind));
                }
                let mut routes = Vec::new();
                for (j, r) in n.routes.iter().enumerate() {
                    let dest: IpAddr =
                        r.network.parse().map_err(|_| format!("{at}.routes[{j}].network {:?} is not an IP address", r.network))?;
                    let gateway: IpAddr =
                        r.gateway.parse().map_err(|_| format!("{at}.routes[{j}].gateway {:?} is not an IP address", r.gateway))?;
                    let prefix = mask_to_prefix(&r.netmask, dest.is_ipv6())
                        .ok_or_else(|| format!("{at}.routes[{j}].netmask {:?} does not fit {dest}", r.netmask))?;
                    if gateway.is_ipv6() != dest.is_ipv6() || dest.is_ipv6() != addr.is_ipv6() {
                        return Err(format!("{at}.routes[{j}]: address families differ"));
                    }
                    routes.push(Route { dest, prefix, gateway });
                }
                NetKind::Static { addr, prefix, routes }
            }
            "ipv4_dhcp" => NetKind::Dhcp4,
            "ipv6_slaac" => NetKind::Slaac,
            "ipv6_dhcp" | "ipv6_dhcpv6-stateful" | "ipv6_dhcpv6-stateless" => NetKind::Dhcp6,
            other => return Err(format!("{at}.type {other:?} is not a known network type")),
        };
        for s in &n.services {
            add_dns(s, &format!("{at}.services"))?;
        }
        cfg.networks.push(NetCfg { id: n.id.clone().unwrap_or_else(|| format!("network{i}")), link, kind, optional: n.optional });
    }
    for (i, s) in raw.services.iter().enumerate() {
        add_dns(s, &format!("services[{i}]"))?;
    }
    cfg.dns = dns;
    Ok(cfg)
}

/// The `/etc/resolv.conf` text for `dns` (empty if there are none).
pub fn resolv_conf(dns: &[IpAddr]) -> String {
    let mut s = String::new();
    for d in dns.iter().take(3) {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

/// IPv4 netmask bits → prefix (for DHCP's subnet mask option).
pub fn v4_prefix(mask: Ipv4Addr) -> Option<u8> {
    mask_to_prefix(&mask.to_string(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "links": [
        {"id": "tap1", "type": "ovs", "ethernet_mac_address": "52:54:00:12:34:56", "mtu": 1450, "vif_id": "x"},
        {"id": "tap2", "type": "phy", "ethernet_mac_address": "FA:16:3E:00:00:02"}
      ],
      "networks": [
        {"id": "net0", "type": "ipv4", "link": "tap1", "ip_address": "10.0.2.77", "netmask": "255.255.255.0",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}],
         "services": [{"type": "dns", "address": "10.0.2.3"}], "network_id": "abc"},
        {"id": "net1", "type": "ipv6", "link": "tap1", "ip_address": "fd00::5/64",
         "routes": [{"network": "::", "netmask": "::", "gateway": "fd00::1"}]},
        {"id": "net2", "type": "ipv4_dhcp", "link": "tap2"},
        {"id": "net3", "type": "ipv6_slaac", "link": "tap2"}
      ],
      "services": [{"type": "dns", "address": "8.8.8.8"}, {"type": "dns", "address": "10.0.2.3"}, {"type": "ntp", "address": "x"}]
    }"#;

    #[test]
    fn openstack_sample() {
        let c = parse(SAMPLE).unwrap();
        assert_eq!(c.links[0], LinkCfg { id: "tap1".into(), mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]), mtu: Some(1450) });
        assert_eq!(c.links[1].mac, Some([0xfa, 0x16, 0x3e, 0, 0, 2]));
        assert_eq!(
            c.networks[0].kind,
            NetKind::Static {
                addr: "10.0.2.77".parse().unwrap(),
                prefix: 24,
                routes: vec![Route { dest: "0.0.0.0".parse().unwrap(), prefix: 0, gateway: "10.0.2.2".parse().unwrap() }]
            }
        );
        match &c.networks[1].kind {
            NetKind::Static { addr, prefix, routes } => {
                assert_eq!((addr.to_string().as_str(), *prefix, routes[0].prefix), ("fd00::5", 64, 0));
            }
            k => panic!("{k:?}"),
        }
        assert_eq!((c.networks[2].link, &c.networks[2].kind), (1, &NetKind::Dhcp4));
        assert_eq!(c.networks[3].kind, NetKind::Slaac);
        let dns: Vec<String> = c.dns.iter().map(|d| d.to_string()).collect();
        assert_eq!(dns, ["10.0.2.3", "8.8.8.8"]);
        assert_eq!(resolv_conf(&c.dns), "nameserver 10.0.2.3\nnameserver 8.8.8.8\n");
    }

    #[test]
    fn masks() {
        assert_eq!(mask_to_prefix("255.255.255.0", false), Some(24));
        assert_eq!(mask_to_prefix("255.255.0.0", false), Some(16));
        assert_eq!(mask_to_prefix("0.0.0.0", false), Some(0));
        assert_eq!(mask_to_prefix("255.255.255.255", false), Some(32));
        assert_eq!(mask_to_prefix("255.0.255.0", false), None);
        assert_eq!(mask_to_prefix("ffff:ffff:ffff:ffff::", true), Some(64));
        assert_eq!(mask_to_prefix("ffff:ffff:ffff:ffff::", false), None);
        assert_eq!(mask_to_prefix("24", false), Some(24));
        assert_eq!(mask_to_prefix("33", false), None);
        assert_eq!(mask_to_prefix("128", true), Some(128));
    }

    #[test]
    fn bad_metadata_is_refused_with_the_reason() {
        let e = parse("{ not json").unwrap_err();
        assert!(e.contains("not valid network_data JSON"), "{e}");
        let e = parse(r#"{"links":[{"id":"b","type":"bond"}]}"#).unwrap_err();
        assert!(e.contains("links[0]") && e.contains("bond"), "{e}");
        let e = parse(r#"{"links":[{"id":"a"}],"networks":[{"type":"ipv4","link":"a","ip_address":"10.0.0.2"}]}"#).unwrap_err();
        assert!(e.contains("networks[0]") && e.contains("neither"), "{e}");
        let e = parse(r#"{"links":[{"id":"a"}],"networks":[{"type":"ipv4","link":"b","ip_address":"10.0.0.2/8"}]}"#).unwrap_err();
        assert!(e.contains("names no link"), "{e}");
        let e = parse(r#"{"links":[{"id":"a"}],"networks":[{"type":"ipv9","link":"a"}]}"#).unwrap_err();
        assert!(e.contains("ipv9"), "{e}");
        let e = parse(r#"{"links":[{"id":"a","ethernet_mac_address":"zz"}]}"#).unwrap_err();
        assert!(e.contains("MAC"), "{e}");
        let e = parse(r#"{"links":[{"id":"a"}],"networks":[{"type":"ipv4","link":"a","ip_address":"10.0.0.2","netmask":"255.0.255.0"}]}"#)
            .unwrap_err();
        assert!(e.contains("netmask"), "{e}");
        // A prefix in the address is enough.
        let c = parse(r#"{"links":[{"id":"a"}],"networks":[{"type":"ipv4","link":"a","ip_address":"10.0.0.2/8"}]}"#).unwrap();
        assert_eq!(c.networks[0].kind, NetKind::Static { addr: "10.0.0.2".parse().unwrap(), prefix: 8, routes: vec![] });
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("52-54-00-AB-cd-EF"), Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:xyz"), None);
        assert_eq!(mac_text(&[0x52, 0x54, 0, 0xab, 0xcd, 0xef]), "52:54:00:ab:cd:ef");
    }
}
