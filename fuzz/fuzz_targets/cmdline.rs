//! The kernel command line as the agent reads it: `cmdline::Cmdline::parse`
//! (root=, init=, agent.*), `grow::requested` (agent.grow=), the `oem.*`
//! keys (`oem_rules::kernel_params`, `cmdline_layer`) merged as layer 40
//! over layers from the OEM partition's files (`oem::parse_layer`, layer
//! 30), and what the agent takes from the result (`cloud::Oem::from_value`,
//! `cloud::identity`, the provenance of every key).
//!
//! Input: the command line, then (after a NUL) OEM layer files separated
//! by NULs.
#![no_main]

use guest_agent::oem::{self, Effective};
use guest_agent::{cloud, cmdline, grow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let line = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let c = cmdline::Cmdline::parse(&line);
    let _ = c.root.as_ref().map(|r| r.to_string());
    let _ = c.root_init();
    let _ = grow::requested(&line);
    let _ = cmdline::parse_argv_file(&line);
    let _ = oem_rules::kernel_params(&line);
    let mut eff = Effective::default();
    for (i, f) in parts.take(4).enumerate() {
        if let Ok(v) = oem::parse_layer(f) {
            eff.layers.push(&format!("30-config.d-{i}"), v);
        }
    }
    oem::apply_cmdline(&mut eff.layers, &line);
    let _ = oem::summary(&eff.layers);
    let (o, _warnings) = cloud::Oem::from_value(eff.config());
    let _ = o.oem_network();
    let _ = o.uses("config-drive");
    let _ = cloud::identity(&eff);
    for (k, _) in oem_rules::leaves(eff.config()) {
        let _ = eff.layers.set_by(&k);
    }
});
