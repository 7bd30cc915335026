//! Making images boot: the guest agent built into this program, pinned
//! Debian packages, the kernel and its modules, the unified kernel image for
//! UEFI, GRUB for BIOS.

pub mod agent;
pub mod assemble;
pub mod grub;
pub mod kernel;
pub mod modules;
pub mod packages;
pub mod uki;
