//! Ignition configs (user_data, spec 2.x translated and 3.x), parsed and
//! checked as the agent checks them before the first boot:
//! `provision::ignition::parse` (Ignition's own rules) and `check` (what
//! this image refuses, every `data:` URL decoded, decompressed, verified).
//! Every error must carry a JSON path or position.
//!
//! Input: first byte odd: a config generated from the spec's dictionary;
//! even: the rest is the config.
#![no_main]

use build_image_fuzz::{ignition, json};
use libfuzzer_sys::fuzz_target;
use provision::ignition as ign;

fuzz_target!(|data: &[u8]| {
    let doc = json::bytes_or(data, ignition::config);
    let _ = ign::parse(&doc);
    match ign::check(&doc) {
        Ok(p) => {
            let _ = serde_json::to_string(&p.config);
        }
        Err(e) => {
            assert!(e.errors().next().is_some(), "an error without a diagnostic");
            let _ = e.to_string();
        }
    }
});
