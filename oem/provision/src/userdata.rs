//! Which kind of `user_data` a machine was given, told apart the way the
//! real tools tell it apart:
//!
//! * **Ignition**: a JSON document (first non-blank byte `{`) that is an
//!   object with an `ignition` key, or that does not parse as JSON at all:
//!   Ignition takes any `{…}` user_data as its config and fails on
//!   invalid JSON, so the Ignition parser reports that error (with its
//!   byte offset) and the boot stops, as it does on Fedora CoreOS.
//! * **cloud-config**: the first line is `#cloud-config` (trailing
//!   white space ignored), as coreos-cloudinit and cloud-init require.
//! * **script**: the first line starts with `#!`.
//! * **empty**: no bytes, or only white space: nothing to do (Ignition
//!   treats it as an empty config, cloud-init as no user_data).
//! * anything else is **unknown**, with a name for the log: the other
//!   cloud-init part types (`#include`, `#cloud-boothook`,
//!   `#cloud-config-archive`, `#upstart-job`, `#part-handler`, MIME
//!   multi-part), gzip-compressed data, JSON that is not Ignition, binary
//!   data, or plain text. The agent logs it by that name and ignores it.
//!
//! A UTF-8 byte order mark before the first line is skipped, as cloud-init
//! does. Detection never fails and never panics, whatever the bytes.

/// The largest `user_data` the agent takes, from either source (Ignition
/// and cloud-init set none; OpenStack Nova's own limit is 64 KiB, so this
/// only guards the initramfs's memory). Larger is logged and ignored; the
/// builder's `inspect --config-drive` reports it the same way.
pub const MAX_USER_DATA: usize = 16 << 20;
/// The largest `meta_data.json` or `network_data.json` (and any other
/// metadata document) the agent reads.
pub const MAX_DOCUMENT: usize = 4 << 20;

/// The kind of a `user_data` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Ignition,
    CloudConfig,
    Script,
    Empty,
    /// Not one we apply; the name says what it looks like.
    Unknown(&'static str),
}

impl Kind {
    /// The name used in logs and in `/run/agent/provisioning.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Ignition => "ignition",
            Kind::CloudConfig => "cloud-config",
            Kind::Script => "script",
            Kind::Empty => "empty",
            Kind::Unknown(what) => what,
        }
    }
}

/// The bytes without a leading UTF-8 byte order mark.
pub fn strip_bom(data: &[u8]) -> &[u8] {
    data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data)
}

/// Tell `data` apart (see the module docs).
pub fn detect(data: &[u8]) -> Kind {
    let data = strip_bom(data);
    if data.iter().all(u8::is_ascii_whitespace) {
        return Kind::Empty;
    }
    let first_line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let first_line = trim_end(first_line);
    if first_line == b"#cloud-config" {
        return Kind::CloudConfig;
    }
    if first_line.starts_with(b"#!") {
        return Kind::Script;
    }
    for (prefix, name) in [
        (&b"#cloud-config-archive"[..], "cloud-config-archive (not supported)"),
        (b"#cloud-config-jsonp", "cloud-config-jsonp (not supported)"),
        (b"#include", "include list (not supported)"),
        (b"#cloud-boothook", "cloud-boothook (not supported)"),
        (b"#upstart-job", "upstart job (not supported)"),
        (b"#part-handler", "part handler (not supported)"),
    ] {
        if first_line.starts_with(prefix) {
            return Kind::Unknown(name);
        }
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        return Kind::Unknown("gzip-compressed data (not supported)");
    }
    let head = &data[..data.len().min(4096)];
    if starts_with_ignore_case(head, b"content-type:") || starts_with_ignore_case(head, b"mime-version:") {
        return Kind::Unknown("MIME multi-part (not supported)");
    }
    let body = trim_start(data);
    if body.first() == Some(&b'{') {
        return match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(o)) if o.contains_key("ignition") => Kind::Ignition,
            Ok(_) => Kind::Unknown("JSON without an `ignition` key"),
            // Ignition's own parser reports where the JSON breaks.
            Err(_) => Kind::Ignition,
        };
    }
    if std::str::from_utf8(data).is_err() || data.contains(&0) {
        return Kind::Unknown("binary data");
    }
    Kind::Unknown("text that is neither Ignition, #cloud-config nor a #! script")
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &s[..n]
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    &s[n..]
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for (data, kind) in [
            (&b""[..], Kind::Empty),
            (b" \n\t\r\n", Kind::Empty),
            (b"#cloud-config\nhostname: a\n", Kind::CloudConfig),
            (b"#cloud-config  \r\nhostname: a\n", Kind::CloudConfig),
            (b"\xef\xbb\xbf#cloud-config\n", Kind::CloudConfig),
            (b"#cloud-config", Kind::CloudConfig),
            (b"#!/bin/sh\necho hi\n", Kind::Script),
            (b"#!", Kind::Script),
            (br#"{"ignition": {"version": "3.3.0"}}"#, Kind::Ignition),
            (b"\n  {\"ignition\":{\"version\":\"2.0.0\"},\"systemd\":{}}", Kind::Ignition),
            (br#"{"ignition": {"version": "3.3.0"}"#, Kind::Ignition),
            (br#"{"ignition": 5}"#, Kind::Ignition),
            (br#"{"hostname": "a"}"#, Kind::Unknown("JSON without an `ignition` key")),
            (b"#include\nhttp://x\n", Kind::Unknown("include list (not supported)")),
            (b"#cloud-config-archive\n- a\n", Kind::Unknown("cloud-config-archive (not supported)")),
            (b"#cloud-boothook\n", Kind::Unknown("cloud-boothook (not supported)")),
            (b"Content-Type: multipart/mixed; boundary=x\n", Kind::Unknown("MIME multi-part (not supported)")),
            (b"\x1f\x8b\x08\x00", Kind::Unknown("gzip-compressed data (not supported)")),
            (b"\xff\xfe\x00x", Kind::Unknown("binary data")),
            (b"hostname: a\n", Kind::Unknown("text that is neither Ignition, #cloud-config nor a #! script")),
            (b"# cloud-config\n", Kind::Unknown("text that is neither Ignition, #cloud-config nor a #! script")),
        ] {
            assert_eq!(detect(data), kind, "{:?}", String::from_utf8_lossy(data));
        }
        assert_eq!(Kind::CloudConfig.name(), "cloud-config");
        assert_eq!(Kind::Unknown("binary data").name(), "binary data");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = detect(&data);
        }
    }
}
