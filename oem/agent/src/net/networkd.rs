//! The network hand-over to systemd-networkd (root mode).
//!
//! When the root that the agent switches into has systemd-networkd, the
//! agent writes what it configured (from `network_data.json`, the OEM
//! network or DHCP) as `.network` files in `/run/systemd/network/`, as
//! CoreOS's afterburn does, so that networkd keeps the same addresses,
//! routes, DNS and MTU after switch_root and after a restart of networkd.
//! `/run` is the agent's tmpfs, moved into the root at the switch, so the
//! files are where networkd reads them (`/run/systemd/network` sorts between
//! `/etc/systemd/network` and `/usr/lib/systemd/network`).
//!
//! **When:** the root has `usr/lib/systemd/systemd-networkd` or
//! `lib/systemd/systemd-networkd` (an executable file, symlinks followed
//! inside the root). Whether the unit is enabled is only recorded: a unit
//! enabled by a preset at first boot, or started by hand, would find the
//! files, and files that nobody reads cost a few hundred bytes of tmpfs,
//! while a networkd without them would leave the link to a distribution's
//! catch-all `.network` (DHCP on every NIC) and drop a static address.
//!
//! **What** ([`render`], pure): one file per configured interface,
//! `10-agent-<ifname>.network` (sorts before distribution defaults):
//!
//! * `[Match] MACAddress=` + `Type=ether` (not `Name=`: udev in the root may
//!   rename the NIC; `Type=ether` keeps VLANs, bonds and bridges that carry
//!   the same MAC out), or `Name=` when the NIC has no MAC;
//! * `[Link] MTUBytes=` when the configuration set an MTU;
//! * `[Network]`: `Address=` for each static address, `Gateway=` for each
//!   default route, `DNS=` (the configuration's name servers), `Domains=`,
//!   `IPv6AcceptRA=yes` for SLAAC networks; for a DHCP link `DHCP=ipv4` and
//!   `KeepConfiguration=dhcp`: networkd keeps the address the agent leased
//!   and asks the server for it again (`dhcp-on-stop` would not: systemd
//!   252 then takes a new lease beside the agent's address, which may be a
//!   different one); the price, as systemd.network(5) says, is that
//!   networkd does not drop the address when a lease ends unrenewed;
//! * `[Route]` for every other route (`Destination=`, `Gateway=`);
//! * `[DHCPv4]` for a DHCP link: `ClientIdentifier=mac` (the agent's
//!   client sends none: the server knows the lease by MAC, not by
//!   networkd's machine-id based DUID), `UseHostname=false` (the hostname
//!   is the cloud's), `UseMTU=true` when the agent took the lease's MTU,
//!   `UseGateway=false` when the agent did not use this lease's router
//!   (another NIC's lease set the default route first).
//!
//! **The name stays.** Beside each `.network` file that matches by MAC
//! goes `10-agent-<ifname>.link` (`[Match] MACAddress=`, `[Link]
//! Name=<ifname>`, `NamePolicy=` empty): the interface is up when the root
//! starts, the kernel refuses to rename an interface that is up, and udev's
//! attempt to give it a predictable name (`ens3`) would leave it marked as
//! being renamed, so networkd would wait for it ("pending") and
//! `systemd-networkd-wait-online` would time out. The name the agent
//! configured is the name the cloud's configuration and the user's
//! `[Match] Name=eth0` files use. The `.link` keeps the alternative names
//! (`enp0s3`, `ens3`) as `altname`s.
//!
//! With the OEM key `keep_leases: true`, `agent-dhcp` keeps renewing the
//! leases after the switch, so a DHCP interface gets `[Link]
//! Unmanaged=yes` instead: two DHCP clients on one NIC would fight.
//!
//! networkd's INI format has no escaping, so only values that are safe as
//! they are get written: addresses are typed; an interface name outside
//! `[A-Za-z0-9_.@+-]{1,15}` is not used (the MAC matches, the file is named
//! after the MAC; without a MAC the link is skipped); a domain outside the
//! DNS name characters is skipped; each skip has a reason that the caller
//! logs. [`render`] never panics, whatever its input.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{mac_text, Route};
use crate::log;

/// Where networkd reads runtime `.network` files (in the root's view, and
/// in the agent's: `/run` is moved into the root at the switch).
pub const NETWORK_DIR: &str = "/run/systemd/network";
/// The step's record.
pub const RECORD: &str = "/run/agent/networkd.json";
/// Where a root has networkd, relative to the root.
pub const NETWORKD_PATHS: &[&str] = &["/usr/lib/systemd/systemd-networkd", "/lib/systemd/systemd-networkd"];

