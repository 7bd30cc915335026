//! Tree layers: `dir`, `tar`, `deb`, `oci`, `debian`, `file`, `mkdir`,
//! `symlink`, `remove`.
//!
//! A layer is a JSON object whose *kind* is the one key among the known
//! kinds that it carries (`{"dir": "rootfs", "to": "/"}`). Deserialization
//! picks the kind first, so that an unknown kind or a stray field gets a
//! message naming the layer's kind and the offending key.

use std::fmt;

use base64::Engine;
use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize};

/// Owner handling for `dir` layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// Every uid/gid becomes 0; modes are kept.
    #[default]
    Root,
    /// Keep the host's owners.
    Preserve,
}

/// Copy a host directory into the tree.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirLayer {
    /// Host directory (relative paths resolve against the recipe's folder).
    pub dir: String,
    /// Where in the tree it lands. Default `/`.
    #[serde(default = "slash")]
    pub to: String,
    /// `root` (default) or `preserve`.
    #[serde(default)]
    pub owner: Owner,
}

/// Unpack a tar archive (`.tar`, `.tar.gz`/`.tgz`, `.tar.zst`, `.tar.xz`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TarLayer {
    pub tar: String,
    #[serde(default = "slash")]
    pub to: String,
}

/// Unpack a Debian package's data.tar (no maintainer scripts run). A path
/// ending in `.deb` is that file; a name from kernel/packages.lock brings
/// the locked packages it depends on too, unpacked first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DebLayer {
    pub deb: String,
    #[serde(default = "slash")]
    pub to: String,
}

/// Unpack a container image: an OCI image-layout archive (`index.json`) or
/// a `docker save` archive (`manifest.json`). Its layers are applied in
/// order with whiteouts; its config's Entrypoint/Cmd, Env, WorkingDir and
/// User become the appliance's command unless the recipe's `init` says.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OciLayer {
    pub oci: String,
    #[serde(default = "slash")]
    pub to: String,
}

/// A whole Debian system, installed as apt installs it (maintainer scripts
/// run), offline, from the package lock: `{"debian": {"packages":
/// ["systemd-sysv", "openssh-server"]}}`. The set (these packages plus
/// Debian's base) must be pinned with `build-image fetch --add-root
/// openssh-server,systemd-sysv`. Only as the first layer of a tree.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DebianLayer {
    pub debian: DebianRoot,
}

/// What a `debian` layer installs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DebianRoot {
    /// Packages to install on top of Debian's base (Essential and
    /// Priority: required packages, apt), with their dependencies; no
    /// Recommends. Order does not matter.
    #[serde(default)]
    pub packages: Vec<String>,
    /// systemd units to enable once the packages are installed, as
    /// `systemctl enable` would (run inside the root): e.g.
    /// `"systemd-networkd.service"`, which Debian installs disabled. The
    /// image's preset file then keeps them enabled. Needs `systemd` in
    /// the set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enable: Vec<String>,
    /// Users to create once the packages are installed (and `enable`
    /// done), with the root's own `useradd`: a group of the same name, a
    /// home folder from `/etc/skel`, a locked password (log in with SSH
    /// keys: the OEM layer's `user`, or Ignition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<DebianUser>,
}

/// A user of a `debian` layer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DebianUser {
    /// Login name (`[a-z_][a-z0-9_-]*`, at most 32 characters).
    pub name: String,
    /// Its uid, and the gid of its own group; by default the first free
    /// one from 1000 (`/etc/login.defs`), so the same for the same root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Supplementary groups. Each must exist in the root: Debian's base
    /// has `sudo`, `adm`, `systemd-journal`…; packages add theirs (`docker`
    /// from docker.io).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Login shell (default `/bin/bash`).
    #[serde(default = "bash", skip_serializing_if = "is_bash")]
    pub shell: String,
    /// The GECOS field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn bash() -> String {
    "/bin/bash".into()
}

fn is_bash(s: &String) -> bool {
    s == "/bin/bash"
}

/// Write one file from inline text, a host file, or an RFC 2397 data URL.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLayer {
    /// Path in the tree.
    pub file: String,
    /// Inline UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A host file to copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An RFC 2397 data URL (`data:,text` or `data:;base64,...`), as Ignition uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Octal mode as a string, e.g. `"0644"` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// Make a directory (and its parents).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirLayer {
    pub mkdir: String,
    /// Octal mode, default `"0755"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// Make a symbolic link.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SymlinkLayer {
    pub symlink: String,
    pub target: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// Remove a path and everything below it (no error if it is absent).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveLayer {
    pub remove: String,
}

fn slash() -> String {
    "/".into()
}

