//! Ignition configs generated from the spec's keys and typical values.

use arbitrary::{Result, Unstructured};
use serde_json::{json, Value};

use crate::json::{self, Dict};

pub const DICT: Dict = Dict {
    keys: &[
        "ignition", "version", "config", "merge", "replace", "source", "verification", "hash", "timeouts", "security", "tls",
        "certificateAuthorities", "proxy", "storage", "files", "directories", "links", "filesystems", "disks", "raid", "luks", "path",
        "contents", "append", "mode", "overwrite", "user", "group", "id", "name", "target", "hard", "compression", "device", "format",
        "wipeFilesystem", "label", "uuid", "options", "mountOptions", "systemd", "units", "enabled", "mask", "dropins", "passwd", "users",
        "groups", "passwordHash", "sshAuthorizedKeys", "gecos", "homeDir", "noCreateHome", "primaryGroup", "noUserGroup", "noLogInit",
        "shell", "system", "shouldExist", "gid", "kernelArguments", "shouldNotExist", "filesystem", "networkd", "httpHeaders",
        "create", "force", "partitions", "wipeTable", "headers",
    ],
    strings: &[
        "3.4.0", "3.3.0", "3.0.0", "2.0.0", "2.1.0", "2.2.0", "2.3.0", "2.4.0", "3.5.0-experimental", "/etc/hostname", "/etc/x", "/", "/etc/../x",
        "x", "/home/core/.ssh", "data:,hello", "data:;base64,aGVsbG8=", "data:text/plain;charset=utf-8,%41%42", "data:,", "gzip", "xz",
        "sha512-cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        "sha256-x", "core", "root", "0", "1000", "foo.service", "etcd.service", "x.conf", "[Unit]\nDescription=x\n[Install]\nWantedBy=multi-user.target\n",
        "/dev/disk/by-label/ROOT", "/dev/vda", "ext4", "btrfs", "xfs", "none", "https://example.com/x", "root", "/sysroot", "ssh-ed25519 AAAA",
        "$6$salt$hash", "/bin/bash", "a.link", "../../x", "/etc", "/etc/systemd/system/a.service", "/usr", "/var/../../x",
    ],
};

/// A config: `{"ignition": {"version": V}, …}` with the other sections
/// generated.
pub fn config(u: &mut Unstructured) -> Result<Value> {
    let version = *u.choose(&[
        "3.4.0",
        "3.3.0",
        "3.2.0",
        "3.1.0",
        "3.0.0",
        "2.0.0",
        "2.1.0",
        "2.2.0",
        "2.3.0",
        "2.4.0",
        "3.5.0-experimental",
        "1.0.0",
    ])?;
    let mut ign = json!({ "version": version });
    if u.ratio(1, 8)? {
        ign.as_object_mut().unwrap().extend(json::object(u, &DICT, 2)?);
    }
    let mut top = json!({ "ignition": ign });
    let o = top.as_object_mut().unwrap();
    if u.ratio(3, 4)? {
        let mut storage = serde_json::Map::new();
        for k in ["files", "directories", "links", "filesystems"] {
            if u.ratio(2, 3)? {
                storage.insert(k.into(), json::objects(u, &DICT, 2, 4)?);
            }
        }
        o.insert("storage".into(), Value::Object(storage));
    }
    if u.ratio(1, 2)? {
        o.insert("systemd".into(), json!({ "units": json::objects(u, &DICT, 2, 3)? }));
    }
    if u.ratio(1, 2)? {
        o.insert("passwd".into(), json!({ "users": json::objects(u, &DICT, 1, 3)?, "groups": json::objects(u, &DICT, 1, 2)? }));
    }
    if u.ratio(1, 8)? {
        o.extend(json::object(u, &DICT, 2)?);
    }
    Ok(top)
}
