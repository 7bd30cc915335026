//! CoreOS-family outputs: `cloud-config` parsed by PyYAML, `ignition`
//! decoded by Python (data URLs through `urllib`/`base64`), both compared
//! with what the recipe says; and both checked by the real validators:
//! Debian's `cloud-init schema --config-file` (cloud-init 22.4, its bundled
//! JSON schema, offline) and `ignition-validate` (Debian's Ignition 2.14).
//!
//! cloud-init's schema lets unknown top-level keys through, so it says
//! nothing about the CoreOS-only `coreos:` section (`coreos.units`): that
//! part is read by coreos-cloudinit and ignored by cloud-init.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC0reos me@host";

fn python(script: &str, arg: &str) -> serde_json::Value {
    let o = Command::new("python3").arg("-c").arg(script).arg(arg).output().expect("python3");
    assert!(o.status.success(), "python3 failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// `cloud-init schema --config-file PATH`: (valid, output).
fn cloud_init_schema(path: &Path) -> (bool, String) {
    tool("cloud-init", &["schema", "--config-file", path.to_str().unwrap()])
}

/// `ignition-validate PATH`: (valid, output).
fn ignition_validate(path: &Path) -> (bool, String) {
    tool("ignition-validate", &[path.to_str().unwrap()])
}

/// Both validators accept both files, without warnings or deprecations.
fn assert_validators_accept(yml: &Path, ign: &Path) {
    let (ok, out) = cloud_init_schema(yml);
    assert!(
        ok && out.contains("Valid cloud-config"),
        "cloud-init schema refuses {}:\n{out}\n{}",
        yml.display(),
        fs::read_to_string(yml).unwrap()
    );
    assert!(!out.to_lowercase().contains("deprecat"), "cloud-init schema: {out}");
    let (ok, out) = ignition_validate(ign);
    assert!(ok, "ignition-validate refuses {}:\n{out}\n{}", ign.display(), fs::read_to_string(ign).unwrap());
    assert!(out.trim().is_empty(), "ignition-validate warns about {}: {out}", ign.display());
}

#[test]
fn cloud_config_and_ignition_say_what_the_recipe_says() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let recipe = serde_json::json!({
        "name": "node",
        "trees": {"root": [
            {"file": "/etc/systemd/timesyncd.conf", "content": "[Time]\nNTP=0.ru.pool.ntp.org 1.ru.pool.ntp.org\n"},
            {"file": "/usr/local/bin/hello", "content": "#!/bin/sh\necho \"hi: it's 'quoted'\"\n", "mode": "0755"},
            {"file": "/etc/blob", "data": "data:;base64,AP8Aqg=="}
        ]},
        "initramfs": {"tree": "root"},
        "oem": {
            "platform": "vpc", "hostname": "node01", "ssh_authorized_keys": [KEY],
            "network": {
                "links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
                "networks": [{"id": "n0", "link": "eth0", "type": "ipv4", "ip_address": "10.11.12.13", "netmask": "255.255.255.0",
                              "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.11.12.1"}]}],
                "services": [{"type": "dns", "address": "188.93.16.19"}]
            }
        },
        "outputs": ["cloud-config", "ignition"]
    });
    fs::write(w.join("r.json"), recipe.to_string()).unwrap();
    run_ok(w, &["-q", "r.json", "--out", "out"]);
    let yml = w.join("out/node.cloud-config.yml");
    let text = fs::read_to_string(&yml).unwrap();
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    let y = python("import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", yml.to_str().unwrap());
    assert_eq!(y["hostname"], "node01");
    assert_eq!(y["ssh_authorized_keys"], serde_json::json!([KEY]));
    assert_eq!(y["users"][0]["name"], "core");
    let files = y["write_files"].as_array().unwrap();
    let f = |p: &str| files.iter().find(|f| f["path"] == p).unwrap_or_else(|| panic!("{p} missing: {y}")).clone();
    assert_eq!(f("/usr/local/bin/hello")["content"], "#!/bin/sh\necho \"hi: it's 'quoted'\"\n");
    assert_eq!(f("/usr/local/bin/hello")["permissions"], "0755");
    assert_eq!(f("/etc/systemd/timesyncd.conf")["content"], "[Time]\nNTP=0.ru.pool.ntp.org 1.ru.pool.ntp.org\n");
    assert_eq!(f("/etc/blob")["encoding"], "b64");
    assert_eq!(f("/etc/blob")["content"], "AP8Aqg==");
    let unit = &y["coreos"]["units"][0];
    assert_eq!(unit["name"], "10-n0.network");
    assert_eq!(unit["runtime"], true);
    let content = unit["content"].as_str().unwrap();
    for line in ["MACAddress=fa:16:3e:00:00:01", "Address=10.11.12.13/24", "Gateway=10.11.12.1", "DNS=188.93.16.19"] {
        assert!(content.lines().any(|l| l == line), "{line} not in {content}");
    }

    // Ignition: decode every data URL in Python.
    let ign = w.join("out/node.ign");
    let i = python(
        r#"
import sys, json, base64, urllib.parse
c = json.load(open(sys.argv[1]))
out = {"version": c["ignition"]["version"], "users": c["passwd"]["users"], "files": {}}
for f in c["storage"]["files"]:
    src = f["contents"]["source"]
    head, data = src.split(",", 1)
    assert head.startswith("data:")
    raw = base64.b64decode(data) if head.endswith(";base64") else urllib.parse.unquote_to_bytes(data)
    out["files"][f["path"]] = {"mode": f["mode"], "text": raw.decode("latin-1")}
print(json.dumps(out))
"#,
        ign.to_str().unwrap(),
    );
    assert_eq!(i["version"], "3.0.0");
    assert_eq!(i["users"][0]["name"], "core");
    assert_eq!(i["users"][0]["sshAuthorizedKeys"], serde_json::json!([KEY]));
    assert_eq!(i["files"]["/etc/hostname"]["text"], "node01\n");
    assert_eq!(i["files"]["/usr/local/bin/hello"]["mode"], 0o755);
    assert_eq!(i["files"]["/etc/blob"]["text"], "\u{0}\u{ff}\u{0}\u{aa}");
    assert_eq!(i["files"]["/etc/systemd/network/10-n0.network"]["text"], content);
    assert_validators_accept(&yml, &ign);
}

