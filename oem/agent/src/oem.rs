//! The OEM configuration at boot: layers 30–50 on top of what the builder
//! rendered (00–20), as docs/agent.md "OEM configuration (contract)" says.
//!
//! | # | layer | provenance name |
//! |---|---|---|
//! | 00–20 | `/usr/share/oem/config.json` (the OEM partition mounted there, or the initramfs copy; else `/etc/agent/oem.json`), with `/usr/share/oem/layers/*.json` for per-layer provenance | the layer file's name (`10-platform-qemu`), or `config.json` |
//! | 30 | `/usr/share/oem/config.d/*.json`, in byte order of the name; a malformed file is logged and skipped | `30-config.d-NAME` |
//! | 40 | `oem.KEY=VALUE` on the kernel command line (KEY a dotted path, VALUE JSON if it parses, else a string) | `40-cmdline` |
//! | 50 | cloud metadata, added by [`crate::cloud`] | `50-metadata` |
//!
//! The merge rule (objects merge key by key, arrays and scalars replace),
//! the provenance (for every leaf key path, the layer that set it) and the
//! `oem.*` parser are the `oem-rules` crate's ([`oem_rules::Layers`],
//! [`oem_rules::cmdline_layer`]), the same code the builder renders layers
//! 00–20 with and `build-image inspect` recomputes layers 30–40 with. This
//! module reads the files and logs.
//!
//! The effective configuration is written to `/run/agent/oem.json` (and the
//! provenance to `/run/agent/oem-provenance.json`) after layer 40 and again
//! after layer 50. Everything here except [`Effective::write`] and the file
//! reading is pure and unit-tested.

use std::fs;
use std::io;
use std::path::Path;

use oem_rules::Layers;
pub use oem_rules::OEM_LABEL;
use serde_json::Value;

use crate::log;

/// Where the OEM partition is mounted (and where the initramfs keeps the
/// builder's files when there is none).
pub const OEM_DIR: &str = "/usr/share/oem";
/// The builder's merge of layers 00–20 in the initramfs, when the image has
/// no OEM partition.
pub const INITRAMFS_OEM_JSON: &str = "/etc/agent/oem.json";
/// Written by the builder when the disk has an OEM partition: one line, how
/// to find it (`PARTUUID=…`). The agent then waits for it (up to
/// `agent.rootwait=`) instead of looking once for a filesystem labelled `OEM`.
pub const OEM_PARTITION_FILE: &str = "/etc/agent/oem-partition";
/// The effective configuration after all layers the agent applied.
pub const RUN_OEM_JSON: &str = "/run/agent/oem.json";
/// For each key path of [`RUN_OEM_JSON`], the layer that set it.
pub const RUN_PROVENANCE_JSON: &str = "/run/agent/oem-provenance.json";
/// Largest layer file read (the builder's files are a few KiB).
const MAX_LAYER: u64 = 1 << 20;

/// One line for the log: who set `hostname`, `user` and `network`.
pub fn summary(l: &Layers) -> String {
    let mut parts = Vec::new();
    for key in ["hostname", "user"] {
        match l.merged.get(key) {
            Some(v) => parts.push(format!("{key} {} ({})", scalar_text(v), l.set_by(key).join(", "))),
            None => parts.push(format!("{key} unset")),
        }
    }
    let nets = l.merged.pointer("/network/networks").and_then(Value::as_array).map_or(0, Vec::len);
    let by = l.set_by("network");
    parts.push(if by.is_empty() { "network unset".into() } else { format!("network {nets} network(s) ({})", by.join(", ")) });
    parts.join(", ")
}

/// A string without quotes, anything else as JSON.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------- parsing

/// A layer file: a JSON object, else the reason.
pub fn parse_layer(bytes: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err(format!("not a JSON object (a layer must be {{…}}, found {})", kind(&v)));
    }
    Ok(v)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ------------------------------------------------------------- the files

fn read_small(p: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut b = Vec::new();
    fs::File::open(p)?.take(MAX_LAYER).read_to_end(&mut b)?;
    Ok(b)
}

/// `*.json` files of a directory, sorted by the bytes of their names; a
/// missing directory has none.
pub fn json_files(dir: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut names: Vec<Vec<u8>> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_file() || t.is_symlink()).unwrap_or(false))
            .map(|e| e.file_name().as_bytes().to_vec())
            .filter(|n| n.ends_with(b".json") && !n.starts_with(b"."))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names.into_iter().map(|n| String::from_utf8_lossy(&n).into_owned()).collect()
}

