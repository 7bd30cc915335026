//! `data:` URLs (RFC 2397) as Ignition reads them (its `dataurl` library:
//! percent-encoded or `;base64`, an optional media type with parameters),
//! gzip, and `verification.hash`; plus systemd unit syntax as Ignition's
//! validator (go-systemd's `unit.Deserialize`) reads it.

use super::Resource;
use std::io::Read;

/// Largest decoded (and decompressed) content accepted, per resource: the
/// agent holds it in memory, and a gzip bomb must not take the machine down.
pub const MAX_CONTENT: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("remote sources are not supported by this image ({scheme}:…): only data: URLs (inline contents, e.g. \"data:,text\" or \"data:;base64,…\")")]
    Remote { scheme: String },
    #[error("invalid data URL: {0}")]
    DataUrl(String),
    #[error("invalid compression {0:?}: accepted are \"gzip\" and \"\" (none)")]
    Compression(String),
    #[error("gzip: {0}")]
    Gzip(String),
    #[error("contents larger than {} MiB", MAX_CONTENT >> 20)]
    TooLarge,
    #[error("{0}")]
    Hash(String),
}

/// `bytes` as the smallest plain `data:,` URL (percent-encoded).
pub fn data_url(bytes: &[u8]) -> String {
    let mut s = String::from("data:,");
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~!$&'()*+;=:@/?".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The URL's scheme, as Go's `url.Parse` finds it (lower-cased), or None.
pub(super) fn scheme(s: &str) -> Option<String> {
    let (sch, _) = s.split_once(':')?;
    let mut chars = sch.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic() || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    Some(sch.to_ascii_lowercase())
}

fn is_token_char(c: char) -> bool {
    c.is_ascii() && !c.is_ascii_control() && !" ()<>@,;:\\\"/[]?=".contains(c)
}

fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) if b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => out.push(v),
                _ => return Err(format!("bad percent escape at byte {i}: '%' is followed by two hex digits (write '%25' for '%')")),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Decode a `data:` URL into its bytes.
pub fn decode_data_url(s: &str) -> Result<Vec<u8>, ContentError> {
    let bad = |m: &str| ContentError::DataUrl(m.to_string());
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(bad("control characters (such as a raw newline) must be percent-encoded"));
    }
    let rest = s.strip_prefix("data:").ok_or_else(|| bad("must start with \"data:\""))?;
    // The header ends at the first comma outside a quoted parameter value.
    let mut in_quote = false;
    let mut comma = None;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ',' if !in_quote => {
                comma = Some(i);
                break;
            }
            _ => {}
        }
    }
    let comma = comma.ok_or_else(|| bad("no ',' before the data (e.g. \"data:,hello\")"))?;
    let (header, data) = (&rest[..comma], &rest[comma + 1..]);
    let mut parts: Vec<&str> = header.split(';').collect();
    let mut base64 = false;
    if parts.len() > 1 && parts.last() == Some(&"base64") {
        base64 = true;
        parts.pop();
    }
    let mt = parts[0];
    if !mt.is_empty() {
        let (t, st) = mt.split_once('/').ok_or_else(|| bad("the media type is TYPE/SUBTYPE (e.g. text/plain), or nothing"))?;
        if t.is_empty() || st.is_empty() || !t.chars().all(is_token_char) || !st.chars().all(is_token_char) {
            return Err(bad("the media type is TYPE/SUBTYPE (e.g. text/plain), or nothing"));
        }
    }
    for p in &parts[1..] {
        let (a, v) = p.split_once('=').ok_or_else(|| bad("media type parameters are ATTR=VALUE (or the last one is \"base64\")"))?;
        if a.is_empty() || !a.chars().all(is_token_char) {
            return Err(bad("media type parameters are ATTR=VALUE"));
        }
        if let Some(q) = v.strip_prefix('"') {
            if !q.ends_with('"') || q.is_empty() {
                return Err(bad("unterminated quoted parameter value"));
            }
        } else {
            if v.is_empty() {
                return Err(bad("empty media type parameter value"));
            }
            unescape(v).map_err(|e| ContentError::DataUrl(e.to_string()))?;
        }
    }
    if base64 {
        use base64::Engine;
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        // Go's decoder skips CR and LF.
        let clean: String = data.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        engine.decode(clean.as_bytes()).map_err(|e| ContentError::DataUrl(format!("base64: {e}")))
    } else {
        unescape(data).map_err(ContentError::DataUrl)
    }
}

/// Check a `verification.hash` string's form; returns (algorithm, hex).
pub(super) fn hash_parts(h: &str) -> Result<(&str, &str), &'static str> {
    let (f, sum) = h.split_once('-').ok_or("malformed hash: the form is sha512-HEX or sha256-HEX")?;
    let len = match f {
        "sha512" => 128,
        "sha256" => 64,
        _ => return Err("unrecognized hash function: accepted are sha512 and sha256"),
    };
    if sum.len() != len {
        return Err("incorrect size for the hash sum (sha512: 128 hex digits, sha256: 64)");
    }
    Ok((f, sum))
}

