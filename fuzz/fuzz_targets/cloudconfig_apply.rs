//! A `#cloud-config` document applied to a fresh root folder as the agent
//! applies it to /sysroot (`provision::cloudconfig::apply`: hostname,
//! files, users and keys, units, etcd drop-in, /etc/hosts), then the
//! runtime units the agent writes for its commands
//! (`provisioning::runtime_units`). Nothing may be written outside the root.
#![no_main]

use build_image_fuzz::scratch::{require_sandbox, Jail};
use guest_agent::provisioning;
use libfuzzer_sys::fuzz_target;
use provision::cloudconfig;

fuzz_target!(|data: &[u8]| {
    require_sandbox("cloudconfig_apply");
    let Ok(cfg) = cloudconfig::parse(data) else { return };
    let jail = Jail::new();
    let root = jail.root();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\ncore:x:500:500::/home/core:/bin/bash\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\ncore:x:500:\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "old\n").unwrap();
    let opts = cloudconfig::ApplyOptions { first_boot: data.len() % 2 == 0, day: 19000, ..Default::default() };
    let report = cloudconfig::apply(&root, &cfg, &opts);
    let _ = report.to_json();
    let _ = report.log_lines();
    for (name, text, _) in provisioning::runtime_units(&report) {
        assert!(!name.contains('/'), "unit name {name:?}");
        let _ = text;
    }
    jail.check("cloudconfig::apply");
});
