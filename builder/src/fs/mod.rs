//! Filesystem writers: the `imagefs` crate's, re-exported so that
//! `build_image::fs::ext4` and friends keep their paths. The recipe's `fs`
//! object becomes their [`FsOptions`] through
//! [`crate::recipe::FsOptions::writer_options`].

pub use imagefs::fs::*;
