//! Trees from host inputs. The [`Tree`] itself (inodes, metadata, content
//! references, the editing API that refuses names escaping the tree) lives
//! in the `imagefs` crate with the filesystem writers that consume it, and
//! is re-exported here so that `build_image::tree::Tree` and friends keep
//! their paths.
//!
//! Layers (`dir`, `tar`, `deb`, inline `file`/`mkdir`/`symlink`/`remove`) are
//! applied in order by the modules below; each one only calls the public
//! editing API of [`Tree`].

pub mod dir;
pub mod inline;
pub mod oci;
pub mod tar;

pub use imagefs::tree::*;

/// Errors from applying one layer. The caller adds the layer's JSON path.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{what} {path}")]
    Host {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{archive}: {msg}")]
    Archive { archive: std::path::PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

impl LayerError {
    pub fn host(path: &std::path::Path, what: &'static str, source: std::io::Error) -> LayerError {
        LayerError::Host { what, path: path.to_path_buf(), source }
    }
}
