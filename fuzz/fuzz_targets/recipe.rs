//! `recipe.json` loading (`recipe::load`): JSON syntax, `extends` (files
//! relative to the one naming them, loops, missing files), the merge, the
//! typed schema with the path of every error, and validation.
//!
//! Input: first byte odd: up to four recipe files generated from the
//! recipe schema's words (with `extends` naming each other); even: the
//! rest is `recipe.json`.
#![no_main]

use std::fs;

use arbitrary::Unstructured;
use build_image_fuzz::json::{self, Dict};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const NAMES: [&str; 4] = ["recipe.json", "base.json", "sub/base.json", "sub/more.json"];

const DICT: Dict = Dict {
    keys: &[
        "name",
        "source_date_epoch",
        "extends",
        "trees",
        "disk",
        "size",
        "partitions",
        "label",
        "type",
        "filesystem",
        "tree",
        "outputs",
        "kernel",
        "package",
        "cmdline",
        "modules",
        "oem",
        "platform",
        "user",
        "hostname",
        "boot",
        "firmware",
        "initramfs",
        "compression",
        "init",
        "dir",
        "tar",
        "deb",
        "oci",
        "file",
        "content",
        "mode",
        "mkdir",
        "symlink",
        "target",
        "remove",
        "owner",
        "grow",
        "qcow2",
        "vmdk",
        "to",
        "uid",
        "gid",
        "data",
        "from",
        "fs",
        "headroom",
        "inode_ratio",
        "inodes",
        "journal",
        "subvolumes",
        "default_subvolume",
        "network",
        "networks",
        "links",
        "services",
        "ssh_authorized_keys",
        "keep_leases",
        "smoke",
        "expect",
        "drivers",
        "debian",
        "packages",
        "users",
        "groups",
        "enable",
        "shell",
        "features",
        "level",
        "compress",
        "adapter",
        "source",
    ],
    strings: &[
        "demo",
        "base.json",
        "sub/base.json",
        "more.json",
        "../base.json",
        "recipe.json",
        "missing.json",
        "/dev/null",
        "/dev/zero",
        "/proc/self/status",
        "esp",
        "linux",
        "root-x86-64",
        "bios-boot",
        "swap",
        "vfat",
        "ext4",
        "btrfs",
        "64MiB",
        "1GiB",
        "fill",
        "100%",
        "raw",
        "qcow2",
        "vmdk",
        "vhd",
        "kernel+initramfs",
        "uki",
        "cloud-config",
        "uefi",
        "bios",
        "qemu",
        "vpc",
        "metal",
        "gzip",
        "zstd",
        "xz",
        "none",
        "root",
        "/etc/x",
        "/",
        "../x",
        "0644",
        "0o755",
        "abc",
        "data:,x",
        "data:;base64,eA==",
        "linux-image-cloud-amd64",
        "busybox-static",
        "admin",
        "+20%",
        "1.5GiB",
        "-1",
        "0",
        "18446744073709551615B",
    ],
};

fn recipe(u: &mut Unstructured) -> arbitrary::Result<Value> {
    let mut m = json::object(u, &DICT, 3)?;
    if u.ratio(1, 2)? {
        let n = u.int_in_range(0..=3)?;
        let mut ex = Vec::new();
        for _ in 0..n {
            ex.push(Value::String(json::string(u, &DICT)?));
        }
        m.insert("extends".into(), Value::Array(ex));
    }
    if u.ratio(3, 4)? {
        m.insert("name".into(), "demo".into());
    }
    Ok(Value::Object(m))
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let dir = tempfile::Builder::new().prefix("fuzz-recipe").tempdir().expect("scratch");
    fs::create_dir(dir.path().join("sub")).unwrap();
    if mode & 1 == 0 {
        fs::write(dir.path().join(NAMES[0]), rest).unwrap();
    } else {
        let mut u = Unstructured::new(rest);
        for name in NAMES {
            let Ok(v) = recipe(&mut u) else { break };
            let Ok(b) = json::render(&mut u, &v) else { break };
            fs::write(dir.path().join(name), b).unwrap();
            if u.is_empty() {
                break;
            }
        }
    }
    let env_epoch = (mode & 2 == 2).then_some(1_700_000_000);
    match build_image::recipe::load(&dir.path().join(NAMES[0]), env_epoch) {
        Ok(l) => {
            assert_eq!(l.digest.len(), 32);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
