//! Making images boot: pinned Debian packages, the kernel and its modules,
//! the unified kernel image for UEFI, GRUB for BIOS.

pub mod assemble;
pub mod grub;
pub mod kernel;
pub mod modules;
pub mod packages;
pub mod uki;