/// Layers 00–20 as the builder left them under `dir`: `config.json` (else
/// `fallback`), split into `layers/*.json` when those merge to exactly it
/// (then each key's provenance is its layer); otherwise one layer named
/// `config.json`. Problems are logged; the result may be empty.
pub fn base_layers(dir: &Path, fallback: &Path) -> Layers {
    let mut out = Layers::default();
    let config = dir.join("config.json");
    let (path, bytes) = match read_small(&config) {
        Ok(b) => (config, b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match read_small(fallback) {
            Ok(b) => (fallback.to_path_buf(), b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log!("oem: no {} and no {}: layers 00-20 are empty", dir.join("config.json").display(), fallback.display());
                return out;
            }
            Err(e) => {
                log!("oem: cannot read {}: {e}; layers 00-20 are empty", fallback.display());
                return out;
            }
        },
        Err(e) => {
            log!("oem: cannot read {}: {e}; layers 00-20 are empty", config.display());
            return out;
        }
    };
    let base = match parse_layer(&bytes) {
        Ok(v) => v,
        Err(e) => {
            log!("oem: {} is malformed, ignored: {e}", path.display());
            return out;
        }
    };
    let ldir = dir.join("layers");
    let mut layers = Vec::new();
    for name in json_files(&ldir) {
        match read_small(&ldir.join(&name)).map_err(|e| e.to_string()).and_then(|b| parse_layer(&b)) {
            Ok(v) => layers.push((name, v)),
            Err(e) => {
                log!("oem: {}/{name}: {e}; provenance shows config.json", ldir.display());
                layers.clear();
                break;
            }
        }
    }
    if !layers.is_empty() {
        let mut l = Layers::default();
        for (n, v) in layers {
            l.push(n.trim_end_matches(".json"), v);
        }
        if l.merged == base {
            return l;
        }
        log!(
            "oem: {} differs from the merge of {}/*.json (edited after the build?): using it as one layer",
            path.display(),
            ldir.display()
        );
    }
    out.push("config.json", base);
    out
}

/// Layer 30: `dir/*.json` in byte order of the name, each merged over the
/// previous ones; a file that cannot be read or is not a JSON object is
/// logged with its name and the error and skipped.
pub fn apply_config_d(l: &mut Layers, dir: &Path) {
    for name in json_files(dir) {
        let p = dir.join(&name);
        match read_small(&p).map_err(|e| e.to_string()).and_then(|b| parse_layer(&b)) {
            Ok(v) => {
                log!("oem: layer 30: {}", p.display());
                l.push(&format!("30-config.d-{}", name.trim_end_matches(".json")), v);
            }
            Err(e) => log!("oem: layer 30: {} is malformed, skipped: {e}", p.display()),
        }
    }
}

/// Layer 40 from the text of `/proc/cmdline`.
pub fn apply_cmdline(l: &mut Layers, cmdline: &str) {
    let (layer, warnings) = oem_rules::cmdline_layer(cmdline);
    for w in warnings {
        log!("oem: layer 40: skipped {w}");
    }
    if let Some(v) = layer {
        log!("oem: layer 40: kernel command line {}", v);
        l.push("40-cmdline", v);
    }
}

/// The effective OEM configuration the agent works from.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    pub layers: Layers,
}

impl Effective {
    /// Layers 00–40: the builder's files under [`OEM_DIR`] (or
    /// [`INITRAMFS_OEM_JSON`]), `config.d`, and the command line.
    pub fn load(cmdline: &str) -> Effective {
        let dir = Path::new(OEM_DIR);
        let mut layers = base_layers(dir, Path::new(INITRAMFS_OEM_JSON));
        apply_config_d(&mut layers, &dir.join("config.d"));
        apply_cmdline(&mut layers, cmdline);
        Effective { layers }
    }

    pub fn config(&self) -> &Value {
        &self.layers.merged
    }

