//! The OEM merge: layered JSON documents merged in order, later wins, with
//! the layer that set each key.
//!
//! | # | layer | applied by |
//! |---|---|---|
//! | 00 | built-in defaults | builder |
//! | 10 | the platform's `oem/platforms/NAME/oem.json` | builder |
//! | 20 | the recipe's `"oem"` section | builder |
//! | 30 | `/usr/share/oem/config.d/*.json`, in byte order of the name | agent |
//! | 40 | `oem.*` keys on the kernel command line ([`crate::cmdline`]) | agent |
//! | 50 | cloud metadata | agent |
//!
//! Provenance names a key by its dotted path (`network.networks`); arrays
//! and empty objects are leaves, as they replace whole.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// For each key path (`network.networks`), the layer that set it.
pub type Provenance = BTreeMap<String, String>;

/// Merge `over` into `into`: objects key by key (later wins), anything
/// else replaces.
pub fn merge(into: &mut Value, over: Value) {
    match (into, over) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Record provenance for merging `over` into `into` at `prefix`.
fn record(into: &Value, over: &Value, prefix: &str, who: &str, prov: &mut Provenance) {
    match (into, over) {
        (Value::Object(a), Value::Object(b)) => {
            // An empty object (a leaf) that gains keys is a leaf no more.
            if a.is_empty() && !b.is_empty() {
                prov.remove(prefix);
            }
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
fn set_leaf(v: &Value, p: &str, who: &str, prov: &mut Provenance) {
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

/// Layers merged so far, with provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Layers {
    pub merged: Value,
    pub provenance: Provenance,
    /// The names of the layers merged, in order.
    pub names: Vec<String>,
}

impl Default for Layers {
    fn default() -> Self {
        Layers { merged: Value::Object(Map::new()), provenance: Provenance::new(), names: Vec::new() }
    }
}

impl Layers {
    /// Merge one more layer, named `who` in the provenance.
    pub fn push(&mut self, who: &str, v: Value) {
        record(&self.merged, &v, "", who, &mut self.provenance);
        merge(&mut self.merged, v);
        self.names.push(who.to_string());
    }

    /// The layers that set `key` or anything below it, in first-seen order.
    pub fn set_by(&self, key: &str) -> Vec<&str> {
        let below = format!("{key}.");
        let mut v: Vec<&str> = Vec::new();
        for (k, who) in &self.provenance {
            if (k == key || k.starts_with(&below)) && !v.contains(&who.as_str()) {
                v.push(who);
            }
        }
        v
    }
}

/// Merge `(file name, layer)` pairs in order, recording which layer set
/// each key. Names lose a `.json` suffix in the provenance
/// (`10-platform-qemu.json` → `10-platform-qemu`).
pub fn merge_layers(layers: &[(String, Value)]) -> (Value, Provenance) {
    let mut l = Layers::default();
    for (name, v) in layers {
        l.push(name.trim_end_matches(".json"), v.clone());
    }
    (l.merged, l.provenance)
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
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn objects_merge_arrays_and_scalars_replace() {
        let mut a = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 1}});
        merge(&mut a, json!({"a": {"c": [3], "g": null}, "d": {"h": 2}, "e": 5}));
        assert_eq!(a, json!({"a": {"b": 1, "c": [3], "g": null}, "d": {"h": 2}, "e": 5}));
    }

    #[test]
    fn provenance_follows_the_last_writer() {
        let (m, p) = merge_layers(&[
            ("00-defaults.json".into(), json!({"user": "core", "network": {"links": [], "networks": []}})),
            ("10-platform-qemu.json".into(), json!({"network": {"networks": [{"type": "ipv4_dhcp", "link": "*"}]}})),
            ("30-config.d-50-site".into(), json!({"hostname": "site"})),
            ("40-cmdline".into(), json!({"hostname": "cmd", "network": 3})),
        ]);
        assert_eq!(m["hostname"], "cmd");
        assert_eq!(m["network"], 3);
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(p, [("hostname", "40-cmdline"), ("network", "40-cmdline"), ("user", "00-defaults")]);
    }

    #[test]
    fn a_scalar_replacing_an_object_drops_its_provenance() {
        let layers = vec![
            ("a".to_string(), json!({"x": {"y": 1, "z": 2}})),
            ("b".to_string(), json!({"x": 3})),
            ("c".to_string(), json!({"x": {"w": 4}})),
        ];
        let (m, p) = merge_layers(&layers);
        assert_eq!(m, json!({"x": {"w": 4}}));
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![("x.w".to_string(), "c".to_string())]);
    }

    #[test]
    fn an_empty_object_that_gains_keys_loses_its_own_provenance() {
        let (m, p) = merge_layers(&[("a".into(), json!({"y": {}, "z": {}})), ("b".into(), json!({"y": {"x": null}, "z": {}}))]);
        assert_eq!(m, json!({"y": {"x": null}, "z": {}}));
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(p, [("y.x", "b"), ("z", "a")], "`y` is no leaf any more; an empty object over one changes nothing");
    }

    #[test]
    fn set_by_names_every_layer_below_a_key_once() {
        let mut l = Layers::default();
        l.push("00-defaults", json!({"user": "core", "network": {"links": [], "networks": []}}));
        l.push("10-platform-qemu", json!({"network": {"networks": [{"id": "d"}]}}));
        l.push("30-config.d-50-site", json!({"hostname": "site"}));
        assert_eq!(l.names, ["00-defaults", "10-platform-qemu", "30-config.d-50-site"]);
        assert_eq!(l.set_by("network"), ["00-defaults", "10-platform-qemu"]);
        assert_eq!(l.set_by("network.networks"), ["10-platform-qemu"]);
        assert_eq!(l.set_by("net"), Vec::<&str>::new(), "a prefix of a name is not a parent key");
    }

    #[test]
    fn leaves_are_scalars_arrays_and_empty_objects() {
        let v = json!({"a": {"b": [1], "c": {}}, "d": null});
        let keys: Vec<String> = leaves(&v).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a.b", "a.c", "d"]);
    }

    // ------------------------------------------------------------ properties

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0i64..5).prop_map(Value::from),
            "[ab]{0,2}".prop_map(Value::from)
        ]
    }

    /// JSON values over a 3-key alphabet, so layers collide on the same paths.
    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[xyz]", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn layer() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[xyz]", json_value(), 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// The value at a dotted key path, following objects only.
    fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
        path.split('.').try_fold(v, |v, k| v.as_object()?.get(k))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The merge is the plain fold of [`merge`]; provenance has exactly
        /// the merge's leaves, each named after the last layer that wrote a
        /// leaf there: a scalar or an array, or an empty object where there
        /// was no object before (an empty object over an object changes
        /// nothing, so it takes nothing over).
        #[test]
        fn provenance_names_the_last_layer_that_wrote_each_leaf(layers in prop::collection::vec(layer(), 1..5)) {
            let named: Vec<(String, Value)> = layers.into_iter().enumerate().map(|(i, v)| (format!("{i:02}-l.json"), v)).collect();
            let (merged, prov) = merge_layers(&named);
            // before[i]: the merge of the layers before layer i.
            let mut before = vec![Value::Object(Map::new())];
            for (_, v) in &named {
                let mut next = before.last().unwrap().clone();
                merge(&mut next, v.clone());
                before.push(next);
            }
            prop_assert_eq!(&merged, before.last().unwrap());
            let mut keys: Vec<String> = leaves(&merged).into_iter().map(|(k, _)| k).filter(|k| !k.is_empty()).collect();
            keys.sort();
            prop_assert_eq!(&keys, &prov.keys().cloned().collect::<Vec<_>>());
            for k in &keys {
                let wrote = |i: usize| match at(&named[i].1, k) {
                    Some(Value::Object(m)) if m.is_empty() => !matches!(at(&before[i], k), Some(Value::Object(_))),
                    Some(Value::Object(_)) | None => false,
                    Some(_) => true,
                };
                let last = (0..named.len()).rev().find(|i| wrote(*i)).map(|i| named[i].0.trim_end_matches(".json"));
                prop_assert_eq!(Some(prov[k].as_str()), last, "key {}", k);
            }
        }
    }
}
