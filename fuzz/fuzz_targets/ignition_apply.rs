//! An Ignition config that passed the checks, applied to a fresh root
//! folder as the agent applies it to /sysroot on the first boot
//! (`provision::ignition::apply`: users and groups, files, directories,
//! links, units). Nothing may be written outside the root.
//!
//! Input: as the `ignition` target's.
#![no_main]

use build_image_fuzz::scratch::{require_sandbox, Jail};
use build_image_fuzz::{ignition, json};
use libfuzzer_sys::fuzz_target;
use provision::ignition as ign;

fuzz_target!(|data: &[u8]| {
    require_sandbox("ignition_apply");
    let doc = json::bytes_or(data, ignition::config);
    let Ok(parsed) = ign::check(&doc) else { return };
    let jail = Jail::new();
    let root = jail.root();
    // What a root has before Ignition: an /etc with the account files.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\ncore:x:500:500::/home/core:/bin/bash\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\ncore:x:500:\n").unwrap();
    if let Ok(r) = ign::apply(&root, &parsed.config, &ign::ApplyOptions { day: 19000 }) {
        let _ = r.to_json();
    }
    jail.check("ignition::apply");
});
