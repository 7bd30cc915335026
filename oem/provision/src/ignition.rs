//! Not written yet: see the crate docs.
