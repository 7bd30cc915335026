//! Helpers shared by the fuzz targets (`fuzz_targets/*.rs`, one per parser
//! of untrusted bytes; see `fuzz/README.md`).
//!
//! * [`json`]: JSON documents built from arbitrary bytes over a dictionary
//!   of the keys and values a format uses, for parsers that plain bytes
//!   would rarely get past `serde_json`;
//! * [`gpt`]: a GPT disk image (protective MBR, both headers and entry
//!   arrays, CRCs right) from arbitrary partitions;
//! * [`archive`]: tar, `ar` (`.deb`), OCI layout and `docker save`
//!   archives from arbitrary entries, names written verbatim (`..` too);
//! * [`scratch`]: a fresh folder per input for the targets that write, and
//!   the check that nothing was written outside the root they were given.

pub mod archive;
pub mod gpt;
pub mod json;
pub mod scratch;

/// Text from bytes, as the agent reads files (`from_utf8_lossy`).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub mod dhcp;
pub mod ignition;
pub mod images;
