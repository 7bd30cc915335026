//! Sizes: an integer number of bytes, `"64MiB"` (powers of 1024),
//! `"1GB"` (powers of 1000), `"fill"` or `"auto"`.

use std::fmt;

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A partition or disk size as written in the recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// A fixed number of bytes.
    Bytes(u64),
    /// The rest of the disk (at most one partition).
    Fill,
    /// Sized to the content plus headroom (filesystems that support it).
    Auto,
}

impl Size {
    pub fn bytes(&self) -> Option<u64> {
        match self {
            Size::Bytes(b) => Some(*b),
            _ => None,
        }
    }
}

/// Parse `"64MiB"`, `"1.5GiB"` is refused (whole numbers only), `"4096"`.
pub fn parse(s: &str) -> Result<Size, String> {
    let t = s.trim();
    match t {
        "fill" => return Ok(Size::Fill),
        "auto" => return Ok(Size::Auto),
        _ => {}
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!("`{s}` is not a size: use bytes (4096), \"64MiB\", \"1GB\", \"fill\" or \"auto\""));
    }
    let n: u64 = num.parse().map_err(|_| format!("`{s}`: the number is too large"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!("`{s}`: unknown unit `{unit}`: use KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000)"))
        }
    };
    n.checked_mul(mult).map(Size::Bytes).ok_or_else(|| format!("`{s}` is too large"))
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Bytes(b) => write!(f, "{b}"),
            Size::Fill => f.write_str("fill"),
            Size::Auto => f.write_str("auto"),
        }
    }
}

/// Human rendering for messages: `64 MiB`, `1.5 GiB`.
pub fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Size::Bytes(b) => s.serialize_u64(*b),
            Size::Fill => s.serialize_str("fill"),
            Size::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes as an integer, or a string like \"64MiB\", \"1GB\", \"fill\" or \"auto\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size::Bytes).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes as an integer, or a string: \"64MiB\" (KiB/MiB/GiB/TiB = powers of 1024), \"1GB\" (KB/MB/GB/TB = powers of 1000), \"fill\" or \"auto\".",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^([0-9]+ ?(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?|fill|auto)$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("64MiB"), Ok(Size::Bytes(64 << 20)));
        assert_eq!(parse("1GB"), Ok(Size::Bytes(1_000_000_000)));
        assert_eq!(parse("4096"), Ok(Size::Bytes(4096)));
        assert_eq!(parse("fill"), Ok(Size::Fill));
        assert!(parse("12 furlongs").is_err());
        assert!(parse("MiB").is_err());
        assert_eq!(human(64 << 20), "64 MiB");
    }
}

/// `fs.headroom` for `"size": "auto"`: a percentage of the content
/// (`"20%"`) or a fixed size (`"64MiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headroom {
    Percent(u32),
    Bytes(u64),
}

/// The default headroom: 20% of the content, as free space for first boot.
pub const DEFAULT_HEADROOM: Headroom = Headroom::Percent(20);

impl Headroom {
    pub fn parse(s: &str) -> Result<Headroom, String> {
        if let Some(p) = s.trim().strip_suffix('%') {
            return p.trim().parse().map(Headroom::Percent).map_err(|_| format!("`{s}` is not a percentage: write it like \"20%\""));
        }
        match parse(s)? {
            Size::Bytes(b) => Ok(Headroom::Bytes(b)),
            _ => Err(format!("`{s}`: headroom is a percentage (\"20%\") or a size (\"64MiB\")")),
        }
    }

    /// `content` plus this headroom.
    pub fn apply(&self, content: u64) -> u64 {
        match self {
            Headroom::Percent(p) => content + content * u64::from(*p) / 100,
            Headroom::Bytes(b) => content + b,
        }
    }
}

#[cfg(test)]
mod headroom_tests {
    use super::*;

    #[test]
    fn headroom() {
        assert_eq!(Headroom::parse("20%"), Ok(Headroom::Percent(20)));
        assert_eq!(Headroom::parse("64MiB"), Ok(Headroom::Bytes(64 << 20)));
        assert!(Headroom::parse("lots").is_err());
        assert_eq!(Headroom::Percent(50).apply(100), 150);
    }
}
