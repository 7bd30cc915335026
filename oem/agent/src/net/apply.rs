//! Apply a [`NetConfig`] to the machine's NICs: match links by MAC, set the
//! MTU and bring them up, add static addresses and routes, run DHCPv4 where
//! asked, and leave IPv6 SLAAC to the kernel.
//!
//! [`apply_with`] does it through [`NetOps`] (rtnetlink in the guest, a
//! recorder in the fuzz target) on given interfaces with given DHCP
//! discoveries; [`apply`] is that with the machine's.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::discover::{Discovery, Outcome};
use super::lease::{self, Clock};
use super::netlink::Rtnl;
use super::networkd::{Dhcp4, Link};
use super::{dhcp, mac_text, parse_mac, v4_prefix, NetConfig, NetKind};
use crate::log;

/// How long one DHCP exchange may take before the caller's next fallback.
pub const DHCP_TIMEOUT: Duration = Duration::from_secs(12);

/// The changes [`apply_with`] and [`configure_lease`] make to the machine:
/// [`Rtnl`] (rtnetlink and the IPv6 sysctls) in the guest.
pub trait NetOps {
    /// Set the MTU (if given) and bring the link up.
    fn link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()>;
    /// Add (or replace) `addr/prefix`, valid for `secs` (`u32::MAX`: forever).
    fn add_address_for(&mut self, index: u32, addr: IpAddr, prefix: u8, secs: u32) -> io::Result<()>;
    /// Add (or replace) the route `dest/prefix` via `gateway` (or on-link).
    fn add_route(&mut self, index: u32, dest: IpAddr, prefix: u8, gateway: Option<IpAddr>) -> io::Result<()>;
    /// Let the kernel autoconfigure IPv6 from router advertisements on `ifname`.
    fn accept_ra(&mut self, ifname: &str);
}

impl NetOps for Rtnl {
    fn link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        Rtnl::link_up(self, index, mtu)
    }
    fn add_address_for(&mut self, index: u32, addr: IpAddr, prefix: u8, secs: u32) -> io::Result<()> {
        Rtnl::add_address_for(self, index, addr, prefix, secs)
    }
    fn add_route(&mut self, index: u32, dest: IpAddr, prefix: u8, gateway: Option<IpAddr>) -> io::Result<()> {
        Rtnl::add_route(self, index, dest, prefix, gateway)
    }
    fn accept_ra(&mut self, ifname: &str) {
        // accept_ra defaults to 1 without forwarding; set both anyway. The
        // name comes from /sys/class/net, never from the configuration.
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{ifname}/accept_ra"), "1");
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{ifname}/autoconf"), "1");
    }
}

/// A network interface as `/sys/class/net` shows it.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    /// ARPHRD_ETHER (type 1) and not loopback.
    pub ether: bool,
}

fn sys(name: &str, attr: &str) -> Option<String> {
    fs::read_to_string(format!("/sys/class/net/{name}/{attr}")).ok().map(|s| s.trim().to_string())
}

/// All interfaces, by ifindex.
pub fn interfaces() -> Vec<Iface> {
    let mut v: Vec<Iface> = fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let index = sys(&name, "ifindex")?.parse().ok()?;
                    let mac = sys(&name, "address").and_then(|a| parse_mac(&a));
                    let ether = sys(&name, "type").as_deref() == Some("1") && name != "lo";
                    Some(Iface { name, index, mac, ether })
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|i| i.index);
    v
}

