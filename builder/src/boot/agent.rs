//! The guest agent, PID 1 of every image's initramfs (`/init`), is part of
//! this binary: `build-image` alone, copied anywhere or installed with
//! `cargo install --path builder`, builds bootable images.
//!
//! `build.rs` builds the `guest-agent` crate as a static binary (what
//! `./build.sh agent` does) with the same cargo and the workspace's
//! Cargo.lock, into `<target>/embedded-agent`, and this module
//! `include_bytes!` it. Why this way:
//!
//! - Artifact dependencies (`guest-agent` as a `bin` build-dependency built
//!   for a target) would say the same in Cargo.toml, but are unstable
//!   (`-Z bindeps`).
//! - Looking for the agent next to the program or in the project's
//!   `target/` folders (as before) fails once the binary is installed or
//!   copied, and silently picks up whatever stale agent lies there; an
//!   image must not depend on where it was built from.
//! - A separate target folder keeps the nested cargo away from the outer
//!   build's lock (a nested build in the same folder would wait forever);
//!   one folder shared by every profile builds the agent once, not once per
//!   debug/release/test/clippy build. After that, a build-script run costs
//!   one no-op `cargo build` (0.2 s), and only when a file under `oem/`,
//!   `Cargo.toml` or `Cargo.lock` changed. The first build costs one
//!   release build of the agent: 54 s of CPU on the 2-core machine.
//! - The agent is built exactly as `./build.sh agent` builds it (same
//!   profile, flags and lock), and gives the same bytes.
//! - `BUILD_IMAGE_EMBED_AGENT=/path/to/guest-agent` at build time embeds a
//!   prebuilt agent instead (agent developers, faster builds).
//!
//! At run time `--agent PATH` and then `$BUILD_IMAGE_AGENT` override the
//! embedded agent (agent development, the tests' stand-ins); an override
//! must exist and be statically linked, or the build stops: it never falls
//! back silently. The manifest records which agent went in (`boot.agent`:
//! source, version, sha256), with no host path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::tree::Content;

/// The static guest agent built with this program.
pub static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-agent"));

/// Its version, from its `--version` (`unknown` if build.rs could not run it).
pub const EMBEDDED_VERSION: &str = env!("BUILD_IMAGE_EMBEDDED_AGENT_VERSION");

/// sha256 of [`EMBEDDED`], hex.
pub fn embedded_sha256() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| hex::encode(Sha256::digest(EMBEDDED)))
}

