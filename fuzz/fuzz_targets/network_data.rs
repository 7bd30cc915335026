//! `network_data.json` (config drive, metadata service, or the OEM
//! configuration's `network`) into what the agent applies, as
//! `cloud::try_network` does it: `"link": "*"` expanded for the machine's
//! NICs (`net::every::expand`), parsed and checked (`net::parse`), applied
//! (`net::apply::apply_with`: the rtnetlink calls into a recorder, DHCP
//! discoveries answered by the input), then handed over to networkd
//! (`net::networkd::render_all`) and `resolv.conf`.
//!
//! Input: first byte odd: the document generated from a dictionary of
//! network_data's keys and values; even: the rest is the document. The
//! NICs, which hold leases and the DHCP answers come after it (structured
//! mode) or from a fixed set.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use build_image_fuzz::dhcp::{ip4, Recorder};
use build_image_fuzz::json::{self, Dict};
use guest_agent::net::apply::{apply_with, Iface};
use guest_agent::net::dhcp::{Reply, ACK};
use guest_agent::net::discover::Discovery;
use guest_agent::net::{self, every, networkd};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const DICT: Dict = Dict {
    keys: &[
        "links",
        "networks",
        "services",
        "id",
        "type",
        "ethernet_mac_address",
        "mtu",
        "link",
        "ip_address",
        "netmask",
        "routes",
        "network",
        "gateway",
        "address",
        "optional",
        "vif_id",
        "network_id",
    ],
    strings: &[
        "phy",
        "ovs",
        "bridge",
        "bond",
        "vlan",
        "tap0",
        "eth0",
        "ipv4",
        "ipv6",
        "ipv4_dhcp",
        "ipv6_slaac",
        "ipv6_dhcp",
        "dns",
        "*",
        "52:54:00:00:00:01",
        "52:54:00:00:00:02",
        "52-54-00-00-00-03",
        "10.0.0.2",
        "10.0.0.2/24",
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.0",
        "255.0.255.0",
        "24",
        "33",
        "fd00::5",
        "fd00::5/64",
        "::",
        "fd00::1",
        "ffff:ffff:ffff:ffff::",
        "128",
        "net0",
        "1.1.1.1",
    ],
};

#[derive(Arbitrary, Debug)]
struct Nic {
    name_sel: u8,
    mac: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Lease {
    yiaddr: [u8; 4],
    mask: Option<[u8; 4]>,
    routers: Vec<[u8; 4]>,
    dns: Vec<[u8; 4]>,
    lease: Option<u32>,
    mtu: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct Machine {
    nics: Vec<Nic>,
    leased: Vec<u8>,
    answers: Vec<Option<Lease>>,
    fail_at: Option<u8>,
    keep_leases: bool,
}

const NAMES: [&str; 6] = ["eth0", "eth1", "ens3", "a-very-long-interface-name", "e/../x", "tap0"];

fn document(u: &mut Unstructured) -> arbitrary::Result<Value> {
    let mut m = Map::new();
    for k in ["links", "networks", "services"] {
        if u.ratio(7, 8)? {
            m.insert(k.into(), json::objects(u, &DICT, 2, 4)?);
        }
    }
    if u.ratio(1, 8)? {
        m.extend(json::object(u, &DICT, 2)?);
    }
    Ok(Value::Object(m))
}

fuzz_target!(|data: &[u8]| {
    let structured = data.first().is_some_and(|m| m & 1 == 1);
    let mut u = Unstructured::new(data.get(1..).unwrap_or_default());
    let (doc, machine) = if structured {
        let Ok(v) = document(&mut u) else { return };
        let Ok(bytes) = json::render(&mut u, &v) else { return };
        (bytes, Machine::arbitrary(&mut u).ok())
    } else {
        (json::bytes_or(data, |_| Ok(Value::Null)), None)
    };
    let machine = machine.unwrap_or(Machine {
        nics: vec![Nic { name_sel: 0, mac: Some(1) }, Nic { name_sel: 1, mac: Some(2) }],
        leased: vec![],
        answers: vec![None, None],
        fail_at: None,
        keep_leases: false,
    });
    let ifaces: Vec<Iface> = machine
        .nics
        .iter()
        .take(4)
        .enumerate()
        .map(|(i, n)| Iface {
            name: NAMES[n.name_sel as usize % NAMES.len()].to_string(),
            index: i as u32 + 2,
            mac: n.mac.map(|m| [0x52, 0x54, 0, 0, 0, m]),
            ether: true,
        })
        .collect();
    let leased: Vec<String> =
        machine.leased.iter().take(2).filter_map(|k| ifaces.get(*k as usize % ifaces.len().max(1))).map(|i| i.name.clone()).collect();
    let answers: Vec<Result<Reply, String>> = machine
        .answers
        .iter()
        .take(4)
        .map(|a| match a {
            Some(l) => Ok(Reply {
                msg_type: ACK,
                yiaddr: ip4(l.yiaddr),
                server: Some(Ipv4Addr::new(10, 0, 0, 1)),
                mask: l.mask.map(ip4),
                routers: l.routers.iter().take(3).copied().map(ip4).collect(),
                dns: l.dns.iter().take(3).copied().map(ip4).collect(),
                lease_secs: l.lease,
                renew_secs: None,
                rebind_secs: None,
                hostname: None,
                mtu: l.mtu,
                warnings: Vec::new(),
            }),
            None => Err("no DHCP server".into()),
        })
        .collect();

    // cloud::try_network.
    let Ok(text) = std::str::from_utf8(&doc) else { return };
    let expanded = match serde_json::from_str::<Value>(text) {
        Ok(v) if every::has_every_link(&v) => {
            let nics: Vec<every::Nic> = ifaces.iter().filter_map(|i| Some((i.name.clone(), i.mac?))).collect();
            every::expand(&v, &nics).to_string()
        }
        _ => text.to_string(),
    };
    let Ok(cfg) = net::parse(&expanded) else { return };
    for n in &cfg.networks {
        assert!(n.link < cfg.links.len(), "network {} names link {} of {}", n.id, n.link, cfg.links.len());
    }
    let _ = net::resolv_conf(&cfg.dns);
    let mut rec = Recorder { fail_at: machine.fail_at.map(usize::from), ..Recorder::default() };
    let answers = Arc::new(answers);
    let discover = |i: &Iface| {
        let k = (i.index as usize - 2) % answers.len().max(1);
        let a = answers.clone();
        Discovery::start_with(i, Arc::new(move |_: &Iface| a.get(k).cloned().unwrap_or_else(|| Err("no answer".into()))))
    };
    let Ok(applied) = apply_with(&mut rec, &ifaces, &cfg, &leased, &discover) else { return };
    let _ = net::resolv_conf(&applied.dns);
    let h = networkd::Handover {
        source: "fuzz".into(),
        links: applied.links,
        dns: applied.static_dns.iter().copied().chain([IpAddr::V4(Ipv4Addr::LOCALHOST)]).collect(),
        domains: vec!["example.com".into(), "~.".into(), "bad domain".into()],
        keep_leases: machine.keep_leases,
    };
    let r = networkd::render_all(&h);
    for f in r.files.iter().chain(&r.link_files) {
        assert!(!f.name.contains(['/', '\0', '\n']) && f.name.starts_with("10-agent-"), "file name {:?}", f.name);
        assert!(!f.contents.contains('\0'), "{:?}", f.contents);
    }
});
