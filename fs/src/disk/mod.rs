//! Windows of one output file (an image, or a block device) that the
//! writers fill: [`Region`] (bounds-checked positional I/O) and the
//! O_DIRECT helpers for bulk data ([`direct`]).

pub mod direct;
pub mod region;

pub use region::{Region, RegionError, RegionIo};