    /// Write [`RUN_OEM_JSON`] and [`RUN_PROVENANCE_JSON`]; log who set the
    /// main keys.
    pub fn write(&self) {
        let _ = fs::create_dir_all("/run/agent");
        let text = serde_json::to_string_pretty(&self.layers.merged).unwrap_or_default() + "\n";
        let prov = serde_json::to_string_pretty(&self.layers.provenance).unwrap_or_default() + "\n";
        match fs::write(RUN_OEM_JSON, text).and_then(|_| fs::write(RUN_PROVENANCE_JSON, prov)) {
            Ok(()) => log!("oem: effective config ({}) in {RUN_OEM_JSON}: {}", self.layers.names.join(" < "), summary(&self.layers)),
            Err(e) => log!("oem: writing {RUN_OEM_JSON} failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_names_the_layers() {
        let mut l = Layers::default();
        l.push("00-defaults", json!({"user": "core", "network": {"networks": []}}));
        l.push("10-platform-qemu", json!({"network": {"networks": [{"id": "d"}]}}));
        l.push("30-config.d-50-site", json!({"hostname": "site"}));
        assert_eq!(l.names, ["00-defaults", "10-platform-qemu", "30-config.d-50-site"]);
        assert_eq!(l.set_by("network"), ["10-platform-qemu"]);
        assert_eq!(summary(&l), "hostname site (30-config.d-50-site), user core (00-defaults), network 1 network(s) (10-platform-qemu)");
        assert_eq!(summary(&Layers::default()), "hostname unset, user unset, network unset");
    }

    #[test]
    fn layer_files_must_be_objects() {
        assert!(parse_layer(b"{\"a\": 1}").is_ok());
        assert!(parse_layer(b"[1]").unwrap_err().contains("not a JSON object"));
        let e = parse_layer(b"{\"hostname\": ").unwrap_err();
        assert!(e.contains("EOF"), "{e}");
    }

    #[test]
    fn files_base_config_d_and_cmdline() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir_all(d.join("layers")).unwrap();
        fs::create_dir_all(d.join("config.d")).unwrap();
        fs::write(d.join("layers/00-defaults.json"), r#"{"user": "core", "hostname": "h0"}"#).unwrap();
        fs::write(d.join("layers/20-recipe.json"), r#"{"hostname": "h20"}"#).unwrap();
        fs::write(d.join("config.json"), r#"{"user": "core", "hostname": "h20"}"#).unwrap();
        // Byte order: "10-b" < "9-a" < "a"; "_x" and a non-object are skipped.
        fs::write(d.join("config.d/9-a.json"), r#"{"hostname": "from-9"}"#).unwrap();
        fs::write(d.join("config.d/10-b.json"), r#"{"hostname": "from-10", "user": "u10"}"#).unwrap();
        fs::write(d.join("config.d/50-bad.json"), r#"{"hostname": "#).unwrap();
        fs::write(d.join("config.d/60-array.json"), "[]").unwrap();
        fs::write(d.join("config.d/notes.txt"), "{}").unwrap();
        let mut l = base_layers(d, &d.join("missing"));
        assert_eq!(l.provenance["hostname"], "20-recipe", "per-layer provenance when the layers match config.json");
        apply_config_d(&mut l, &d.join("config.d"));
        assert_eq!(l.merged["hostname"], "from-9");
        assert_eq!(l.merged["user"], "u10");
        assert_eq!(l.names, ["00-defaults", "20-recipe", "30-config.d-10-b", "30-config.d-9-a"]);
        apply_cmdline(&mut l, "console=ttyS0 oem.hostname=cmd");
        assert_eq!((l.merged["hostname"].as_str(), l.provenance["hostname"].as_str()), (Some("cmd"), "40-cmdline"));

        // config.json edited after the build: one layer named config.json.
        fs::write(d.join("config.json"), r#"{"user": "core", "hostname": "edited"}"#).unwrap();
        let l = base_layers(d, &d.join("missing"));
        assert_eq!((l.merged["hostname"].as_str(), l.provenance["hostname"].as_str()), (Some("edited"), "config.json"));
        // No config.json: the fallback (the initramfs's /etc/agent/oem.json).
        fs::remove_file(d.join("config.json")).unwrap();
        fs::write(d.join("fallback.json"), r#"{"user": "fb"}"#).unwrap();
        let l = base_layers(d, &d.join("fallback.json"));
        assert_eq!(l.merged, json!({"user": "fb"}));
        assert_eq!(base_layers(d, &d.join("missing")), Layers::default());
    }
}
