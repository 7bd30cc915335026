//! Derived outputs and the manifest.

pub mod manifest;
