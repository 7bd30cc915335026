//! # oem-rules: what the builder and the guest agent must agree on
//!
//! build-image's builder writes an appliance's OEM configuration and reads
//! it back (`build-image inspect`); the guest agent applies it at boot. The
//! rules both sides follow live here, once, so they cannot drift apart:
//!
//! * [`layers`]: the OEM merge. JSON objects merged in order, later wins:
//!   objects merge key by key, arrays and scalars replace ([`merge`], also
//!   the builder's rule for a recipe's `extends`). [`Layers`] records, for
//!   every leaf key path, the layer that set it (the provenance that the
//!   agent writes to `/run/agent/oem-provenance.json` and `inspect` shows).
//! * [`cmdline`]: layer 40, the `oem.KEY=VALUE` kernel parameters, split
//!   as the kernel's `next_arg()` splits the command line ([`kernel_params`],
//!   [`cmdline_layer`]).
//! * [`OEM_LABEL`]: the filesystem label that makes a partition the OEM
//!   partition.
//!
//! The name says what the crate is for: the OEM contract between the image
//! and the agent, not one format. The other rules DESIGN.md lists as
//! shared (the A/B slot attributes, the Ignition and cloud-config models)
//! belong here too when a second side needs them, each as its own module.
//!
//! The crate goes into the agent, a small static binary: it depends on
//! `serde_json` only, does no I/O and keeps no state. Reading the layer
//! files, logging and the file names each side uses stay with the callers.

pub mod cmdline;
pub mod layers;

pub use cmdline::{cmdline_layer, kernel_params};
pub use layers::{leaves, merge, merge_layers, Layers, Provenance};

/// The filesystem label that makes a partition the OEM partition: the
/// builder puts layers 00–20 there, the agent mounts it on
/// `/usr/share/oem`.
pub const OEM_LABEL: &str = "OEM";