/// The bytes a resource stands for: the `data:` URL decoded, gunzipped
/// when `compression` is `gzip`, and checked against `verification.hash`
/// (which is of the decompressed bytes, as in Ignition). `None` source is
/// empty.
pub fn decode_resource(r: &Resource) -> Result<Vec<u8>, ContentError> {
    let Some(src) = r.source.as_deref() else { return Ok(Vec::new()) };
    if src.is_empty() {
        return Ok(Vec::new());
    }
    match scheme(src).as_deref() {
        Some("data") => {}
        Some(other) => return Err(ContentError::Remote { scheme: other.to_string() }),
        None => return Err(ContentError::DataUrl("not a URL (expected \"data:,…\")".into())),
    }
    let raw = decode_data_url(src)?;
    if raw.len() as u64 > MAX_CONTENT {
        return Err(ContentError::TooLarge);
    }
    let bytes = match r.compression.as_deref() {
        None | Some("") => raw,
        Some("gzip") => {
            let mut out = Vec::new();
            let mut d = flate2::read::GzDecoder::new(&raw[..]).take(MAX_CONTENT + 1);
            d.read_to_end(&mut out).map_err(|e| ContentError::Gzip(e.to_string()))?;
            if out.len() as u64 > MAX_CONTENT {
                return Err(ContentError::TooLarge);
            }
            out
        }
        Some(other) => return Err(ContentError::Compression(other.to_string())),
    };
    if let Some(h) = &r.hash {
        use sha2::Digest;
        let (f, want) = hash_parts(h).map_err(|e| ContentError::Hash(e.to_string()))?;
        let got = match f {
            "sha512" => hex(&sha2::Sha512::digest(&bytes)),
            _ => hex(&sha2::Sha256::digest(&bytes)),
        };
        if !got.eq_ignore_ascii_case(want) {
            return Err(ContentError::Hash(format!("hash mismatch: the contents have {f}-{got}, the config says {h}")));
        }
    }
    Ok(bytes)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A systemd unit as go-systemd's `unit.Deserialize` (v22.0) reads it:
/// `Ok(sections)` (the section names of the options found), or the error
/// Ignition reports as `invalid unit content: …`.
pub(super) fn unit_sections(s: &str) -> Result<Vec<String>, String> {
    const LINE_MAX: usize = 2048;
    let b = s.as_bytes();
    let mut sections = Vec::new();
    let mut i = 0;
    let mut section: Option<String> = None;
    // Lines of LINE_MAX bytes or more without a newline are refused.
    let mut start = 0;
    for (j, &c) in b.iter().enumerate() {
        if c == b'\n' || c == b'\r' {
            start = j + 1;
        } else if j - start + 1 >= LINE_MAX {
            return Err(format!("line too long (max {LINE_MAX} bytes)"));
        }
    }
    let eol = |i: usize| -> usize { b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1) };
    while i < b.len() {
        let c = b[i];
        match &section {
            None => {
                if c == b'[' {
                    let end = b[i..].iter().position(|&c| c == b']').ok_or("unable to find end of section")?;
                    let name = String::from_utf8_lossy(&b[i + 1..i + end]).into_owned();
                    let e = eol(i + end + 1);
                    if !String::from_utf8_lossy(&b[i + end + 1..e]).trim().is_empty() {
                        return Err(format!("found garbage after section name {name}"));
                    }
                    section = Some(name);
                    i = e;
                } else if c == b'#' || c == b';' {
                    i = skip_comment(b, i);
                } else {
                    i += 1;
                }
            }
            Some(sec) => {
                if c.is_ascii_whitespace() {
                    i += 1;
                } else if c == b'[' {
                    section = None;
                } else if c == b'#' || c == b';' {
                    i = skip_comment(b, i);
                } else {
                    // Option name up to '='.
                    let mut j = i;
                    loop {
                        match b.get(j) {
                            None => return Err("EOF".into()),
                            Some(b'\n') | Some(b'\r') => return Err("unexpected newline encountered while parsing option name".into()),
                            Some(b'=') => break,
                            _ => j += 1,
                        }
                    }
                    sections.push(sec.clone());
                    // Value with backslash continuations.
                    i = j + 1;
                    loop {
                        let e = eol(i);
                        let mut line = &b[i..e];
                        line = line.strip_suffix(b"\n").unwrap_or(line);
                        line = line.strip_suffix(b"\r").unwrap_or(line);
                        i = e;
                        if line.iter().all(u8::is_ascii_whitespace) || line.last() != Some(&b'\\') || i >= b.len() {
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(sections)
}

fn skip_comment(b: &[u8], mut i: usize) -> usize {
    loop {
        let e = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1);
        let mut line = &b[i..e];
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        while let Some(l) = line.strip_suffix(b" ") {
            line = l;
        }
        i = e;
        if line.last() != Some(&b'\\') || i >= b.len() {
            return i;
        }
    }
}
