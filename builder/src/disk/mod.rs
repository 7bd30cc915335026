//! The output image: one sparse file, carved into bounds-checked [`Region`]s.
//!
//! Every writer gets a `Region` for its partition and can only write inside
//! it: an out-of-bounds write is an error, never a corrupted neighbour.
//! `Region` and the O_DIRECT helpers live in the `imagefs` crate with the
//! filesystem writers; the GPT is the builder's.

pub mod gpt;

pub(crate) use imagefs::disk::direct;
pub use imagefs::disk::region;
pub use imagefs::disk::{Region, RegionError, RegionIo};