/// The example recipe, and one with another user, an IPv6 network and DHCP,
/// pass both validators; and the validators do refuse a broken copy (so a
/// pass means something).
#[test]
fn validators_accept_the_outputs_and_refuse_broken_ones() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let out = w.join("out");
    run_ok(&root(), &["-q", "build", root().join("recipes/coreos-userdata.json").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let (yml, ign) = (out.join("coreos-userdata.cloud-config.yml"), out.join("coreos-userdata.ign"));
    assert_validators_accept(&yml, &ign);

    let recipe = serde_json::json!({
        "name": "v6",
        "trees": {"root": [{"file": "/etc/motd", "content": "hello\n", "mode": "0600"}]},
        "initramfs": {"tree": "root"},
        "oem": {
            "platform": "vpc", "user": "admin", "hostname": "v6-node", "ssh_authorized_keys": [KEY, "ssh-rsa AAAAB3NzaC1yc2E second@host"],
            "network": {
                "links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:02"}],
                "networks": [
                    {"id": "v6", "link": "eth0", "type": "ipv6", "ip_address": "fd00::77", "netmask": "ffff:ffff:ffff:ffff::",
                     "routes": [{"network": "::", "netmask": "::", "gateway": "fd00::2"}]},
                    {"id": "v4", "link": "eth0", "type": "ipv4_dhcp"}
                ]
            }
        },
        "outputs": ["cloud-config", "ignition"]
    });
    fs::write(w.join("v6.json"), recipe.to_string()).unwrap();
    run_ok(w, &["-q", "v6.json", "--out", "out"]);
    let (yml, ign) = (out.join("v6.cloud-config.yml"), out.join("v6.ign"));
    assert_validators_accept(&yml, &ign);
    let text = fs::read_to_string(&yml).unwrap();
    assert!(text.contains("Address=fd00::77/64"), "{text}");

    // A write_files entry without a path, and a relative Ignition path.
    let broken = w.join("broken.yml");
    fs::write(&broken, text.replace("  - path: \"/etc/motd\"\n", "  - \n")).unwrap();
    let (ok, msg) = cloud_init_schema(&broken);
    assert!(!ok && msg.contains("'path' is a required property"), "cloud-init schema accepted a file without path: {msg}");
    let broken = w.join("broken.ign");
    fs::write(&broken, fs::read_to_string(&ign).unwrap().replace("\"/etc/motd\"", "\"etc/motd\"")).unwrap();
    let (ok, msg) = ignition_validate(&broken);
    assert!(!ok && msg.contains("path not absolute"), "ignition-validate accepted a relative path: {msg}");
}
