//! The OEM configuration (CoreOS style): layered JSON documents merged in
//! order, later wins (objects merge key by key, arrays and scalars replace,
//! as [`crate::recipe::merge`] does for `extends`).
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
//! applies its `oem.*` keys as layer 40 with [`cmdline_layer`].
//!
//! [`kernel_params`] and [`cmdline_layer`] are the agent's parser
//! (`oem/agent/src/oem.rs`) written again here, as the merge is: the agent
//! is a small static binary that depends on neither the builder nor a crate
//! shared with it. `tests/tests/oem_layers.rs` checks with random command
//! lines that both give the same layer and the same skipped keys.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::recipe::{Partition, Platform, Recipe};

/// The effective filesystem label that makes a partition the OEM partition.
pub const OEM_LABEL: &str = "OEM";

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

/// Whether this partition is the OEM partition: its filesystem label
/// (`fs.label`, else the partition label) is `OEM`.
pub fn is_oem_partition(p: &Partition) -> bool {
    p.fs.label.as_deref().unwrap_or(&p.label) == OEM_LABEL
}

/// The index of the recipe's OEM partition, if any.
pub fn oem_partition(r: &Recipe) -> Option<usize> {
    r.disk.as_ref()?.partitions.iter().position(is_oem_partition)
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
    let (merged, provenance) = merge_layers(&layers);
    Rendered { layers, merged, provenance }
}

/// Merge layers in order, recording which layer set each key. Layer names
/// lose their `.json` suffix in the provenance.
pub fn merge_layers(layers: &[(String, Value)]) -> (Value, BTreeMap<String, String>) {
    let mut merged = Value::Object(Default::default());
    let mut prov = BTreeMap::new();
    for (name, v) in layers {
        let who = name.trim_end_matches(".json");
        record(&merged, v, "", who, &mut prov);
        crate::recipe::merge(&mut merged, v.clone());
    }
    (merged, prov)
}

/// Record provenance for merging `over` into `into` at `prefix`.
fn record(into: &Value, over: &Value, prefix: &str, who: &str, prov: &mut BTreeMap<String, String>) {
    match (into, over) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match a.get(k) {
                    Some(old @ Value::Object(_)) if v.is_object() => record(old, v, &p, who, prov),
                    _ => set_leaf(v, &p, who, prov),
                }
            }
        }
        _ => set_leaf(over, prefix, who, prov),
    }
}

/// `v` replaces whatever was at `p`: drop the old entries below `p`, then
/// record every leaf of `v` (an empty object is a leaf).
fn set_leaf(v: &Value, p: &str, who: &str, prov: &mut BTreeMap<String, String>) {
    let below = format!("{p}.");
    prov.retain(|k, _| k != p && !k.starts_with(&below));
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                set_leaf(v, &format!("{p}.{k}"), who, prov);
            }
        }
        _ => {
            prov.insert(p.to_string(), who.to_string());
        }
    }
}

/// Kernel parameters as the kernel's own `next_arg()` splits them: words on
/// whitespace outside double quotes; a word or value that starts with a
/// quote loses it and its closing quote at the end; quotes inside a value
/// are kept, so a JSON value survives
/// (`oem.ssh_authorized_keys=["ssh-ed25519 AAAA me"]`). Stops at `--`.
/// The same as the agent's `oem::kernel_params`.
pub fn kernel_params(s: &str) -> Vec<(String, Option<String>)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        // A leading quote opens a quoted word and is not part of it.
        let quoted = b[i] == b'"';
        let start = if quoted { i + 1 } else { i };
        let mut in_quote = quoted;
        i = start;
        let mut equals = None;
        while i < b.len() && (in_quote || !b[i].is_ascii_whitespace()) {
            match b[i] {
                b'=' if equals.is_none() => equals = Some(i),
                b'"' => in_quote = !in_quote,
                _ => {}
            }
            i += 1;
        }
        let end = if quoted && i > start && b[i - 1] == b'"' { i - 1 } else { i };
        let word = &s[start..end];
        if !quoted && word == "--" {
            break;
        }
        match equals.filter(|e| *e < end) {
            Some(e) => {
                let val = &s[e + 1..end];
                let val = match val.strip_prefix('"') {
                    Some(v) => v.strip_suffix('"').unwrap_or(v),
                    None => val,
                };
                out.push((s[start..e].to_string(), Some(val.to_string())));
            }
            None => out.push((word.to_string(), None)),
        }
    }
    out
}

