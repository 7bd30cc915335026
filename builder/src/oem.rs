//! The OEM configuration (CoreOS style): layered JSON documents merged in
//! order, later wins (objects merge key by key, arrays and scalars replace,
//! as for `extends`). The merge, its provenance and the `oem.*` parser are
//! the `oem-rules` crate's, the same code the guest agent runs.
//!
//! | # | layer | applied by |
//! |---|---|---|
//! | 00 | built-in defaults ([`DEFAULTS`]) | builder |
//! | 10 | the platform's `oem/platforms/NAME/oem.json` | builder |
//! | 20 | the recipe's `"oem"` section | builder |
//! | 30 | `/usr/share/oem/config.d/*.json`, in name order | agent |
//! | 40 | `oem.*` keys on the kernel command line | agent |
//! | 50 | cloud metadata | agent |
//!
//! The builder renders layers 00–20 as files: `/config.json` (the merge)
//! and `/layers/NN-NAME.json` (each layer as written). They go into the
//! partition whose filesystem label is `OEM` (the agent mounts it at
//! `/usr/share/oem`), or, without one, into the initramfs under
//! `/usr/share/oem/`, with the merge also as `/etc/agent/oem.json`.
//! `build-image inspect` reads the layers back and reports which layer set
//! each key; it also reads the kernel command line baked into the image and
//! applies its `oem.*` keys as layer 40 with [`oem_rules::cmdline_layer`].

use std::collections::BTreeMap;

use serde_json::Value;

use crate::recipe::{Partition, Platform, Recipe};

/// Layer 00: what holds when nothing else says.
pub const DEFAULTS: &str = r#"{
  "platform": "vpc",
  "user": "core",
  "ssh_authorized_keys": [],
  "metadata": { "sources": [] },
  "network": { "links": [], "networks": [], "services": [] }
}
"#;

const VPC: &str = include_str!("../../oem/platforms/vpc/oem.json");
const QEMU: &str = include_str!("../../oem/platforms/qemu/oem.json");
const METAL: &str = include_str!("../../oem/platforms/metal/oem.json");

/// The platform's layer as shipped in `oem/platforms/NAME/oem.json`.
pub fn platform_layer(p: Platform) -> &'static str {
    match p {
        Platform::Vpc => VPC,
        Platform::Qemu => QEMU,
        Platform::Metal => METAL,
    }
}

/// The index of the recipe's OEM partition, if any.
pub fn oem_partition(r: &Recipe) -> Option<usize> {
    r.disk.as_ref()?.partitions.iter().position(Partition::is_oem)
}

/// Layers 00–20, rendered.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `(file name, layer)` in order, e.g. `("10-platform-vpc.json", {...})`.
    pub layers: Vec<(String, Value)>,
    /// The merge of all layers.
    pub merged: Value,
    /// For each key path (`network.networks`), the layer that set it.
    pub provenance: BTreeMap<String, String>,
}

/// Whether the recipe asks for OEM configuration: an `oem` section or an
/// OEM partition.
pub fn wanted(r: &Recipe) -> bool {
    r.oem.is_some() || oem_partition(r).is_some()
}

/// Render layers 00–20 for a recipe.
pub fn render(r: &Recipe) -> Rendered {
    let defaults: Value = serde_json::from_str(DEFAULTS).expect("built-in defaults are JSON");
    let oem = r.oem.clone().unwrap_or_default();
    let platform = oem.platform.unwrap_or(Platform::Vpc);
    let plat: Value = serde_json::from_str(platform_layer(platform)).expect("platform layers are JSON (unit-tested)");
    let recipe_layer = serde_json::to_value(&oem).expect("oem serializes");
    let layers = vec![
        ("00-defaults.json".to_string(), defaults),
        (format!("10-platform-{}.json", platform.name()), plat),
        ("20-recipe.json".to_string(), recipe_layer),
    ];
    let (merged, provenance) = oem_rules::merge_layers(&layers);
    Rendered { layers, merged, provenance }
}

/// Pretty JSON with a final newline.
pub fn to_json(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize") + "\n"
}

impl Rendered {
    /// The files as they lie in the OEM filesystem: `/config.json` and
    /// `/layers/NN-NAME.json`.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut v = vec![("/config.json".to_string(), to_json(&self.merged).into_bytes())];
        for (name, layer) in &self.layers {
            v.push((format!("/layers/{name}"), to_json(layer).into_bytes()));
        }
        v
    }

    /// Add the files under `at` (`/` for the OEM partition, `/usr/share/oem`
    /// in the initramfs).
    pub fn add_to(&self, tree: &mut crate::tree::Tree, at: &str) -> Result<(), crate::tree::TreeError> {
        use crate::tree::{Content, Inode, Kind, Meta};
        let epoch = tree.epoch();
        for (path, bytes) in self.files() {
            let full = format!("{}{path}", at.trim_end_matches('/'));
            tree.insert(full.as_bytes(), Inode { meta: Meta::new(0o644, epoch), kind: Kind::File(Content::bytes(bytes)) })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_layers_parse_and_name_their_platform() {
        for p in [Platform::Vpc, Platform::Qemu, Platform::Metal] {
            let v: Value = serde_json::from_str(platform_layer(p)).unwrap_or_else(|e| panic!("{}: {e}", p.name()));
            assert_eq!(v["platform"], p.name());
        }
    }

    fn recipe(oem: Value) -> Recipe {
        serde_json::from_value(serde_json::json!({"name": "x", "oem": oem})).unwrap()
    }

    #[test]
    fn later_layers_win_and_provenance_says_who() {
        let r = render(&recipe(serde_json::json!({
            "platform": "qemu", "hostname": "node01", "ssh_authorized_keys": ["ssh-ed25519 AAAA k"],
            "network": {"networks": [{"id": "n0", "type": "ipv4", "link": "eth0", "ip_address": "10.0.0.5"}]}
        })));
        let m = &r.merged;
        assert_eq!(m["platform"], "qemu");
        assert_eq!(m["user"], "core");
        assert_eq!(m["hostname"], "node01");
        assert!(m.get("keep_leases").is_none(), "keep_leases only when the recipe sets it");
        assert_eq!(render(&recipe(serde_json::json!({"keep_leases": true}))).merged["keep_leases"], true);
        assert_eq!(m["network"]["networks"][0]["id"], "n0", "arrays replace");
        assert_eq!(m["network"]["networks"].as_array().unwrap().len(), 1);
        assert_eq!(r.provenance["user"], "00-defaults");
        assert_eq!(r.provenance["platform"], "20-recipe");
        assert_eq!(r.provenance["metadata.sources"], "10-platform-qemu");
        assert_eq!(r.provenance["network.networks"], "20-recipe");
        assert_eq!(r.provenance["network.links"], "10-platform-qemu");
        // Every leaf of the merge has exactly one provenance entry.
        let keys: Vec<String> = oem_rules::leaves(m).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, r.provenance.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn vpc_is_the_default_platform() {
        let r = render(&recipe(serde_json::json!({})));
        assert_eq!(r.layers[1].0, "10-platform-vpc.json");
        assert_eq!(r.merged["metadata"]["sources"], serde_json::json!(["config-drive", "metadata-service"]));
        assert_eq!(r.provenance["user"], "10-platform-vpc");
    }
}
