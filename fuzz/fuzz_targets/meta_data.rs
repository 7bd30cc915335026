//! `meta_data.json` (config drive or metadata service) into what the agent
//! applies: parsed (`cloud::parse_meta_data`), merged as OEM layer 50 over
//! layers 00–40 (`cloud::layer50`), read back as the identity to set
//! (`cloud::identity`) and the SSH keys installed into a fresh root
//! (`cloud::install_keys`), whose `/etc/passwd` comes from the input too.
//! Only `sethostname` is left out.
//!
//! Input: first byte odd: the document generated from meta_data's
//! dictionary, then the base layer and the root's passwd; even: the rest
//! is the document.
#![no_main]

use arbitrary::Unstructured;
use build_image_fuzz::json::{self, Dict};
use build_image_fuzz::scratch::{require_sandbox, Jail};
use guest_agent::cloud;
use guest_agent::oem::Effective;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const DICT: Dict = Dict {
    keys: &[
        "uuid",
        "name",
        "hostname",
        "public_keys",
        "launch_index",
        "availability_zone",
        "meta",
        "user",
        "ssh_authorized_keys",
        "network",
    ],
    strings: &[
        "vm",
        "host.example.com",
        " ",
        "ssh-ed25519 AAAA a@x",
        "ssh-rsa BBBB\ncommand=\"x\" ssh-rsa CCCC",
        "core",
        "root",
        "admin",
        "1000",
        "83679162-1378-4288-a2d4-70e13ec132aa",
        "../../etc",
        "a\u{0}b",
    ],
};

fn document(u: &mut Unstructured) -> arbitrary::Result<Value> {
    let mut m = json::object(u, &DICT, 2)?;
    if u.ratio(3, 4)? {
        let keys = if u.arbitrary()? { json::objects(u, &DICT, 0, 3)? } else { Value::Object(json::object(u, &DICT, 0)?) };
        m.insert("public_keys".into(), keys);
    }
    Ok(Value::Object(m))
}

fuzz_target!(|data: &[u8]| {
    require_sandbox("meta_data");
    let structured = data.first().is_some_and(|m| m & 1 == 1);
    let (doc, base, passwd) = if structured {
        let mut u = Unstructured::new(&data[1..]);
        let Ok(v) = document(&mut u) else { return };
        let Ok(doc) = json::render(&mut u, &v) else { return };
        let base = json::object(&mut u, &DICT, 2).unwrap_or_default();
        let passwd: Option<String> = u.arbitrary().unwrap_or(None);
        (doc, base, passwd)
    } else {
        (data.get(1..).unwrap_or_default().to_vec(), Map::new(), None)
    };
    let Ok(text) = std::str::from_utf8(&doc) else { return };
    let Ok(meta) = cloud::parse_meta_data(text) else { return };
    let mut eff = Effective::default();
    eff.layers.push("10-platform", Value::Object(base));
    if let Some(l50) = cloud::layer50(Some(&meta), None) {
        eff.layers.push("50-metadata", l50);
    }
    let id = cloud::identity(&eff);
    if id.keys.is_empty() {
        return;
    }
    let jail = Jail::new();
    let root = jail.root();
    if let Some(p) = passwd {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), p).unwrap();
    }
    let _ = cloud::install_keys(&root, &id.user, &id.keys);
    jail.check("install_keys");
});
