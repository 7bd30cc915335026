//! Making images boot: pinned Debian packages, the kernel and its modules,
//! the unified kernel image for UEFI.

pub mod packages;
