//! `#cloud-config` user_data: parsed with diagnostics by path
//! (`provision::cloudconfig::parse`, the YAML reader under it) and planned
//! (`cloudconfig::plan`: what apply would do), as the agent reads it on
//! every boot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provision::cloudconfig;

fuzz_target!(|data: &[u8]| {
    match cloudconfig::parse(data) {
        Ok(cfg) => {
            let _ = cloudconfig::plan(&cfg, &cloudconfig::ApplyOptions { day: 19000, ..Default::default() });
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
