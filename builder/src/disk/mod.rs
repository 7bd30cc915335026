//! The output image: one sparse file, carved into bounds-checked [`Region`]s.
//!
//! Every writer gets a `Region` for its partition and can only write inside
//! it: an out-of-bounds write is an error, never a corrupted neighbour.

pub(crate) mod direct;
pub mod gpt;
pub mod region;

pub use region::{Region, RegionError, RegionIo};