/// The Ethernet interfaces, waiting up to `wait` for the first one to appear
/// (NIC drivers may still be probing).
pub fn ether_interfaces(wait: Duration) -> Vec<Iface> {
    let t = Instant::now();
    loop {
        let v: Vec<Iface> = interfaces().into_iter().filter(|i| i.ether).collect();
        if !v.is_empty() || t.elapsed() >= wait {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What got configured.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    /// One entry per configured network: `eth0 10.0.2.77/24`.
    pub summary: Vec<String>,
    pub dns: Vec<IpAddr>,
    /// Interfaces that hold a DHCP lease.
    pub dhcp: Vec<String>,
    /// What each interface got, in link order, for the hand-over to the
    /// root's networkd ([`super::networkd`]).
    pub links: Vec<Link>,
    /// The configuration's own name servers (without the leases').
    pub static_dns: Vec<IpAddr>,
}

/// A held lease as the hand-over describes it.
pub fn dhcp4_of(h: &lease::Held, lease_mtu_applied: bool) -> Dhcp4 {
    Dhcp4 {
        address: h.reply.yiaddr,
        prefix: h.prefix,
        router_used: h.owns_default_route,
        lease_mtu: h.reply.mtu.filter(|&m| lease_mtu_applied && m >= 576),
    }
}

/// Bring `lo` up (the kernel adds 127.0.0.1/8 and ::1 itself).
pub fn loopback_up(nl: &mut Rtnl) {
    if let Some(lo) = interfaces().into_iter().find(|i| i.name == "lo") {
        if let Err(e) = nl.link_up(lo.index, None) {
            log!("net: bringing lo up failed: {e}");
        }
    }
}

/// DHCP on one interface: up, lease, address (with the lease as its
/// lifetime), default route; the lease is recorded for renewal
/// ([`lease::held`]). Returns the summary line, the DNS servers and the
/// lease as the hand-over describes it.
/// `default_route`: whether the machine has a default route already (then
/// the lease's router does not replace it: with DHCP on several NICs the
/// first one's stays); set when this lease adds one.
pub fn dhcp_on(
    nl: &mut impl NetOps,
    i: &Iface,
    mtu: Option<u32>,
    default_route: &mut bool,
) -> Result<(String, Vec<IpAddr>, Dhcp4), String> {
    nl.link_up(i.index, mtu).map_err(|e| format!("bringing {} up: {e}", i.name))?;
    let o = Discovery::start(i, DHCP_TIMEOUT).wait();
    take_lease(nl, i, o, mtu, default_route)
}

/// Configure what a [`Discovery`] found on `i` (see [`dhcp_on`]). The
/// address lifetime is what is left of the lease now: the exchange may
/// have finished a while ago, while earlier NICs' were awaited.
fn take_lease(
    nl: &mut impl NetOps,
    i: &Iface,
    o: Outcome,
    mtu: Option<u32>,
    default_route: &mut bool,
) -> Result<(String, Vec<IpAddr>, Dhcp4), String> {
    let reply = o.result?;
    let now = lease::BootClock.now();
    let secs =
        lease::Timers::from_reply(&reply).map(|t| lease::lifetime_secs((o.start + t.lease).saturating_sub(now)).max(1)).unwrap_or(u32::MAX);
    let had_default = *default_route;
    let (mut line, prefix) = configure_lease(nl, i, &reply, mtu, secs, default_route)?;
    line.push_str(&format!(" ({} ms)", o.took.as_millis()));
    let dns = reply.dns.iter().copied().map(IpAddr::V4).collect();
    let owns_default_route = !had_default && *default_route;
    let held = lease::Held { iface: i.clone(), reply, start: o.start, prefix, owns_default_route };
    let d = dhcp4_of(&held, mtu.is_none());
    lease::held(held);
    Ok((line, dns, d))
}

/// Put a lease on the interface: the address valid for `secs` (`u32::MAX`:
/// forever), the lease's MTU unless `mtu` is set, the default route via the
/// first router unless `default_route` says there is one (set when this
/// adds it). Returns the summary line and the prefix length.
pub fn configure_lease(
    nl: &mut impl NetOps,
    i: &Iface,
    lease: &dhcp::Reply,
    mtu: Option<u32>,
    secs: u32,
    default_route: &mut bool,
) -> Result<(String, u8), String> {
    let prefix = lease.mask.and_then(v4_prefix).unwrap_or(24);
    nl.add_address_for(i.index, IpAddr::V4(lease.yiaddr), prefix, secs)
        .map_err(|e| format!("adding {}/{prefix} to {}: {e}", lease.yiaddr, i.name))?;
    if mtu.is_none() {
        if let Some(m) = lease.mtu.filter(|&m| m >= 576) {
            let _ = nl.link_up(i.index, Some(m.into()));
        }
    }
    let mut line = format!("{} {}/{prefix} by DHCP from {}", i.name, lease.yiaddr, lease.server.unwrap_or(Ipv4Addr::UNSPECIFIED));
    if secs != u32::MAX {
        line.push_str(&format!(" for {secs} s"));
    }
    if let Some(gw) = lease.routers.first().filter(|_| *default_route) {
        line.push_str(&format!(", router {gw} not used (default route already set)"));
    } else if let Some(gw) = lease.routers.first() {
        if !same_subnet(lease.yiaddr, *gw, prefix) {
            nl.add_route(i.index, IpAddr::V4(*gw), 32, None).map_err(|e| format!("on-link route to {gw}: {e}"))?;
        }
        nl.add_route(i.index, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, Some(IpAddr::V4(*gw)))
            .map_err(|e| format!("default route via {gw} on {}: {e}", i.name))?;
        line.push_str(&format!(", default via {gw}"));
        *default_route = true;
    }
    Ok((line, prefix))
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let m = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
    u32::from(a) & m == u32::from(b) & m
}

/// DHCP on the first Ethernet interface.
pub fn dhcp_first_link(nl: &mut Rtnl) -> Result<Applied, String> {
    let i = ether_interfaces(Duration::from_secs(2)).into_iter().next().ok_or("no Ethernet interface")?;
    let (line, dns, d) = dhcp_on(nl, &i, None, &mut false)?;
    let link = Link { name: i.name.clone(), mac: i.mac, dhcp4: Some(d), ..Link::default() };
    Ok(Applied { summary: vec![line], dns, dhcp: vec![i.name], links: vec![link], static_dns: Vec::new() })
}

/// Apply `cfg` to the machine's Ethernet interfaces over rtnetlink, with
/// real DHCP discoveries: [`apply_with`].
pub fn apply(nl: &mut Rtnl, cfg: &NetConfig, leased: &[String]) -> Result<Applied, String> {
    let ifaces = ether_interfaces(Duration::from_secs(2));
    apply_with(nl, &ifaces, cfg, leased, &|i: &Iface| Discovery::start(i, DHCP_TIMEOUT))
}

/// Apply `cfg` to `ifaces` (the Ethernet interfaces, by ifindex) through
/// `nl`, starting DHCP on an interface with `discover`. Interfaces in `leased` already hold a DHCP lease: an
/// `ipv4_dhcp` network on them is left as it is. Every link is matched
/// before anything is changed, so a configuration naming a NIC that is not
/// there changes nothing.
///
/// DHCP runs on every interface that needs it at once ([`Discovery`], one
/// thread each), started as soon as the links are up; the networks are
/// then configured in their order, each DHCP network when its discovery
/// is done. So the boot waits about as long as the slowest NIC (a NIC
/// without a DHCP server: [`DHCP_TIMEOUT`]), not the sum, and the result
/// is the same as one NIC after the other: the first lease in link order
/// sets the default route.
pub fn apply_with(
    nl: &mut impl NetOps,
    ifaces: &[Iface],
    cfg: &NetConfig,
    leased: &[String],
    discover: &dyn Fn(&Iface) -> Discovery,
) -> Result<Applied, String> {
    let mut matched: Vec<&Iface> = Vec::new();
    for l in &cfg.links {
        let i = match l.mac {
            Some(mac) => ifaces.iter().find(|i| i.mac == Some(mac)).ok_or_else(|| {
                let seen: Vec<String> =
                    ifaces.iter().map(|i| format!("{} {}", i.name, i.mac.map(|m| mac_text(&m)).unwrap_or_default())).collect();
                format!("link {}: no NIC has MAC {} (NICs: {})", l.id, mac_text(&mac), seen.join(", "))
            })?,
            None if cfg.links.len() == 1 => ifaces.first().ok_or_else(|| format!("link {}: no Ethernet interface", l.id))?,
            None => return Err(format!("link {} has no ethernet_mac_address and there are several links", l.id)),
        };
        matched.push(i);
    }
    let mut out = Applied { dns: cfg.dns.clone(), static_dns: cfg.dns.clone(), ..Applied::default() };
    // What each configured link got, for the hand-over: filled in as its
    // networks succeed (a link none of whose networks did gets no entry).
    let mut got: Vec<Option<Link>> = vec![None; cfg.links.len()];
    let new_link = |k: usize| Link { name: matched[k].name.clone(), mac: matched[k].mac, mtu: cfg.links[k].mtu, ..Link::default() };
    // A kept lease brought its default route.
    let mut default_route = !leased.is_empty();
    for (l, i) in cfg.links.iter().zip(&matched) {
        nl.link_up(i.index, l.mtu).map_err(|e| format!("bringing {} up (mtu {:?}): {e}", i.name, l.mtu))?;
        log!(
            "net: link {} is {} ({}), up{}",
            l.id,
            i.name,
            i.mac.map(|m| mac_text(&m)).unwrap_or_default(),
            l.mtu.map(|m| format!(", mtu {m}")).unwrap_or_default()
        );
    }
    // One discovery per interface that needs a lease, all started now.
    let mut asked: Vec<&str> = Vec::new();
    let mut discoveries: Vec<Option<Discovery>> = cfg
        .networks
        .iter()
        .map(|n| {
            let i = matched[n.link];
            if n.kind != NetKind::Dhcp4 || leased.contains(&i.name) || asked.contains(&i.name.as_str()) {
                return None;
            }
            asked.push(&i.name);
            Some(discover(i))
        })
        .collect();
    // An early return below drops the discoveries still running, which
    // waits for them: none outlives this step.
    for (n, discovery) in cfg.networks.iter().zip(discoveries.iter_mut()) {
        let i = matched[n.link];
        match &n.kind {
            NetKind::Static { addr, prefix, routes } => {
                nl.add_address_for(i.index, *addr, *prefix, u32::MAX).map_err(|e| format!("adding {addr}/{prefix} to {}: {e}", i.name))?;
                let mut line = format!("{} {addr}/{prefix}", i.name);
                for r in routes {
                    nl.add_route(i.index, r.dest, r.prefix, Some(r.gateway))
                        .map_err(|e| format!("route {}/{} via {} on {}: {e}", r.dest, r.prefix, r.gateway, i.name))?;
                    if r.prefix == 0 {
                        default_route |= r.dest.is_ipv4();
                        line.push_str(&format!(", default via {}", r.gateway));
                    } else {
                        line.push_str(&format!(", {}/{} via {}", r.dest, r.prefix, r.gateway));
                    }
                }
                log!("net: {}: {line}", n.id);
                out.summary.push(line);
                let l = got[n.link].get_or_insert_with(|| new_link(n.link));
                l.addresses.push((*addr, *prefix));
                l.routes.extend(routes.iter().cloned());
            }
            NetKind::Dhcp4 if leased.contains(&i.name) => {
                log!("net: {}: {} already holds a DHCP lease", n.id, i.name);
                out.summary.push(format!("{} DHCP (kept)", i.name));
                out.dhcp.push(i.name.clone());
                // The bootstrap lease (DHCP for the metadata service) was
                // taken without a configured MTU.
                if let Some(h) = lease::held_on(&i.name) {
                    got[n.link].get_or_insert_with(|| new_link(n.link)).dhcp4 = Some(dhcp4_of(&h, true));
                }
            }
            NetKind::Dhcp4 => {
                let Some(d) = discovery.take() else {
                    log!("net: {}: {} already asks for DHCP for an earlier network", n.id, i.name);
                    continue;
                };
                let mtu = cfg.links[n.link].mtu;
                let (line, dns, lease) = match take_lease(nl, i, d.wait(), mtu, &mut default_route) {
                    Ok(x) => x,
                    Err(e) if n.optional => {
                        log!("net: {}: DHCP on {} failed, skipped (optional): {e}", n.id, i.name);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                log!("net: {}: {line}", n.id);
                for d in dns {
                    if !out.dns.contains(&d) {
                        out.dns.push(d);
                    }
                }
                out.summary.push(line);
                out.dhcp.push(i.name.clone());
                got[n.link].get_or_insert_with(|| new_link(n.link)).dhcp4 = Some(lease);
            }
            NetKind::Slaac | NetKind::Dhcp6 => {
                if n.kind == NetKind::Dhcp6 {
                    log!("net: {}: DHCPv6 is not supported yet; using SLAAC on {}", n.id, i.name);
                }
                // The kernel autoconfigures from router advertisements on an
                // up link.
                nl.accept_ra(&i.name);
                log!("net: {}: {} IPv6 by SLAAC (kernel)", n.id, i.name);
                out.summary.push(format!("{} SLAAC", i.name));
                got[n.link].get_or_insert_with(|| new_link(n.link)).ipv6_ra = true;
            }
        }
    }
    out.links = got.into_iter().flatten().collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert!(same_subnet(a, Ipv4Addr::new(10, 0, 2, 2), 24));
        assert!(!same_subnet(a, Ipv4Addr::new(10, 0, 3, 2), 24));
        assert!(same_subnet(a, Ipv4Addr::new(1, 2, 3, 4), 0));
        assert!(!same_subnet(a, Ipv4Addr::new(10, 0, 2, 16), 32));
    }
}
