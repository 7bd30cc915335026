//! Layer 40: `oem.KEY=VALUE` on the kernel command line. The agent reads
//! it from `/proc/cmdline` at boot; the builder's `inspect` from the
//! command lines baked into an image (the UKI's `.cmdline`, GRUB's config).

use serde_json::Value;

use crate::layers::merge;

/// Kernel parameters as the kernel's own `next_arg()` splits them: words on
/// whitespace outside double quotes; a word or value that starts with a
/// quote loses it and its closing quote at the end; quotes inside a value
/// are kept, so a JSON value survives
/// (`oem.ssh_authorized_keys=["ssh-ed25519 AAAA me"]`). Stops at `--`.
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

/// Layer 40 from a kernel command line: every `oem.KEY=VALUE`, KEY a
/// dotted path, VALUE JSON if it parses, else the string; later keys merge
/// over earlier ones. Returns the layer (`None` without `oem.` keys) and,
/// for each `oem.` word that is skipped, why (`oem.KEY` without a value,
/// an empty part in the path as in `oem.a..b`).
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
            Some(l) => merge(l, v),
            None => layer = Some(v),
        }
    }
    (layer, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::leaves;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn kernel_splitting_keeps_quotes_inside_values() {
        let p = kernel_params(r#"console=ttyS0 oem.keys=["ssh-ed25519 AAAA me"] "oem.a=x y" oem.b="p q" quiet -- oem.c=1"#);
        let want: Vec<(String, Option<String>)> = vec![
            ("console".into(), Some("ttyS0".into())),
            ("oem.keys".into(), Some(r#"["ssh-ed25519 AAAA me"]"#.into())),
            ("oem.a".into(), Some("x y".into())),
            ("oem.b".into(), Some("p q".into())),
            ("quiet".into(), None),
        ];
        assert_eq!(p, want);
        assert_eq!(kernel_params(" \t\n"), vec![]);
    }

    #[test]
    fn cmdline_layer_paths_and_values() {
        let (l, skipped) = cmdline_layer(
            r#"root=/dev/vda2 oem.hostname=node01 oem.user=admin oem.metadata.sources=[] oem.network.mtu=1450 oem.cloud=false oem.hostname=node02 oem.x..y=1 oem.bare oem.name="{not json" oem.s="quoted words""#,
        );
        assert_eq!(
            l.unwrap(),
            json!({"hostname": "node02", "user": "admin", "metadata": {"sources": []}, "network": {"mtu": 1450},
                   "cloud": false, "name": "{not json", "s": "quoted words"})
        );
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("oem.x..y") && skipped[1].contains("oem.bare"), "{skipped:?}");
        assert_eq!(cmdline_layer("console=ttyS0 oemx=1 agent.oem=2").0, None);
        // Nested keys merge with a whole object given earlier.
        let (l, _) = cmdline_layer(r#"oem.network={"links":[],"services":[]} oem.network.services=[{"type":"dns","address":"10.0.0.1"}]"#);
        assert_eq!(l.unwrap(), json!({"network": {"links": [], "services": [{"type": "dns", "address": "10.0.0.1"}]}}));
    }

    // ------------------------------------------------------------ properties

    /// One parameter as a user writes it: `KEY`, `KEY=VALUE`, and with
    /// whitespace in the value `KEY="VA LUE"` or `"KEY=VA LUE"`.
    fn render_param(key: &str, val: &Option<String>, quote_word: bool) -> String {
        match val {
            None => key.to_string(),
            Some(v) if !v.contains(char::is_whitespace) => format!("{key}={v}"),
            Some(v) if quote_word => format!("\"{key}={v}\""),
            Some(v) => format!("{key}=\"{v}\""),
        }
    }

    fn param() -> impl Strategy<Value = (String, Option<String>, bool)> {
        ("(oem\\.)?[a-z.]{1,6}", prop::option::of("[a-z0-9=.:,é{}\\[\\] ]{0,8}"), any::<bool>())
    }

    /// A layer whose leaves survive a command line: strings over `a`, `b`
    /// and space are never JSON themselves, so `oem.k="a b"` reads back as
    /// the string; everything else is written as compact JSON.
    fn cmdline_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..300).prop_map(Value::from),
            "[ab ]{0,4}".prop_map(Value::from),
            Just(json!({})),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[ab]{1,2}", inner, 1..3).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn cmdline_layer_value() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[ab]{1,2}", cmdline_value(), 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// `oem.PATH=VALUE` for every leaf of `layer`, between other parameters.
    fn render_layer(layer: &Value) -> String {
        let mut words = vec!["console=ttyS0,115200".to_string()];
        for (path, v) in leaves(layer).into_iter().filter(|(p, _)| !p.is_empty()) {
            match v {
                Value::String(s) => words.push(format!("oem.{path}=\"{s}\"")),
                v => words.push(format!("oem.{path}={v}")),
            }
            words.push("quiet".into());
        }
        words.join(" ")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Parameters written as users write them split back into the
        /// same keys and values, whatever whitespace lies between them.
        #[test]
        fn written_parameters_split_back(params in prop::collection::vec(param(), 0..8), gaps in prop::collection::vec("[ \t\n]{1,3}", 8)) {
            let mut line = String::new();
            for (i, (k, v, q)) in params.iter().enumerate() {
                line.push_str(&gaps[i]);
                line.push_str(&render_param(k, v, *q));
            }
            let want: Vec<(String, Option<String>)> = params.into_iter().map(|(k, v, _)| (k, v)).collect();
            prop_assert_eq!(kernel_params(&line), want, "{:?}", line);
        }

        /// Any layer written as `oem.*` parameters, one per leaf, reads
        /// back as itself; nothing is skipped.
        #[test]
        fn a_layer_written_as_parameters_reads_back(layer in cmdline_layer_value()) {
            let line = render_layer(&layer);
            let (got, skipped) = cmdline_layer(&line);
            prop_assert!(skipped.is_empty(), "{:?}", skipped);
            let want = layer.as_object().filter(|m| !m.is_empty()).map(|_| layer.clone());
            prop_assert_eq!(got, want, "{}", line);
        }

        /// Later parameters merge over earlier ones: two command lines one
        /// after the other give the merge of their layers.
        #[test]
        fn later_parameters_merge_over_earlier_ones(a in cmdline_layer_value(), b in cmdline_layer_value()) {
            let line = format!("{} {}", render_layer(&a), render_layer(&b));
            let want = match (cmdline_layer(&render_layer(&a)).0, cmdline_layer(&render_layer(&b)).0) {
                (Some(mut x), Some(y)) => {
                    merge(&mut x, y);
                    Some(x)
                }
                (x, y) => x.or(y),
            };
            prop_assert_eq!(cmdline_layer(&line).0, want);
        }
    }

    /// Command-line pieces that exercise quoting, paths, JSON and `--`.
    fn cmdline_piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "oem.",
            "oem",
            "a",
            "b",
            ".",
            "=",
            "\"",
            " ",
            "\t",
            "1",
            "x y",
            "[",
            "]",
            "{",
            "}",
            ":",
            ",",
            "--",
            "null",
            "root=/dev/vda",
            "é",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// Any line (unbalanced quotes, multi-byte characters, `--`) parses
        /// without a panic, and each `oem.` parameter is either applied or
        /// skipped with its name in the reason.
        #[test]
        fn any_line_parses_and_every_oem_word_is_accounted_for(pieces in prop::collection::vec(cmdline_piece(), 0..24)) {
            let line: String = pieces.concat();
            let params = kernel_params(&line);
            let (layer, skipped) = cmdline_layer(&line);
            let oem: Vec<&(String, Option<String>)> = params.iter().filter(|(k, _)| k.starts_with("oem.")).collect();
            let bad: Vec<&String> = oem.iter().filter(|(k, v)| v.is_none() || k["oem.".len()..].split('.').any(str::is_empty)).map(|(k, _)| k).collect();
            prop_assert_eq!(skipped.len(), bad.len());
            for (reason, key) in skipped.iter().zip(&bad) {
                prop_assert!(reason.starts_with(key.as_str()), "{} / {}", reason, key);
            }
            prop_assert_eq!(layer.is_some(), oem.len() > bad.len());
        }
    }
}
