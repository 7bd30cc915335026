//! CoreOS-family configuration outputs from the same recipe:
//! `NAME.cloud-config.yml` (`#cloud-config`, as CoreOS's coreos-cloudinit
//! and RancherOS read it) and `NAME.ign` (Ignition config, spec
//! [`IGNITION_VERSION`]).
//!
//! Both say the same things, taken from the OEM configuration (layers 00–20)
//! and the recipe:
//! - `hostname`;
//! - the OEM `user` with its `ssh_authorized_keys`;
//! - files: every `file` layer with inline `content` or `data` in the tree
//!   of the root partition (type `root-x86-64`), else the initramfs tree;
//! - the OEM `network` (network_data.json shape) as systemd-networkd
//!   `.network` units: cloud-config `coreos.units` (runtime), Ignition
//!   `storage.files` under `/etc/systemd/network/`.

use serde_json::{json, Value};

use crate::recipe::layer::{parse_mode, Layer};
use crate::recipe::Recipe;

/// One file to write on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFile {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

/// What both formats carry.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: Option<String>,
    pub user: String,
    pub keys: Vec<String>,
    pub files: Vec<TargetFile>,
    /// (unit name, content)
    pub units: Vec<(String, String)>,
}

fn prefix_len(mask: &str) -> Option<u32> {
    if let Ok(n) = mask.parse::<u32>() {
        return Some(n);
    }
    let ip: std::net::IpAddr = mask.parse().ok()?;
    Some(match ip {
        std::net::IpAddr::V4(a) => u32::from(a).count_ones(),
        std::net::IpAddr::V6(a) => u128::from(a).count_ones(),
    })
}

