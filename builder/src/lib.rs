//! build-image: a pure-Rust builder of bootable, reproducible appliance disk
//! images from one `recipe.json`, without root, loop devices or host mkfs tools.
//!
//! The data flow runs one way (see `docs/architecture.md`, "Layering"; no
//! top-level module uses one that uses it, `tests/tests/layering.rs`):
//! recipe → trees → plan → write regions of one sparse file → derived
//! outputs → manifest.

pub mod boot;
pub mod cloud;
pub mod debian;
pub mod disk;
pub mod files;
pub mod flash;
pub mod fs;
pub mod init;
pub mod initramfs;
pub mod inspect;
pub mod oem;
pub mod output;
pub use imagefs::parallel;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod qemu;
pub mod recipe;
pub mod tree;

/// Errors of the whole build, each carrying its context. The CLI prints the
/// chain of sources once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Recipe(#[from] recipe::RecipeError),
    #[error("{at}")]
    Layer {
        /// JSON path of the layer, e.g. `trees.root[2]`.
        at: String,
        #[source]
        source: tree::LayerError,
    },
    #[error("{at}")]
    Debian {
        /// JSON path of the `debian` layer, e.g. `trees.root[0]`.
        at: String,
        #[source]
        source: Box<debian::DebianError>,
    },
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Region(#[from] disk::RegionError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}")]
    Partition {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Gpt(#[from] disk::gpt::GptError),
    #[error(transparent)]
    Package(#[from] boot::packages::PackageError),
    #[error(transparent)]
    Agent(#[from] boot::agent::AgentError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error("output `oci` (the container image of tree `{tree}`)")]
    Oci {
        tree: String,
        #[source]
        source: output::oci::OciError,
    },
    #[error("{0}")]
    Other(String),
    /// The output folder's filesystem filled up (ENOSPC, EDQUOT).
    #[error(
        "no space left in the output folder {}: {free} bytes free there{}; free some space or build with --out on a larger filesystem (the outputs already there are unchanged, and nothing of this build was left)",
        dir.display(),
        match image { Some(n) => format!(", and this build's disk image alone is up to {n} bytes (written sparse: its data only)"), None => String::new() }
    )]
    NoSpace {
        dir: std::path::PathBuf,
        free: u64,
        image: Option<u64>,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }

    /// Whether an I/O error in this error's chain is "no space left on
    /// device" or "disk quota exceeded".
    pub fn is_no_space(&self) -> bool {
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(x) = e {
            if let Some(io) = x.downcast_ref::<std::io::Error>() {
                if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    return true;
                }
            }
            e = x.source();
        }
        false
    }
}
