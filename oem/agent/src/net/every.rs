//! `"link": "*"`: a network for every Ethernet link that has no other
//! network (the OEM extension of `network_data.json` that the platform
//! layers use for "DHCP on every NIC").
//!
//! [`expand`] is pure: given the NICs the machine has, it rewrites the JSON
//! into plain `network_data.json` that [`super::parse`] accepts. Each NIC
//! not used by a network of its own gets the `*` networks, on the link that
//! already names it (by MAC) or on a new link `{"id": NIC name, "type":
//! "phy", "ethernet_mac_address": MAC}`. The copies are marked
//! `"optional": true`: a NIC without a DHCP server is logged, not a failure
//! of the whole configuration.

use serde_json::{json, Map, Value};

use super::{mac_text, parse_mac};

/// A NIC: interface name and MAC, in ifindex order.
pub type Nic = (String, [u8; 6]);

/// Rewrite `"link": "*"` networks of `v` for `nics`. JSON without them is
/// returned unchanged. A single link without `ethernet_mac_address` is the
/// first NIC (as [`super::apply`] takes it); it gets that MAC written in,
/// since after expansion it is no longer the only link.
pub fn expand(v: &Value, nics: &[Nic]) -> Value {
    let Some(nets) = v.get("networks").and_then(Value::as_array) else { return v.clone() };
    let is_star = |n: &Value| n.get("link").and_then(Value::as_str) == Some("*");
    if !nets.iter().any(is_star) {
        return v.clone();
    }
    let mut links: Vec<Value> = v.get("links").and_then(Value::as_array).cloned().unwrap_or_default();
    // A lone link without a MAC is the first NIC.
    if links.len() == 1 && links[0].get("ethernet_mac_address").is_none() {
        if let (Some((_, mac)), Some(o)) = (nics.first(), links[0].as_object_mut()) {
            o.insert("ethernet_mac_address".into(), json!(mac_text(mac)));
        }
    }
    let link_mac = |l: &Value| l.get("ethernet_mac_address").and_then(Value::as_str).and_then(parse_mac);
    let link_id = |l: &Value| l.get("id").and_then(Value::as_str).map(str::to_string);
    // NICs that a network other than `*` uses.
    let mut taken: Vec<[u8; 6]> = Vec::new();
    for n in nets.iter().filter(|n| !is_star(n)) {
        let Some(id) = n.get("link").and_then(Value::as_str) else { continue };
        if let Some(mac) = links.iter().find(|l| link_id(l).as_deref() == Some(id)).and_then(link_mac) {
            taken.push(mac);
        }
    }
    let stars: Vec<&Value> = nets.iter().filter(|n| is_star(n)).collect();
    let mut out_nets: Vec<Value> = nets.iter().filter(|n| !is_star(n)).cloned().collect();
    for (name, mac) in nics {
        if taken.contains(mac) {
            continue;
        }
        let id = match links.iter().find(|l| link_mac(l) == Some(*mac)).and_then(link_id) {
            Some(id) => id,
            None => {
                let mut id = name.clone();
                while links.iter().any(|l| link_id(l).as_deref() == Some(id.as_str())) {
                    id.insert(0, '_');
                }
                links.push(json!({"id": id, "type": "phy", "ethernet_mac_address": mac_text(mac)}));
                id
            }
        };
        for (k, s) in stars.iter().enumerate() {
            let mut n: Map<String, Value> = s.as_object().cloned().unwrap_or_default();
            let base = n.get("id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("every{k}"));
            n.insert("id".into(), json!(format!("{base}-{name}")));
            n.insert("link".into(), json!(id));
            n.insert("optional".into(), json!(true));
            out_nets.push(Value::Object(n));
        }
    }
    let mut out = v.as_object().cloned().unwrap_or_default();
    out.insert("links".into(), Value::Array(links));
    out.insert("networks".into(), Value::Array(out_nets));
    Value::Object(out)
}

/// Whether `v` has a `"link": "*"` network.
pub fn has_every_link(v: &Value) -> bool {
    v.get("networks").and_then(Value::as_array).is_some_and(|a| a.iter().any(|n| n.get("link").and_then(Value::as_str) == Some("*")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nics() -> Vec<Nic> {
        vec![
            ("eth0".into(), [0x52, 0x54, 0, 0, 0, 1]),
            ("eth1".into(), [0x52, 0x54, 0, 0, 0, 2]),
            ("eth2".into(), [0x52, 0x54, 0, 0, 0, 3]),
        ]
    }

    #[test]
    fn dhcp_on_every_nic() {
        let v = json!({"links": [], "networks": [{"id": "dhcp4", "type": "ipv4_dhcp", "link": "*"}], "services": []});
        let e = expand(&v, &nics());
        assert_eq!(e["links"].as_array().unwrap().len(), 3);
        assert_eq!(e["links"][1], json!({"id": "eth1", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:02"}));
        let nets = e["networks"].as_array().unwrap();
        assert_eq!(nets.len(), 3);
        assert_eq!(nets[2], json!({"id": "dhcp4-eth2", "type": "ipv4_dhcp", "link": "eth2", "optional": true}));
        assert!(!has_every_link(&e) && has_every_link(&v));
        // What the agent's parser makes of it: three DHCP networks on three links.
        let c = crate::net::parse(&e.to_string()).unwrap();
        assert_eq!(c.networks.iter().map(|n| (n.link, n.optional)).collect::<Vec<_>>(), [(0, true), (1, true), (2, true)]);
        // No NICs: nothing to do, and still valid.
        let e = expand(&v, &[]);
        assert_eq!(e["networks"], json!([]));
        assert!(crate::net::parse(&e.to_string()).is_ok());
    }

    #[test]
    fn nics_with_their_own_network_are_left_alone() {
        let v = json!({
            "links": [{"id": "lan", "ethernet_mac_address": "52:54:00:00:00:02", "mtu": 9000}, {"id": "mgmt", "ethernet_mac_address": "52:54:00:00:00:03"}],
            "networks": [
                {"id": "static", "type": "ipv4", "link": "lan", "ip_address": "10.0.0.2/24"},
                {"id": "d", "type": "ipv4_dhcp", "link": "*"},
                {"id": "s", "type": "ipv6_slaac", "link": "*"}
            ]
        });
        let e = expand(&v, &nics());
        let nets: Vec<(&str, &str)> =
            e["networks"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n["link"].as_str().unwrap())).collect();
        // eth1 (lan) has a static network; mgmt (eth2) is declared but has no
        // network of its own, so it gets `*` on its existing link.
        assert_eq!(nets, [("static", "lan"), ("d-eth0", "eth0"), ("s-eth0", "eth0"), ("d-eth2", "mgmt"), ("s-eth2", "mgmt")]);
        assert_eq!(e["links"].as_array().unwrap().len(), 3);
        let c = crate::net::parse(&e.to_string()).unwrap();
        assert!(!c.networks[0].optional && c.networks[1].optional);
    }

    #[test]
    fn a_lone_link_without_mac_is_the_first_nic() {
        let v = json!({
            "links": [{"id": "eth0"}],
            "networks": [{"id": "st", "type": "ipv4", "link": "eth0", "ip_address": "10.0.0.2/24"}, {"id": "d", "type": "ipv4_dhcp", "link": "*"}]
        });
        let e = expand(&v, &nics());
        assert_eq!(e["links"][0]["ethernet_mac_address"], "52:54:00:00:00:01");
        let nets: Vec<&str> = e["networks"].as_array().unwrap().iter().map(|n| n["link"].as_str().unwrap()).collect();
        assert_eq!(nets, ["eth0", "eth1", "eth2"]);
        assert!(crate::net::parse(&e.to_string()).is_ok());
        // A new link whose NIC name is already a link id is renamed.
        let v = json!({
            "links": [{"id": "eth2", "ethernet_mac_address": "52:54:00:00:00:01"}],
            "networks": [{"id": "st", "type": "ipv4", "link": "eth2", "ip_address": "10.0.0.2/24"}, {"id": "d", "type": "ipv4_dhcp", "link": "*"}]
        });
        let e = expand(&v, &nics());
        let links: Vec<&str> = e["links"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert_eq!(links, ["eth2", "eth1", "_eth2"]);
        assert!(crate::net::parse(&e.to_string()).is_ok());
        // Without `*` nothing changes.
        let plain = json!({"links": [{"id": "a"}], "networks": [{"id": "n", "type": "ipv4_dhcp", "link": "a"}]});
        assert_eq!(expand(&plain, &nics()), plain);
    }
}