/// A DHCPv4 lease the agent holds on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp4 {
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// Whether the agent added this lease's router as the default route.
    pub router_used: bool,
    /// The lease's MTU, when the agent set it on the link (no MTU in the
    /// configuration).
    pub lease_mtu: Option<u16>,
}

/// What the agent configured on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// The kernel's interface name.
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// The MTU the configuration set (`links[].mtu`).
    pub mtu: Option<u32>,
    /// Static addresses with their prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Static routes; prefix 0 is a default route.
    pub routes: Vec<Route>,
    pub dhcp4: Option<Dhcp4>,
    /// IPv6 by router advertisements (`ipv6_slaac`, and `ipv6_dhcp`, which
    /// the agent does as SLAAC).
    pub ipv6_ra: bool,
}

impl Link {
    /// A short description for the log and the record: `10.0.2.77/24,
    /// default via 10.0.2.2, DHCP 10.0.2.15/24`.
    pub fn summary(&self) -> Vec<String> {
        let mut v: Vec<String> = self.addresses.iter().map(|(a, p)| format!("{a}/{p}")).collect();
        for r in &self.routes {
            v.push(if r.prefix == 0 { format!("default via {}", r.gateway) } else { format!("{}/{} via {}", r.dest, r.prefix, r.gateway) });
        }
        if let Some(d) = &self.dhcp4 {
            v.push(format!("DHCP {}/{}", d.address, d.prefix));
        }
        if self.ipv6_ra {
            v.push("IPv6 RA".into());
        }
        if let Some(m) = self.mtu {
            v.push(format!("mtu {m}"));
        }
        v
    }
}

/// Everything the hand-over renders.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handover {
    /// Where the configuration came from (`config drive`, `DHCP`, …), for
    /// the files' comment.
    pub source: String,
    pub links: Vec<Link>,
    /// The configuration's name servers (`network_data.json` `services`),
    /// on every link; DHCP links also take the lease's.
    pub dns: Vec<IpAddr>,
    /// Search domains (`~` prefix: routing only), on every link.
    pub domains: Vec<String>,
    /// OEM `keep_leases: true`: agent-dhcp keeps the leases after the
    /// switch, and networkd leaves DHCP interfaces alone.
    pub keep_leases: bool,
}

/// One rendered `.network` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFile {
    /// The file name (no directory).
    pub name: String,
    pub contents: String,
    /// The interface it is for.
    pub interface: String,
    /// What it configures, for the log and the record.
    pub what: Vec<String>,
}

/// What [`render_all`] made and what it left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    pub files: Vec<NetworkFile>,
    /// `10-agent-<ifname>.link`, one per file of `files` that matches by
    /// MAC: the interface keeps the agent's name (see the module docs).
    pub link_files: Vec<NetworkFile>,
    /// One reason per value or link left out.
    pub skipped: Vec<String>,
}

/// An interface name that can go into a file name and `Name=` as it is
/// (the kernel allows more: no `/`, `:` or white space, up to 15 bytes).
pub fn ifname_ok(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'+' | b'-'))
}