/// What `build-image --version` prints after the program name:
/// `0.1.0 (guest-agent 0.1.0, sha256 …)`.
pub fn version() -> String {
    format!("{} (guest-agent {EMBEDDED_VERSION}, sha256 {})", env!("CARGO_PKG_VERSION"), embedded_sha256())
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the guest agent {path} (from {from}) does not exist: fix the path, or drop {from} to use the agent built into build-image")]
    Missing { path: PathBuf, from: &'static str },
    #[error(
        "the guest agent {path} (from {from}) is dynamically linked (to {interp}): the initramfs has no dynamic loader. \
         Build it static (`./build.sh agent`), or drop {from} to use the agent built into build-image"
    )]
    Dynamic { path: PathBuf, from: &'static str, interp: String },
    #[error("reading the guest agent {path} (from {from})")]
    Read {
        path: PathBuf,
        from: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The agent a build puts in as `/init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    /// [`EMBEDDED`].
    Embedded,
    /// A file given by `from` (`--agent` or `$BUILD_IMAGE_AGENT`).
    File { path: PathBuf, from: &'static str },
}

/// The manifest's record of the agent (`boot.agent`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgentRecord {
    /// `embedded`, `--agent` or `BUILD_IMAGE_AGENT` (never a host path).
    pub source: String,
    /// The embedded agent's version; overrides are not run to ask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub sha256: String,
}

impl Agent {
    /// `explicit` (`--agent`), else `$BUILD_IMAGE_AGENT` (when set and not
    /// empty), else the embedded agent. An override must be a file that is
    /// not dynamically linked (a script with its own `#!` is accepted: the
    /// tests boot busybox stand-ins).
    pub fn find(explicit: Option<&Path>) -> Result<Agent, AgentError> {
        let env = std::env::var_os("BUILD_IMAGE_AGENT").filter(|v| !v.is_empty()).map(PathBuf::from);
        Agent::choose(explicit, env)
    }

    fn choose(explicit: Option<&Path>, env: Option<PathBuf>) -> Result<Agent, AgentError> {
        let (path, from) = match (explicit, env) {
            (Some(p), _) => (p.to_path_buf(), "--agent"),
            (None, Some(p)) => (p, "BUILD_IMAGE_AGENT"),
            (None, None) => return Ok(Agent::Embedded),
        };
        if !path.is_file() {
            return Err(AgentError::Missing { path, from });
        }
        let data = std::fs::read(&path).map_err(|source| AgentError::Read { path: path.clone(), from, source })?;
        if let Some(interp) = dynamic_loader(&data) {
            return Err(AgentError::Dynamic { path, from, interp });
        }
        Ok(Agent::File { path, from })
    }

    /// The agent's bytes, as initramfs content.
    pub fn content(&self) -> Result<Content, AgentError> {
        match self {
            Agent::Embedded => Ok(Content::bytes(EMBEDDED)),
            Agent::File { path, from } => Content::host(path).map_err(|source| AgentError::Read { path: path.clone(), from, source }),
        }
    }

    /// What the manifest says about it.
    pub fn record(&self) -> Result<AgentRecord, AgentError> {
        match self {
            Agent::Embedded => {
                Ok(AgentRecord { source: "embedded".into(), version: Some(EMBEDDED_VERSION.into()), sha256: embedded_sha256().into() })
            }
            Agent::File { path, from } => {
                let f = std::fs::File::open(path).map_err(|source| AgentError::Read { path: path.clone(), from, source })?;
                let sha256 = crate::files::sha256_file(&f).map_err(|source| AgentError::Read { path: path.clone(), from, source })?;
                Ok(AgentRecord { source: (*from).into(), version: None, sha256 })
            }
        }
    }
}

/// The ELF interpreter a binary asks for, if any (None for static binaries
/// and for scripts, which carry their own `#!` line).
fn dynamic_loader(data: &[u8]) -> Option<String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).ok()?;
    let interp = file.section_by_name(".interp")?.data().ok()?;
    Some(String::from_utf8_lossy(interp).trim_end_matches('\0').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_agent_is_a_static_x86_64_elf() {
        use object::Object;
        // A copy: `object` wants the ELF header aligned, include_bytes! is not.
        let data = EMBEDDED.to_vec();
        let f = object::File::parse(&*data).expect("the embedded agent is an ELF file");
        assert_eq!(f.architecture(), object::Architecture::X86_64);
        assert_eq!(dynamic_loader(&data), None);
        assert!(f.section_by_name(".interp").is_none());
        assert_eq!(EMBEDDED_VERSION, env!("CARGO_PKG_VERSION"), "the workspace shares one version");
        let v = version();
        assert!(v.starts_with(&format!("{} (guest-agent {}, sha256 ", env!("CARGO_PKG_VERSION"), EMBEDDED_VERSION)), "{v}");
        assert_eq!(embedded_sha256().len(), 64);
    }

    #[test]
    fn overrides_win_in_order_and_must_be_usable() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::write(&a, "#!/bin/sh\necho a\n").unwrap();
        std::fs::write(&b, "#!/bin/sh\necho b\n").unwrap();
        assert_eq!(Agent::choose(None, None).unwrap(), Agent::Embedded);
        assert_eq!(Agent::choose(None, Some(b.clone())).unwrap(), Agent::File { path: b.clone(), from: "BUILD_IMAGE_AGENT" });
        assert_eq!(Agent::choose(Some(&a), Some(b.clone())).unwrap(), Agent::File { path: a.clone(), from: "--agent" });
        // A missing override is an error, not a silent fall-back.
        let e = Agent::choose(Some(&d.path().join("nope")), None).unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("--agent"), "{e}");
        // A dynamically linked one (this test binary) is refused.
        let exe = std::env::current_exe().unwrap();
        let e = Agent::choose(None, Some(exe)).unwrap_err().to_string();
        assert!(e.contains("dynamically linked") && e.contains("BUILD_IMAGE_AGENT"), "{e}");
        // The record names the source, never the path.
        let r = Agent::choose(Some(&a), None).unwrap().record().unwrap();
        assert_eq!(r.source, "--agent");
        assert_eq!(r.sha256, hex::encode(Sha256::digest(b"#!/bin/sh\necho a\n")));
        let r = Agent::Embedded.record().unwrap();
        assert_eq!((r.source.as_str(), r.sha256.as_str()), ("embedded", embedded_sha256()));
    }
}
