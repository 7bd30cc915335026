//! Derived outputs and the manifest.

pub mod coreos;
pub mod manifest;
pub mod qcow2;
pub mod vhd;
