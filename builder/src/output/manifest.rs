//! `NAME.manifest.json`: every artifact with its size and sha256, the recipe
//! digest, each input's digest, and the partition table.

use std::fs::File;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::Plan;
use crate::recipe::Loaded;
use crate::tree::{Kind, LayerError, Tree};

/// One output file.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    /// File name inside the output folder.
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

impl Artifact {
    pub fn of(f: &File, dest: &Path) -> Result<Artifact, crate::Error> {
        let shown = dest.display().to_string();
        let size = f.metadata().map_err(|e| crate::Error::io(format!("reading {shown}"), e))?.len();
        let sha256 = crate::files::sha256_file(f).map_err(|e| crate::Error::io(format!("hashing {shown}"), e))?;
        let file = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(shown);
        Ok(Artifact { file, size, sha256 })
    }
}

/// One input of the build.
#[derive(Debug, Clone, Serialize)]
pub struct Input {
    /// JSON path of the layer that used it.
    pub layer: String,
    pub kind: String,
    /// The path as the recipe wrote it (never an absolute host path that
    /// would make the manifest differ between machines).
    pub path: String,
    /// sha256 of the file; for a `dir`, of its canonical listing (path,
    /// type, mode, owner, times, link targets, devices, xattrs and the
    /// sha256 of every file's data and hole layout).
    pub sha256: String,
}

impl Input {
    pub fn file(layer: &str, kind: &str, shown: &str, path: &Path) -> Result<Input, LayerError> {
        let f = File::open(path).map_err(|e| LayerError::host(path, "opening", e))?;
        let sha256 = crate::files::sha256_file(&f).map_err(|e| LayerError::host(path, "reading", e))?;
        Ok(Input { layer: layer.into(), kind: kind.into(), path: shown.into(), sha256 })
    }

    /// Digest of the subtree at `to` after a `dir` layer was applied.
    pub fn dir(layer: &str, shown: &str, tree: &Tree, to: &str) -> Result<Input, LayerError> {
        let mut h = Sha256::new();
        let mut err = None;
        let start = tree.find(to.as_bytes());
        tree.walk(|v| {
            if err.is_some() {
                return;
            }
            let path = v.path;
            let under = to.trim_matches('/');
            if !(under.is_empty() || path == under.as_bytes() || path.starts_with(format!("{under}/").as_bytes())) {
                return;
            }
            let i = tree.inode(v.ino);
            h.update(path);
            h.update([0]);
            h.update(format!("{:o} {} {} {} {}\0", i.st_mode(), i.meta.uid, i.meta.gid, i.meta.mtime, i.meta.mtime_nsec));
            for (k, val) in &i.meta.xattrs {
                h.update(k);
                h.update([0]);
                h.update(val);
                h.update([0]);
            }
            match &i.kind {
                Kind::File(c) => {
                    let ranges = c.data_ranges();
                    h.update(format!("{} {:?}\0", c.len(), ranges));
                    match content_sha(c, &ranges) {
                        Ok(d) => h.update(d),
                        Err(e) => err = Some(LayerError::Invalid(format!("reading {}: {e}", c.origin()))),
                    }
                }
                Kind::Symlink(t) => h.update(t),
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => h.update(format!("{major}:{minor}")),
                _ => {}
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        let _ = start;
        Ok(Input { layer: layer.into(), kind: "dir".into(), path: shown.into(), sha256: hex::encode(h.finalize()) })
    }
}

fn content_sha(c: &crate::tree::Content, ranges: &[std::ops::Range<u64>]) -> std::io::Result<[u8; 32]> {
    let rd = c.open()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for r in ranges {
        let mut off = r.start;
        while off < r.end {
            let n = buf.len().min((r.end - off) as usize);
            rd.read_exact_at(&mut buf[..n], off)?;
            h.update(&buf[..n]);
            off += n as u64;
        }
    }
    Ok(h.finalize().into())
}

/// The manifest document.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub name: String,
    /// sha256 of the canonical merged recipe.
    pub recipe_sha256: String,
    pub source_date_epoch: i64,
    pub artifacts: Vec<Artifact>,
    pub inputs: Vec<Input>,
    /// The partition table and identities.
    pub disk: Option<Plan>,
    /// What `build-image boot` waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoke: Option<crate::recipe::Smoke>,
    /// How it boots: firmware, kernel release, command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootInfo>,
    /// The `oci` output's tag and digests (the image's digest in a
    /// registry, Docker's image ID, the layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oci: Option<crate::output::oci::OciReport>,
    /// The builder that made it.
    pub builder: String,
}

/// Boot facts recorded in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct BootInfo {
    pub firmware: Vec<crate::recipe::Firmware>,
    pub kernel: String,
    pub kernel_release: String,
    /// The guest agent in the initramfs (`/init`): embedded or an override,
    /// its version and sha256.
    pub agent: crate::boot::agent::AgentRecord,
    pub cmdline: String,
    /// Every module in the initramfs, in load order (dependencies first).
    pub modules: Vec<String>,
    /// The ones the builder added to `kernel.modules` for the boot path,
    /// each with its reason (their dependencies are in `modules` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modules_added: Vec<crate::boot::modules::Added>,
    /// What the BIOS install wrote (core image hash, its first sector, the
    /// embedded GRUB modules), when `boot.firmware` has `bios`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grub: Option<crate::boot::grub::Installed>,
}

impl Manifest {
    pub fn new(loaded: &Loaded, plan: &Plan, artifacts: Vec<Artifact>, inputs: Vec<Input>, boot: Option<BootInfo>) -> Manifest {
        Manifest {
            name: loaded.recipe.name.clone(),
            recipe_sha256: hex::encode(loaded.digest),
            source_date_epoch: loaded.recipe.epoch(),
            artifacts,
            inputs,
            disk: (!plan.partitions.is_empty()).then(|| plan.clone()),
            smoke: loaded.recipe.smoke.clone(),
            boot,
            oci: None,
            builder: format!("build-image {}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serializes") + "\n"
    }
}