/// Layer 40 from a kernel command line, as the agent computes it: every
/// `oem.KEY=VALUE`, KEY a dotted path, VALUE JSON if it parses, else the
/// string; later keys merge over earlier ones. Returns the layer (`None`
/// without `oem.` keys) and, for each key the agent skips, why.
pub fn cmdline_layer(cmdline: &str) -> (Option<Value>, Vec<String>) {
    let mut layer: Option<Value> = None;
    let mut skipped = Vec::new();
    for (key, val) in kernel_params(cmdline) {
        let Some(path) = key.strip_prefix("oem.") else { continue };
        let Some(val) = val else {
            skipped.push(format!("{key}: no value (write {key}=VALUE)"));
            continue;
        };
        if path.split('.').any(str::is_empty) {
            skipped.push(format!("{key}: empty part in the key path"));
            continue;
        }
        let mut v = serde_json::from_str::<Value>(&val).unwrap_or(Value::String(val));
        for seg in path.rsplit('.') {
            v = Value::Object(std::iter::once((seg.to_string(), v)).collect());
        }
        match &mut layer {
            Some(l) => crate::recipe::merge(l, v),
            None => layer = Some(v),
        }
    }
    (layer, skipped)
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

/// Flatten a JSON value into `(key path, value)` leaves, as provenance
/// names them.
pub fn leaves(v: &Value) -> Vec<(String, Value)> {
    fn go(v: &Value, p: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    go(v, &if p.is_empty() { k.clone() } else { format!("{p}.{k}") }, out);
                }
            }
            _ => out.push((p.to_string(), v.clone())),
        }
    }
    let mut out = Vec::new();
    go(v, "", &mut out);
    out
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
        let keys: Vec<String> = leaves(m).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, r.provenance.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn vpc_is_the_default_platform() {
        let r = render(&recipe(serde_json::json!({})));
        assert_eq!(r.layers[1].0, "10-platform-vpc.json");
        assert_eq!(r.merged["metadata"]["sources"], serde_json::json!(["config-drive", "metadata-service"]));
        assert_eq!(r.provenance["user"], "10-platform-vpc");
    }

    #[test]
    fn a_scalar_replacing_an_object_drops_its_provenance() {
        let layers = vec![
            ("a".to_string(), serde_json::json!({"x": {"y": 1, "z": 2}})),
            ("b".to_string(), serde_json::json!({"x": 3})),
            ("c".to_string(), serde_json::json!({"x": {"w": 4}})),
        ];
        let (m, p) = merge_layers(&layers);
        assert_eq!(m, serde_json::json!({"x": {"w": 4}}));
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![("x.w".to_string(), "c".to_string())]);
    }

    #[test]
    fn kernel_params_split_like_the_kernel() {
        let p = kernel_params(r#"console=ttyS0 oem.keys=["ssh-ed25519 AAAA me"] "oem.a=x y" oem.b="p q" quiet -- oem.c=1"#);
        let want: Vec<(String, Option<String>)> = vec![
            ("console".into(), Some("ttyS0".into())),
            ("oem.keys".into(), Some(r#"["ssh-ed25519 AAAA me"]"#.into())),
            ("oem.a".into(), Some("x y".into())),
            ("oem.b".into(), Some("p q".into())),
            ("quiet".into(), None),
        ];
        assert_eq!(p, want);
        assert!(kernel_params(" \t\n").is_empty());
    }

    #[test]
    fn cmdline_layer_builds_paths_parses_json_and_skips_bad_keys() {
        let (l, skipped) = cmdline_layer(
            r#"root=/dev/vda2 oem.hostname=n1 oem.site.rack=7 oem.network.mtu=1450 oem.cloud=false oem.hostname=n2 oem.x..y=1 oem.bare oem.name="{not json""#,
        );
        assert_eq!(
            l.unwrap(),
            serde_json::json!({"hostname": "n2", "site": {"rack": 7}, "network": {"mtu": 1450}, "cloud": false, "name": "{not json"})
        );
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("oem.x..y") && skipped[1].contains("oem.bare"), "{skipped:?}");
        assert_eq!(cmdline_layer("console=ttyS0 oemx=1 agent.oem=2").0, None);
    }
}