/// One layer of a tree.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Layer {
    Dir(DirLayer),
    Tar(TarLayer),
    Deb(DebLayer),
    Oci(OciLayer),
    Debian(DebianLayer),
    File(FileLayer),
    Mkdir(MkdirLayer),
    Symlink(SymlinkLayer),
    Remove(RemoveLayer),
}

/// The keys that name a layer's kind.
pub const KINDS: [&str; 9] = ["dir", "tar", "deb", "oci", "debian", "file", "mkdir", "symlink", "remove"];

impl Layer {
    /// The kind word (`dir`, `tar`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Dir(_) => "dir",
            Layer::Tar(_) => "tar",
            Layer::Deb(_) => "deb",
            Layer::Oci(_) => "oci",
            Layer::Debian(_) => "debian",
            Layer::File(_) => "file",
            Layer::Mkdir(_) => "mkdir",
            Layer::Symlink(_) => "symlink",
            Layer::Remove(_) => "remove",
        }
    }
}

fn typed<T: de::DeserializeOwned, E: de::Error>(kind: &str, v: serde_json::Value) -> Result<T, E> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let p = e.path().to_string();
        if p == "." {
            E::custom(format_args!("{kind} layer: {}", e.into_inner()))
        } else {
            E::custom(format_args!("{kind} layer, field `{p}`: {}", e.into_inner()))
        }
    })
}

impl<'de> Deserialize<'de> for Layer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Layer, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let obj = match &v {
            serde_json::Value::Object(o) => o,
            other => {
                return Err(de::Error::custom(format_args!("expected a layer object like {{\"dir\": \"rootfs\"}}, found {}", Kind(other))))
            }
        };
        let kinds: Vec<&str> = KINDS.iter().copied().filter(|k| obj.contains_key(*k)).collect();
        match kinds.as_slice() {
            [] => {
                let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                Err(de::Error::custom(format_args!(
                    "unknown layer kind (keys: {}); a layer has exactly one of: {}",
                    keys.join(", "),
                    KINDS.join(", ")
                )))
            }
            [k] => Ok(match *k {
                "dir" => Layer::Dir(typed(k, v)?),
                "tar" => Layer::Tar(typed(k, v)?),
                "deb" => Layer::Deb(typed(k, v)?),
                "oci" => Layer::Oci(typed(k, v)?),
                "debian" => Layer::Debian(typed(k, v)?),
                "file" => Layer::File(typed(k, v)?),
                "mkdir" => Layer::Mkdir(typed(k, v)?),
                "symlink" => Layer::Symlink(typed(k, v)?),
                _ => Layer::Remove(typed(k, v)?),
            }),
            many => Err(de::Error::custom(format_args!(
                "a layer has exactly one kind, this one has {}: split it into separate layers",
                many.join(" and ")
            ))),
        }
    }
}

struct Kind<'a>(&'a serde_json::Value);

impl fmt::Display for Kind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::Object(_) => "an object",
        })
    }
}

/// Parse an octal mode string (`"0644"`, `"755"`, `"04755"`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("`{s}` is not an octal mode: write it as a string like \"0644\" or \"04755\"")),
    }
}

/// Decode an RFC 2397 `data:` URL (`data:,hello%20world`,
/// `data:text/plain;base64,aGVsbG8=`) into its bytes.
pub fn parse_data_url(url: &str) -> Result<Vec<u8>, String> {
    let rest = url.strip_prefix("data:").ok_or_else(|| format!("`{}` is not a data URL: it must start with \"data:\"", short(url)))?;
    let comma = rest.find(',').ok_or("a data URL needs a comma before its data, e.g. \"data:,hello\"")?;
    let (meta, data) = (&rest[..comma], &rest[comma + 1..]);
    let raw: Vec<u8> = percent_encoding::percent_decode_str(data).collect();
    if meta.split(';').any(|p| p.eq_ignore_ascii_case("base64")) {
        let clean: Vec<u8> = raw.into_iter().filter(|b| !b.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD.decode(&clean).map_err(|e| format!("the base64 data of the data URL is invalid: {e}"))
    } else {
        Ok(raw)
    }
}

fn short(s: &str) -> String {
    s.chars().take(24).collect()
}

/// The path rule of trees (imagefs), which validation checks a recipe's
/// paths with.
pub use imagefs::tree::{path_components, BadPath};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        assert_eq!(parse_data_url("data:,hello%20world").unwrap(), b"hello world");
        assert_eq!(parse_data_url("data:text/plain;base64,aGVsbG8=").unwrap(), b"hello");
        assert!(parse_data_url("http://x").is_err());
        assert!(parse_data_url("data:;base64,@@@").is_err());
    }
}
