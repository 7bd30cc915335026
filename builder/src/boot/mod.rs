//! Boot loaders and boot artifacts.

pub mod grub;