/// A search domain (`~` first for a routing-only one) that can go into
/// `Domains=` as it is: DNS name characters, at most 253 of them.
pub fn domain_ok(s: &str) -> bool {
    let d = s.strip_prefix('~').unwrap_or(s);
    (1..=253).contains(&d.len())
        && !d.starts_with('.')
        && !d.contains("..")
        && d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Text for a comment line: printable ASCII only, at most 200 characters.
fn comment_text(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

fn prefix_fits(a: &IpAddr, prefix: u8) -> bool {
    prefix <= if a.is_ipv6() { 128 } else { 32 }
}

/// The `.network` files for `h`: [`render_all`]'s files as (file name,
/// contents).
pub fn render(h: &Handover) -> Vec<(String, String)> {
    render_all(h).files.into_iter().map(|f| (f.name, f.contents)).collect()
}

/// Render every link of `h` (see the module docs for the format), with a
/// reason for whatever was left out.
pub fn render_all(h: &Handover) -> Rendered {
    let mut out = Rendered::default();
    let show = |l: &Link| if ifname_ok(&l.name) { l.name.clone() } else { format!("{:?}", comment_text(&l.name)) };
    let dns: Vec<IpAddr> = h.dns.iter().fold(Vec::new(), |mut v, d| {
        if !v.contains(d) {
            v.push(*d);
        }
        v
    });
    let mut domains = Vec::new();
    for d in &h.domains {
        if domain_ok(d) {
            if !domains.contains(d) {
                domains.push(d.clone());
            }
        } else {
            out.skipped.push(format!("domain {:?}: not a DNS name networkd's Domains= can take as it is; left out", comment_text(d)));
        }
    }
    for l in &h.links {
        let (file_stem, matcher) = match (ifname_ok(&l.name), l.mac) {
            (true, Some(mac)) => (l.name.clone(), format!("MACAddress={}\nType=ether\n", mac_text(&mac))),
            (false, Some(mac)) => {
                out.skipped.push(format!(
                    "interface {}: the name has characters a .network file cannot carry; matched by MAC {} only",
                    show(l),
                    mac_text(&mac)
                ));
                (mac_text(&mac).replace(':', ""), format!("MACAddress={}\nType=ether\n", mac_text(&mac)))
            }
            (true, None) => (l.name.clone(), format!("Name={}\n", l.name)),
            (false, None) => {
                out.skipped.push(format!("interface {}: neither a usable name nor a MAC to match it by; no file", show(l)));
                continue;
            }
        };
        let name = format!("10-agent-{file_stem}.network");
        if out.files.iter().any(|f| f.name == name) {
            out.skipped.push(format!("interface {}: {name} is already written for an earlier link; left out", show(l)));
            continue;
        }
        if let (true, Some(mac)) = (ifname_ok(&l.name), l.mac) {
            out.link_files.push(NetworkFile {
                name: format!("10-agent-{}.link", l.name),
                contents: format!(
                    "# Written by the guest agent before switch_root: {n} is up, and the kernel cannot rename\n\
                     # an interface that is up, so it keeps the name the agent configured.\n\
                     [Match]\nMACAddress={m}\nType=ether\n\n\
                     [Link]\nNamePolicy=\nName={n}\nAlternativeNamesPolicy=database onboard slot path\nMACAddressPolicy=none\n",
                    n = l.name,
                    m = mac_text(&mac)
                ),
                interface: l.name.clone(),
                what: vec![format!("keeps the name {}", l.name)],
            });
        }
        let mut s = String::new();
        s.push_str(&format!(
            "# Written by the guest agent before switch_root: what it configured on {}\n# (source: {}). A file of the same name in /etc/systemd/network replaces it.\n",
            show(l),
            comment_text(&h.source)
        ));
        s.push_str("[Match]\n");
        s.push_str(&matcher);
        let mut what = Vec::new();
        if h.keep_leases && l.dhcp4.is_some() {
            s.push_str("\n# OEM keep_leases: agent-dhcp keeps renewing the lease; networkd leaves the link alone.\n");
            s.push_str("[Link]\nUnmanaged=yes\n");
            what.push("unmanaged (agent-dhcp keeps the lease)".to_string());
            what.extend(l.summary());
            out.files.push(NetworkFile { name, contents: s, interface: l.name.clone(), what });
            continue;
        }
        let mtu = l.mtu.filter(|m| {
            let ok = (68..=65535).contains(m);
            if !ok {
                out.skipped.push(format!("interface {}: MTU {m} is out of range; left out", show(l)));
            }
            ok
        });
        if let Some(m) = mtu {
            s.push_str(&format!("\n[Link]\nMTUBytes={m}\n"));
        }
        s.push_str("\n[Network]\n");
        if let Some(d) = &l.dhcp4 {
            s.push_str("DHCP=ipv4\n");
            s.push_str(&format!("# Keep the agent's lease on {}/{} and ask the server for it again.\n", d.address, d.prefix));
            s.push_str("KeepConfiguration=dhcp\n");
        }
        for (a, p) in &l.addresses {
            if prefix_fits(a, *p) {
                s.push_str(&format!("Address={a}/{p}\n"));
            } else {
                out.skipped.push(format!("interface {}: address {a}/{p}: the prefix does not fit; left out", show(l)));
            }
        }
        let fits = |r: &Route| prefix_fits(&r.dest, r.prefix) && r.dest.is_ipv6() == r.gateway.is_ipv6();
        for r in l.routes.iter().filter(|r| r.prefix == 0 && fits(r)) {
            s.push_str(&format!("Gateway={}\n", r.gateway));
        }
        for d in &dns {
            s.push_str(&format!("DNS={d}\n"));
        }
        if !domains.is_empty() {
            s.push_str(&format!("Domains={}\n", domains.join(" ")));
        }
        if l.ipv6_ra {
            s.push_str("IPv6AcceptRA=yes\n");
        }
        for r in &l.routes {
            if !fits(r) {
                out.skipped.push(format!(
                    "interface {}: route {}/{} via {}: prefix or family does not fit; left out",
                    show(l),
                    r.dest,
                    r.prefix,
                    r.gateway
                ));
            } else if r.prefix > 0 {
                s.push_str(&format!("\n[Route]\nDestination={}/{}\nGateway={}\n", r.dest, r.prefix, r.gateway));
            }
        }
        if let Some(d) = &l.dhcp4 {
            s.push_str("\n[DHCPv4]\nClientIdentifier=mac\nUseHostname=false\n");
            if mtu.is_none() && d.lease_mtu.is_some() {
                s.push_str("UseMTU=true\n");
            }
            if !d.router_used {
                s.push_str("UseGateway=false\n");
            }
        }
        what.extend(l.summary());
        out.files.push(NetworkFile { name, contents: s, interface: l.name.clone(), what });
    }
    out
}

// ------------------------------------------------------------------- I/O

/// Where the root has networkd (one of [`NETWORKD_PATHS`]), if anywhere.
pub fn find_networkd(root: &Path) -> Option<&'static str> {
    NETWORKD_PATHS.iter().copied().find(|p| crate::boot::exists_in_root(root, p))
}

/// The `*.wants` directories (relative to the root) that enable
/// `systemd-networkd.service` in `etc/systemd/system`, `usr/lib/systemd/system`
/// or `lib/systemd/system`. For the record only.
pub fn enabled_by(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for dir in ["etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"] {
        let Ok(rd) = fs::read_dir(root.join(dir)) else { continue };
        let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for n in names.into_iter().filter(|n| n.ends_with(".wants")) {
            let unit = root.join(dir).join(&n).join("systemd-networkd.service");
            if fs::symlink_metadata(&unit).is_ok() {
                v.push(format!("{dir}/{n}"));
            }
        }
    }
    v
}

/// Write `files` into `dir` (made 0755 if missing), each 0644.
pub fn write_files<'a>(dir: &Path, files: impl IntoIterator<Item = &'a NetworkFile>) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for f in files {
        let p = dir.join(&f.name);
        fs::write(&p, &f.contents)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// The hand-over step, before the root switch: detect networkd in `root`,
/// write the files into `dir` (the agent's [`NETWORK_DIR`]), and return
/// the record (also written to `record` by [`run`]). `None`: nothing was
/// configured.
pub fn hand_over(root: &Path, dir: &Path, h: Option<&Handover>) -> serde_json::Value {
    use serde_json::json;
    let networkd = find_networkd(root);
    let enabled = enabled_by(root);
    let mut rec = json!({
        "networkd": networkd,
        "enabled_by": enabled,
        "dir": NETWORK_DIR,
        "source": h.map(|h| h.source.clone()),
        "files": [],
        "skipped": [],
    });
    let Some(nd) = networkd else {
        log!("networkd: the root has no systemd-networkd ({}): no .network files written", NETWORKD_PATHS.join(", "));
        rec["reason"] = json!("no systemd-networkd in the root");
        return rec;
    };
    let enabled_text =
        if enabled.is_empty() { "not enabled in a .wants directory".to_string() } else { format!("enabled in {}", enabled.join(", ")) };
    let Some(h) = h.filter(|h| !h.links.is_empty()) else {
        log!("networkd: the root has {nd} ({enabled_text}), but the agent configured no interface: no .network files written");
        rec["reason"] = json!("no interface configured");
        return rec;
    };
    if !root.join("run").is_dir() {
        log!("networkd: the root has {nd} but no /run, so the agent's /run is not moved into it: no .network files written");
        rec["reason"] = json!("the root has no /run");
        return rec;
    }
    let mut r = render_all(h);
    let own = user_network_files(root, dir);
    if !own.is_empty() {
        log!(
            "networkd: the user's own .network files ({}): the agent writes none, only the .link files that keep the names",
            own.join(", ")
        );
        rec["user_files"] = json!(own);
        r.files.clear();
    }
    for s in &r.skipped {
        log!("networkd: {s}");
    }
    rec["skipped"] = json!(r.skipped);
    rec["files"] = r.files.iter().chain(&r.link_files).map(|f| json!({"name": f.name, "interface": f.interface, "what": f.what})).collect();
    match write_files(dir, r.files.iter().chain(&r.link_files)) {
        Ok(()) => {
            let list: Vec<String> =
                r.files.iter().chain(&r.link_files).map(|f| format!("{} ({}: {})", f.name, f.interface, f.what.join(", "))).collect();
            log!(
                "networkd: the root has {nd} ({enabled_text}): wrote {} in {} for it to keep: {}; record {RECORD}",
                if r.files.len() + r.link_files.len() == 1 {
                    "1 file".to_string()
                } else {
                    format!("{} files", r.files.len() + r.link_files.len())
                },
                NETWORK_DIR,
                list.join("; ")
            );
        }
        Err(e) => {
            log!("networkd: writing the .network files in {} failed: {e}", dir.display());
            rec["reason"] = json!(format!("writing failed: {e}"));
            rec["files"] = json!([]);
        }
    }
    rec
}

/// The user's `.network` files: those in the root's `/etc/systemd/network`
/// (the image's, or what Ignition wrote there) and those in `run` (the
/// agent's `/run/systemd/network`) that are not the agent's own (a
/// cloud-config unit with `runtime: true`). The agent's files sort first and
/// would override them. Paths as the booted system sees them, sorted.
pub fn user_network_files(root: &Path, run: &Path) -> Vec<String> {
    let list = |dir: &Path, shown: &str| -> Vec<String> {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".network") && !n.starts_with("10-agent-"))
                    .map(|n| format!("{shown}/{n}"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut v = list(&root.join("etc/systemd/network"), "/etc/systemd/network");
    v.extend(list(run, NETWORK_DIR));
    v.sort();
    v
}

/// [`hand_over`] for the real root and `/run`, with the record written to
/// [`RECORD`].
pub fn run(root: &Path, h: Option<&Handover>) {
    let rec = hand_over(root, Path::new(NETWORK_DIR), h);
    let text = serde_json::to_string_pretty(&rec).unwrap_or_default() + "\n";
    if let Err(e) = fs::create_dir_all("/run/agent").and_then(|_| fs::write(RECORD, text)) {
        log!("networkd: writing {RECORD} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(d: &str, p: u8, g: &str) -> Route {
        Route { dest: ip(d), prefix: p, gateway: ip(g) }
    }

    fn one(h: &Handover) -> String {
        let r = render_all(h);
        assert_eq!(r.files.len(), 1, "{r:?}");
        r.files[0].contents.clone()
    }

    /// The lines of a file without its comments.
    fn lines(s: &str) -> Vec<&str> {
        s.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn static_v4_with_dns_and_mtu() {
        let h = Handover {
            source: "config drive".into(),
            links: vec![Link {
                name: "eth0".into(),
                mac: Some(MAC),
                mtu: Some(1450),
                addresses: vec![(ip("10.0.2.77"), 24)],
                routes: vec![route("0.0.0.0", 0, "10.0.2.2")],
                ..Link::default()
            }],
            dns: vec![ip("10.0.2.3"), ip("8.8.8.8"), ip("10.0.2.3")],
            ..Handover::default()
        };
        let r = render_all(&h);
        assert_eq!(r.files[0].name, "10-agent-eth0.network");
        assert_eq!(r.files[0].interface, "eth0");
        assert_eq!(r.files[0].what, ["10.0.2.77/24", "default via 10.0.2.2", "mtu 1450"]);
        assert!(r.skipped.is_empty());
        assert!(r.files[0]
            .contents
            .starts_with("# Written by the guest agent before switch_root: what it configured on eth0\n# (source: config drive)."));
        assert_eq!(
            lines(&r.files[0].contents),
            [
                "[Match]",
                "MACAddress=52:54:00:12:34:56",
                "Type=ether",
                "",
                "[Link]",
                "MTUBytes=1450",
                "",
                "[Network]",
                "Address=10.0.2.77/24",
                "Gateway=10.0.2.2",
                "DNS=10.0.2.3",
                "DNS=8.8.8.8",
            ]
        );
        assert_eq!(render(&h), vec![("10-agent-eth0.network".to_string(), r.files[0].contents.clone())]);
        // The NIC keeps its name: udev in the root would rename it, and cannot while it is up.
        assert_eq!(r.link_files.len(), 1);
        assert_eq!(r.link_files[0].name, "10-agent-eth0.link");
        assert_eq!(
            lines(&r.link_files[0].contents),
            [
                "[Match]",
                "MACAddress=52:54:00:12:34:56",
                "Type=ether",
                "",
                "[Link]",
                "NamePolicy=",
                "Name=eth0",
                "AlternativeNamesPolicy=database onboard slot path",
                "MACAddressPolicy=none"
            ]
        );
    }

    #[test]
    fn static_v6_and_extra_routes() {
        let h = Handover {
            links: vec![Link {
                name: "ens3".into(),
                mac: Some(MAC),
                addresses: vec![(ip("10.0.2.77"), 24), (ip("fd00::77"), 64)],
                routes: vec![
                    route("0.0.0.0", 0, "10.0.2.2"),
                    route("192.168.0.0", 16, "10.0.2.1"),
                    route("::", 0, "fd00::2"),
                    route("fd00:1::", 48, "fd00::2"),
                ],
                ipv6_ra: true,
                ..Link::default()
            }],
            dns: vec![ip("fd00::3")],
            domains: vec!["example.org".into(), "~corp.example".into()],
            ..Handover::default()
        };
        assert_eq!(
            lines(&one(&h)),
            [
                "[Match]",
                "MACAddress=52:54:00:12:34:56",
                "Type=ether",
                "",
                "[Network]",
                "Address=10.0.2.77/24",
                "Address=fd00::77/64",
                "Gateway=10.0.2.2",
                "Gateway=fd00::2",
                "DNS=fd00::3",
                "Domains=example.org ~corp.example",
                "IPv6AcceptRA=yes",
                "",
                "[Route]",
                "Destination=192.168.0.0/16",
                "Gateway=10.0.2.1",
                "",
                "[Route]",
                "Destination=fd00:1::/48",
                "Gateway=fd00::2",
            ]
        );
    }

    #[test]
    fn dhcp_link() {
        let l = Link {
            name: "eth1".into(),
            mac: Some(MAC),
            dhcp4: Some(Dhcp4 { address: "10.0.2.15".parse().unwrap(), prefix: 24, router_used: true, lease_mtu: None }),
            ..Link::default()
        };
        let h = Handover { source: "DHCP".into(), links: vec![l.clone()], ..Handover::default() };
        let text = one(&h);
        assert!(text.contains("# Keep the agent's lease on 10.0.2.15/24 and ask the server for it again.\n"), "{text}");
        assert_eq!(
            lines(&text),
            [
                "[Match]",
                "MACAddress=52:54:00:12:34:56",
                "Type=ether",
                "",
                "[Network]",
                "DHCP=ipv4",
                "KeepConfiguration=dhcp",
                "",
                "[DHCPv4]",
                "ClientIdentifier=mac",
                "UseHostname=false",
            ]
        );
        // The lease's MTU taken, its router not used (another NIC's was).
        let mut l2 = l.clone();
        l2.dhcp4 = Some(Dhcp4 { address: "10.0.3.15".parse().unwrap(), prefix: 24, router_used: false, lease_mtu: Some(1400) });
        let text = one(&Handover { links: vec![l2.clone()], ..Handover::default() });
        assert!(text.ends_with("[DHCPv4]\nClientIdentifier=mac\nUseHostname=false\nUseMTU=true\nUseGateway=false\n"), "{text}");
        // A configured MTU wins over the lease's.
        l2.mtu = Some(9000);
        let text = one(&Handover { links: vec![l2], ..Handover::default() });
        assert!(text.contains("MTUBytes=9000") && !text.contains("UseMTU"), "{text}");
        // keep_leases: agent-dhcp keeps it, networkd leaves it alone.
        let text = one(&Handover { links: vec![l], keep_leases: true, ..Handover::default() });
        assert_eq!(lines(&text), ["[Match]", "MACAddress=52:54:00:12:34:56", "Type=ether", "", "[Link]", "Unmanaged=yes"]);
    }

    #[test]
    fn static_and_dhcp_on_two_links() {
        let h = Handover {
            links: vec![
                Link { name: "eth0".into(), mac: Some(MAC), addresses: vec![(ip("10.0.2.77"), 24)], ..Link::default() },
                Link {
                    name: "eth1".into(),
                    mac: Some([2, 0, 0, 0, 0, 1]),
                    dhcp4: Some(Dhcp4 { address: "10.0.3.15".parse().unwrap(), prefix: 24, router_used: false, lease_mtu: None }),
                    ..Link::default()
                },
            ],
            dns: vec![ip("10.0.2.3")],
            keep_leases: true,
            ..Handover::default()
        };
        let r = render_all(&h);
        let names: Vec<&str> = r.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["10-agent-eth0.network", "10-agent-eth1.network"]);
        assert!(r.files[0].contents.contains("Address=10.0.2.77/24\nDNS=10.0.2.3\n"), "keep_leases leaves static links to networkd");
        assert!(r.files[1].contents.contains("Unmanaged=yes"));
    }

    #[test]
    fn odd_names_and_values_are_refused_or_matched_by_mac() {
        let h = Handover {
            source: "x\ny".into(),
            links: vec![
                // A newline in the name: matched by MAC, file named after it.
                Link { name: "eth0\n[Network]".into(), mac: Some(MAC), addresses: vec![(ip("10.0.0.2"), 8)], ..Link::default() },
                // No MAC and no usable name: no file.
                Link { name: "a b".into(), addresses: vec![(ip("10.0.0.3"), 8)], ..Link::default() },
                // No MAC, a good name: matched by name.
                Link { name: "tun0".into(), addresses: vec![(ip("10.0.0.4"), 33), (ip("fd00::4"), 64)], ..Link::default() },
                // Same name again: one file per name.
                Link { name: "tun0".into(), ..Link::default() },
                Link {
                    name: "eth2".into(),
                    mac: Some([2, 0, 0, 0, 0, 2]),
                    mtu: Some(10),
                    routes: vec![route("10.0.0.0", 8, "fd00::1")],
                    ..Link::default()
                },
            ],
            domains: vec!["good.example".into(), "bad\ndomain".into(), "a b".into(), "".into(), "..".into()],
            ..Handover::default()
        };
        let r = render_all(&h);
        let names: Vec<&str> = r.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["10-agent-525400123456.network", "10-agent-tun0.network", "10-agent-eth2.network"]);
        assert_eq!(r.files[1].interface, "tun0");
        assert!(r.files[1].contents.contains("[Match]\nName=tun0\n"));
        assert!(r.files[1].contents.contains("Address=fd00::4/64\n") && !r.files[1].contents.contains("10.0.0.4"));
        assert!(!r.files[2].contents.contains("MTUBytes") && !r.files[2].contents.contains("[Route]"));
        for f in &r.files {
            assert!(f.contents.contains("Domains=good.example\n"), "{}", f.contents);
            assert!(f.contents.contains("# (source: x?y)."), "{}", f.contents);
            well_formed(&f.contents);
        }
        let why = r.skipped.join("\n");
        for s in [
            "\"eth0?[Network]\"",
            "\"a b\": neither",
            "\"bad?domain\"",
            "10.0.0.4/33",
            "10-agent-tun0.network is already written",
            "MTU 10",
            "10.0.0.0/8 via fd00::1",
        ] {
            assert!(why.contains(s), "{s} in\n{why}");
        }
        assert_eq!(r.skipped.len(), 10, "{why}");
    }

    #[test]
    fn hand_over_writes_only_for_a_root_with_networkd() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().unwrap();
        let (root, run) = (t.path().join("root"), t.path().join("run/systemd/network"));
        fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        let h = Handover {
            source: "DHCP".into(),
            links: vec![Link {
                name: "eth0".into(),
                mac: Some(MAC),
                dhcp4: Some(Dhcp4 { address: "10.0.2.15".parse().unwrap(), prefix: 24, router_used: true, lease_mtu: None }),
                ..Link::default()
            }],
            ..Handover::default()
        };
        // A busybox root: nothing written.
        let rec = hand_over(&root, &run, Some(&h));
        assert_eq!((rec["networkd"].is_null(), rec["reason"].as_str()), (true, Some("no systemd-networkd in the root")));
        assert!(!run.exists());
        // Merged /usr: /lib -> usr/lib; networkd there, enabled, but no /run.
        symlink("usr/lib", root.join("lib")).unwrap();
        let nd = root.join("usr/lib/systemd/systemd-networkd");
        fs::write(&nd, "").unwrap();
        fs::set_permissions(&nd, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(root.join("etc/systemd/system/multi-user.target.wants")).unwrap();
        symlink(
            "/usr/lib/systemd/system/systemd-networkd.service",
            root.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service"),
        )
        .unwrap();
        let rec = hand_over(&root, &run, Some(&h));
        assert_eq!(rec["reason"], "the root has no /run");
        assert!(!run.exists());
        fs::create_dir(root.join("run")).unwrap();
        // Nothing configured (cloud disabled, no NIC): nothing written.
        assert_eq!(hand_over(&root, &run, None)["reason"], "no interface configured");
        assert_eq!(hand_over(&root, &run, Some(&Handover::default()))["reason"], "no interface configured");
        assert!(!run.exists());
        let rec = hand_over(&root, &run, Some(&h));
        assert_eq!(rec["networkd"], "/usr/lib/systemd/systemd-networkd");
        assert_eq!(rec["enabled_by"], serde_json::json!(["etc/systemd/system/multi-user.target.wants"]));
        assert_eq!(rec["source"], "DHCP");
        assert_eq!(
            rec["files"],
            serde_json::json!([
                {"name": "10-agent-eth0.network", "interface": "eth0", "what": ["DHCP 10.0.2.15/24"]},
                {"name": "10-agent-eth0.link", "interface": "eth0", "what": ["keeps the name eth0"]}
            ])
        );
        assert_eq!(fs::read_to_string(run.join("10-agent-eth0.link")).unwrap(), render_all(&h).link_files[0].contents);
        // The user's own .network files (the seed's iface-eth0.network)
        // win: the agent writes only the .link files then.
        fs::create_dir_all(root.join("etc/systemd/network")).unwrap();
        fs::write(root.join("etc/systemd/network/iface-eth0.network"), "[Match]\nName=eth0\n").unwrap();
        let run2 = t.path().join("run2");
        let rec = hand_over(&root, &run2, Some(&h));
        assert_eq!(rec["user_files"], serde_json::json!(["/etc/systemd/network/iface-eth0.network"]));
        assert!(!run2.join("10-agent-eth0.network").exists());
        assert!(run2.join("10-agent-eth0.link").exists());
        // A runtime one (cloud-config `runtime: true`) beside the agent's.
        fs::remove_file(root.join("etc/systemd/network/iface-eth0.network")).unwrap();
        let run3 = t.path().join("run3");
        fs::create_dir_all(&run3).unwrap();
        fs::write(run3.join("iface-eth0.network"), "[Match]\nName=eth0\n").unwrap();
        fs::write(run3.join("10-agent-eth1.network"), "").unwrap();
        let rec = hand_over(&root, &run3, Some(&h));
        assert_eq!(rec["user_files"], serde_json::json!([format!("{NETWORK_DIR}/iface-eth0.network")]));
        assert!(!run3.join("10-agent-eth0.network").exists());
        assert!(rec.get("reason").is_none(), "{rec}");
        let f = run.join("10-agent-eth0.network");
        assert_eq!(fs::read_to_string(&f).unwrap(), render(&h)[0].1);
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(fs::metadata(&run).unwrap().permissions().mode() & 0o777, 0o755);
        // Only /lib/systemd/systemd-networkd (a root without merged /usr).
        let t2 = tempfile::tempdir().unwrap();
        fs::create_dir_all(t2.path().join("lib/systemd")).unwrap();
        fs::copy(&nd, t2.path().join("lib/systemd/systemd-networkd")).unwrap();
        assert_eq!(find_networkd(t2.path()), Some("/lib/systemd/systemd-networkd"));
        assert!(enabled_by(t2.path()).is_empty());
    }

    /// Every line is a comment, a section header, a `Key=Value` with a
    /// value that has no control characters, or empty.
    fn well_formed(text: &str) {
        assert!(text.ends_with('\n'));
        for l in text.lines() {
            assert!(!l.chars().any(|c| c.is_control()), "{l:?}");
            let ok = l.is_empty()
                || l.starts_with("# ")
                || (l.starts_with('[') && l.ends_with(']'))
                || l.split_once('=').is_some_and(|(k, v)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()) && !v.is_empty());
            assert!(ok, "{l:?} in\n{text}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![any::<u32>().prop_map(|a| IpAddr::V4(a.into())), any::<u128>().prop_map(|a| IpAddr::V6(a.into()))]
        }

        fn any_link() -> impl Strategy<Value = Link> {
            (
                ".{0,20}",
                proptest::option::of(any::<[u8; 6]>()),
                proptest::option::of(any::<u32>()),
                proptest::collection::vec((any_ip(), any::<u8>()), 0..3),
                proptest::collection::vec((any_ip(), any::<u8>(), any_ip()), 0..3),
                proptest::option::of((any::<u32>(), any::<u8>(), any::<bool>(), proptest::option::of(any::<u16>()))),
                any::<bool>(),
            )
                .prop_map(|(name, mac, mtu, addresses, routes, dhcp, ipv6_ra)| Link {
                    name,
                    mac,
                    mtu,
                    addresses,
                    routes: routes.into_iter().map(|(dest, prefix, gateway)| Route { dest, prefix, gateway }).collect(),
                    dhcp4: dhcp.map(|(a, prefix, router_used, lease_mtu)| Dhcp4 { address: a.into(), prefix, router_used, lease_mtu }),
                    ipv6_ra,
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            /// Whatever the input, every file is well-formed INI with one
            /// [Match] section, its name is safe, and the names are unique.
            #[test]
            fn any_input_renders_well_formed_files(
                source in ".{0,40}",
                links in proptest::collection::vec(any_link(), 0..4),
                dns in proptest::collection::vec(any_ip(), 0..3),
                domains in proptest::collection::vec(".{0,12}", 0..3),
                keep_leases in any::<bool>(),
            ) {
                let h = Handover { source, links, dns, domains, keep_leases };
                let r = render_all(&h);
                let mut names = Vec::new();
                for f in &r.files {
                    well_formed(&f.contents);
                    prop_assert_eq!(f.contents.matches("[Match]\n").count(), 1);
                    prop_assert!(f.name.starts_with("10-agent-") && f.name.ends_with(".network"));
                    prop_assert!(ifname_ok(f.name.trim_start_matches("10-agent-").trim_end_matches(".network")));
                    prop_assert!(!names.contains(&f.name));
                    names.push(f.name.clone());
                }
                prop_assert!(r.files.len() <= h.links.len());
                prop_assert!(r.link_files.len() <= r.files.len());
                for f in &r.link_files {
                    prop_assert!(f.contents.lines().filter(|l| l.starts_with("Name=")).count() == 1);
                }
            }
        }
    }
}