/// systemd-networkd units for a `network_data.json` document.
pub fn networkd_units(net: &Value) -> Vec<(String, String)> {
    let links = net["links"].as_array().cloned().unwrap_or_default();
    let dns: Vec<String> = net["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["type"] == "dns")
        .filter_map(|s| s["address"].as_str().map(str::to_string))
        .collect();
    let mut units = Vec::new();
    for (i, n) in net["networks"].as_array().into_iter().flatten().enumerate() {
        let link = n["link"].as_str().unwrap_or("*");
        let id = n["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("net{i}"));
        let mut s = String::from("[Match]\n");
        match links.iter().find(|l| l["id"] == link).and_then(|l| l["ethernet_mac_address"].as_str()) {
            Some(mac) => s.push_str(&format!("MACAddress={mac}\n")),
            None if link == "*" => s.push_str("Name=*\n"),
            None => s.push_str(&format!("Name={link}\n")),
        }
        s.push_str("\n[Network]\n");
        match n["type"].as_str().unwrap_or("") {
            "ipv4_dhcp" => s.push_str("DHCP=ipv4\n"),
            "ipv6_dhcp" => s.push_str("DHCP=ipv6\n"),
            "ipv6_slaac" => s.push_str("IPv6AcceptRA=yes\n"),
            _ => {
                if let Some(ip) = n["ip_address"].as_str() {
                    let p = n["netmask"].as_str().and_then(prefix_len).unwrap_or(if ip.contains(':') { 64 } else { 24 });
                    s.push_str(&format!("Address={ip}/{p}\n"));
                }
            }
        }
        for d in &dns {
            s.push_str(&format!("DNS={d}\n"));
        }
        for r in n["routes"].as_array().into_iter().flatten() {
            let (Some(dest), Some(gw)) = (r["network"].as_str(), r["gateway"].as_str()) else { continue };
            let p = r["netmask"].as_str().and_then(prefix_len).unwrap_or(0);
            if p == 0 {
                s.push_str(&format!("Gateway={gw}\n"));
            } else {
                s.push_str(&format!("\n[Route]\nDestination={dest}/{p}\nGateway={gw}\n"));
            }
        }
        let safe: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        units.push((format!("{:02}-{safe}.network", 10 + i), s));
    }
    units
}

/// Gather the configuration from the recipe and its OEM merge.
pub fn config(recipe: &Recipe, oem: &Value) -> Config {
    let tree = recipe
        .disk
        .as_ref()
        .and_then(|d| d.partitions.iter().find(|p| p.type_ == "root-x86-64"))
        .and_then(|p| p.tree.clone())
        .or_else(|| recipe.initramfs.as_ref().map(|i| i.tree.clone()));
    let mut files = Vec::new();
    for l in tree.and_then(|t| recipe.trees.get(&t)).into_iter().flatten() {
        if let Layer::File(f) = l {
            let content = match (&f.content, &f.data) {
                (Some(c), _) => c.as_bytes().to_vec(),
                (None, Some(d)) => match crate::recipe::layer::parse_data_url(d) {
                    Ok(b) => b,
                    Err(_) => continue,
                },
                _ => continue,
            };
            let mode = f.mode.as_deref().and_then(|m| parse_mode(m).ok()).unwrap_or(0o644);
            files.push(TargetFile { path: f.file.clone(), mode, content });
        }
    }
    Config {
        hostname: oem["hostname"].as_str().map(str::to_string),
        user: oem["user"].as_str().unwrap_or("core").to_string(),
        keys: oem["ssh_authorized_keys"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_string)).collect(),
        files,
        units: networkd_units(&oem["network"]),
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// `#cloud-config` YAML.
pub fn cloud_config(c: &Config) -> String {
    use base64::Engine;
    let mut y = String::from("#cloud-config\n");
    if let Some(h) = &c.hostname {
        y.push_str(&format!("hostname: {}\n", q(h)));
    }
    y.push_str(&format!("users:\n  - name: {}\n", q(&c.user)));
    if !c.keys.is_empty() {
        y.push_str("    ssh_authorized_keys:\n");
        for k in &c.keys {
            y.push_str(&format!("      - {}\n", q(k)));
        }
        // CoreOS's cloudinit gives top-level keys to `core`.
        if c.user == "core" {
            y.push_str("ssh_authorized_keys:\n");
            for k in &c.keys {
                y.push_str(&format!("  - {}\n", q(k)));
            }
        }
    }
    if !c.files.is_empty() {
        y.push_str("write_files:\n");
        for f in &c.files {
            y.push_str(&format!("  - path: {}\n    permissions: {}\n", q(&f.path), q(&format!("{:04o}", f.mode))));
            match std::str::from_utf8(&f.content) {
                Ok(text) => y.push_str(&format!("    content: {}\n", q(text))),
                Err(_) => {
                    let b = base64::engine::general_purpose::STANDARD.encode(&f.content);
                    y.push_str(&format!("    encoding: b64\n    content: {}\n", q(&b)));
                }
            }
        }
    }
    if !c.units.is_empty() {
        y.push_str("coreos:\n  units:\n");
        for (name, content) in &c.units {
            y.push_str(&format!("    - name: {}\n      runtime: true\n      content: {}\n", q(name), q(content)));
        }
    }
    y
}

/// The Ignition spec version written. Everything we emit (users with SSH
/// keys, files with data URLs, mode and overwrite) is in spec 3.0.0, and
/// every Ignition that reads spec 3 accepts 3.0.0 (newer ones translate it
/// up), while a newer number shuts out older Ignitions for nothing: Debian
/// bookworm's Ignition 2.14 refuses 3.4.0 ("unsupported config version").
/// Raise it only together with a field that needs it.
pub const IGNITION_VERSION: &str = "3.0.0";

fn data_url(b: &[u8]) -> String {
    use base64::Engine;
    format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(b))
}

/// Ignition config JSON, spec [`IGNITION_VERSION`].
pub fn ignition(c: &Config) -> Value {
    let mut files = Vec::new();
    let mut add = |path: &str, mode: u32, content: &[u8]| {
        files.push(json!({"path": path, "mode": mode, "overwrite": true, "contents": {"source": data_url(content)}}));
    };
    if let Some(h) = &c.hostname {
        add("/etc/hostname", 0o644, format!("{h}\n").as_bytes());
    }
    for f in &c.files {
        add(&f.path, f.mode, &f.content);
    }
    for (name, content) in &c.units {
        add(&format!("/etc/systemd/network/{name}"), 0o644, content.as_bytes());
    }
    let mut user = json!({"name": c.user});
    if !c.keys.is_empty() {
        user["sshAuthorizedKeys"] = json!(c.keys);
    }
    json!({
        "ignition": {"version": IGNITION_VERSION},
        "passwd": {"users": [user]},
        "storage": {"files": files}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_network_becomes_networkd() {
        let units = networkd_units(&json!({
            "links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
            "networks": [
                {"id": "n0", "link": "eth0", "type": "ipv4", "ip_address": "10.11.12.13", "netmask": "255.255.255.0",
                 "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.11.12.1"},
                            {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.11.12.2"}]},
                {"id": "any", "link": "*", "type": "ipv4_dhcp"}
            ],
            "services": [{"type": "dns", "address": "188.93.16.19"}]
        }));
        assert_eq!(units[0].0, "10-n0.network");
        assert_eq!(
            units[0].1,
            "[Match]\nMACAddress=fa:16:3e:00:00:01\n\n[Network]\nAddress=10.11.12.13/24\nDNS=188.93.16.19\nGateway=10.11.12.1\n\n[Route]\nDestination=192.168.0.0/16\nGateway=10.11.12.2\n"
        );
        assert_eq!(units[1], ("11-any.network".to_string(), "[Match]\nName=*\n\n[Network]\nDHCP=ipv4\nDNS=188.93.16.19\n".to_string()));
    }
}
